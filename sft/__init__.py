"""Supervised fine-tuning on long reasoning traces in a thinking format (not built yet)."""
