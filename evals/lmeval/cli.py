"""`python -m evals.lmeval ARGS`: lm-eval's own command line, with hf-budget and vllm-budget registered.

ARGS are exactly lm-eval's (`lm-eval run --help`). After lm-eval has finished, the per-sample budget
statistics named by `stats=` in --model_args are summarised: mean thinking tokens and the share of
samples within their budget, per task (also written to `<stats>.summary.json`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import register
from .stats import format_summary, summary_path


def stats_path(argv: list[str]) -> Path | None:
    """The `stats=` model argument of an lm-eval command line, if any."""
    model_args = None
    for i, arg in enumerate(argv):
        if arg == "--model_args" and i + 1 < len(argv):
            model_args = argv[i + 1]
        elif arg.startswith("--model_args="):
            model_args = arg.split("=", 1)[1]
    if not model_args:
        return None
    if model_args.lstrip().startswith("{"):
        value = json.loads(model_args).get("stats")
    else:
        from lm_eval.utils import simple_parse_args_string

        value = simple_parse_args_string(model_args).get("stats")
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    register()
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    stats = stats_path(argv)
    if stats is not None and summary_path(stats).is_file():
        summary = json.loads(summary_path(stats).read_text())
        print(f"\nBudget statistics ({stats}):\n{format_summary(summary)}")
    return 0
