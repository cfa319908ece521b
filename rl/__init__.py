"""LCPO: reinforcement learning that teaches a model to obey a budget given in the prompt (not built yet)."""
