"""Budget forcing inside EleutherAI's lm-evaluation-harness, as two model types of its own registry.

    import evals.lmeval  # registers hf-budget and vllm-budget
    import lm_eval
    lm_eval.simple_evaluate(model="hf-budget", model_args="pretrained=PATH,format=s1,stats=out/stats.jsonl",
                            tasks=["aime24_local"], task_manager=lm_eval.tasks.TaskManager(include_path=TASKS_DIR),
                            gen_kwargs="max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=2,"
                                       "thinking_n_ignore_str=Wait")

`hf-budget` subclasses lm-eval's `HFLM`, `vllm-budget` its `VLLM`; each changes only `generate_until`.
lm-eval 0.4.13 looks for models in its own registry only (no entry-point group, and `--include_path`
is for tasks), so this module must be imported before lm-eval resolves a model name: from Python as
above, or on the command line through `python -m evals.lmeval`, which takes exactly lm-eval's
arguments. Both model types are registered lazily: importing this module imports neither
transformers nor vLLM. `TASKS_DIR` holds offline task files (AIME24, MATH500 from local JSONL).
"""

from __future__ import annotations

from pathlib import Path

from lm_eval.api.registry import model_registry

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MODELS = {
    "hf-budget": "evals.lmeval.hf_model:HFBudgetLM",
    "vllm-budget": "evals.lmeval.vllm_model:VLLMBudgetLM",
}


def register() -> None:
    """Put `hf-budget` and `vllm-budget` into lm-eval's model registry (again is harmless)."""
    for name, target in MODELS.items():
        model_registry.register(name, target=target)


register()

__all__ = ["MODELS", "TASKS_DIR", "register"]
