"""The recipes named after published runs against docs/parity.md and against the released code.

- Every table of docs/parity.md is read and each row checked against its recipe file, so the table
  and the recipes cannot drift apart.
- The prompt strings of s1's harness and of L1's data scripts, written out again from their sources,
  against what our recipes send.
- s1's class-conditional Control with Table 3's numbers.
- Every method and prompt of each named evaluation recipe, and the prompts and reward of each L1
  recipe, run on a tiny model on the CPU (budgets and lengths shrunk, nothing else changed).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from evals import load_recipe as load_eval_recipe
from evals.benchmarks import Problem
from evals.methods import CLASSES, UNPROMPTED
from evals.recipe import read_settings
from evals.report import _class_control
from evals.runner import user_message
from tests.conftest import GREEDY_BIASES, GREEDY_INIT_STD, IM_START, SHARED, THINK_END, tokenizer_dir
from tests.tiny_model import QWEN_EOS, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "docs" / "parity.md"
SOURCE = re.compile(r"^(simplescaling/s1|cmu-l3/l1)@[0-9a-f]{7}:[\w./-]+:\d+(-\d+)?$")
DASH = "—"


# -- the parity tables ---------------------------------------------------------------------------


def parity_tables() -> list[tuple[str, list[dict[str, str]]]]:
    """(recipe path, rows) for every table: a table's recipe is the last `recipes/...yaml` named above it."""
    tables, recipe, header, rows = [], None, None, None
    for line in PARITY.read_text().splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if header is None:
                header, rows = cells, []
            elif not set("".join(cells)) <= set("-"):
                rows.append(dict(zip(header, cells, strict=True)))
            continue
        if header is not None:
            tables.append((recipe, rows))
            header = None
        named = re.findall(r"`(recipes/[\w./-]+\.yaml)`", line)
        if named:
            recipe = named[-1]
    if header is not None:
        tables.append((recipe, rows))
    return tables


def literal(cell: str) -> Any:
    """The YAML value in a cell written as one backticked literal."""
    assert cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2, cell
    try:
        return yaml.safe_load(cell[1:-1])
    except yaml.YAMLError:  # a prompt template, say: the text itself
        return cell[1:-1]


def only_literal(cell: str) -> bool:
    return cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2


def at(data: Any, key: str) -> Any:
    """The value at a dotted key: `a.b`, `a[2]`, `a[label=x]` (a list item whose label, or method, or
    name, is x; a plain string item matches itself)."""
    for part in re.findall(r"[^.\[\]]+|\[[^\]]+\]", key):
        if part.startswith("["):
            inner = part[1:-1]
            if inner.isdigit():
                data = data[int(inner)]
                continue
            field, value = inner.split("=")
            matches = [
                item
                for item in data
                if item == value
                or (isinstance(item, dict) and (item.get(field) or (item.get("method") if field == "label" else None)))
                == value
            ]
            assert len(matches) == 1, f"{key}: {len(matches)} items with {inner}"
            data = matches[0]
        else:
            data = data[part]
    return data


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_parity_tables_match_the_recipes():
    tables = parity_tables()
    names = {recipe for recipe, _ in tables}
    for needed in ("recipes/eval/s1.yaml", "recipes/sft/s1_32b.yaml", "recipes/sft/s1.1_7b.yaml",
                   "recipes/curate/s1k.yaml", "recipes/rl/l1_exact.yaml", "recipes/rl/l1_max.yaml",
                   "recipes/eval/l1.yaml"):  # fmt: skip
        assert needed in names, f"docs/parity.md has no table for {needed}"
    checked = 0
    for recipe, rows in tables:
        data = read_settings(ROOT / recipe)
        for row in rows:
            where = f"docs/parity.md, {recipe}, {row['Setting']!r}"
            for source in row["Source"].split(" and "):
                assert SOURCE.match(source), f"{where}: source {source!r} is not repo@commit:path:line"
            status = row["Status"]
            if row["Key"] != DASH and row["Ours"] != DASH:
                ours = literal(row["Ours"])
                assert same(at(data, row["Key"]), ours), f"{where}: the recipe has {at(data, row['Key'])!r}"
                checked += 1
                if (status == "same" or status.startswith("same (")) and only_literal(row["Published"]):
                    assert same(literal(row["Published"]), ours), f"{where}: marked same but differs"
            assert status, f"{where}: no status"
    assert checked >= 80


def test_the_table_check_catches_a_drift(monkeypatch):
    import tests.test_parity as this

    real = this.read_settings

    def drifted(path: Path) -> dict[str, Any]:
        data = real(path)
        if Path(path).name == "l1_max.yaml":
            data["trainer"]["learning_rate"] = 1.0e-6  # what the recipe said before it followed L1's code
        return data

    monkeypatch.setattr(this, "read_settings", drifted)
    with pytest.raises(AssertionError, match="l1_max.yaml, 'learning rate'"):
        test_parity_tables_match_the_recipes()


def test_named_recipes_load():
    from curate.recipe import load_recipe as load_curate_recipe
    from rl import load_recipe as load_rl_recipe
    from sft import load_recipe as load_sft_recipe

    for name in ("s1", "s1.1", "s1_token_conditional", "s1_step_conditional", "s1_rejection", "s1_no_string", "l1"):
        load_eval_recipe(ROOT / f"recipes/eval/{name}.yaml")
    for name in ("l1_exact", "l1_max", "l1_exact_offline", "l1_max_offline"):
        load_rl_recipe(ROOT / f"recipes/rl/{name}.yaml")
    for name in ("s1_32b", "s1.1_7b"):
        load_sft_recipe(ROOT / f"recipes/sft/{name}.yaml")
    load_curate_recipe(ROOT / "recipes/curate/s1k.yaml")
    load_curate_recipe(ROOT / "recipes/curate/s1k_paper.yaml")


# -- prompt strings ------------------------------------------------------------------------------

QUESTIONS = [
    "Find the number of positive integers $n \\le 1000$ such that $15n$ is a perfect square.",
    "Let $x$ be real.\n\nCompute $\\sqrt{x^2}$ when $x = -3$.",
]


def s1_query(question: str, env: dict[str, str]) -> str:
    """s1's QUERY_TEMPLATE, simplescaling/s1@77272c6 eval/lm-evaluation-harness/lm_eval/tasks/aime/utils.py:11-20."""
    if "PROMPTSTEP" in env:
        template = "{Question}\n\nThink for up to " + env["PROMPTSTEP"] + " steps."
    elif "PROMPTTOKEN" in env:
        template = "{Question}\n\nThink for up to " + env["PROMPTTOKEN"] + " tokens."
    elif "PROMPTLONG" in env:
        template = (
            "{Question}\n\nAnswer after a long amount of thinking. If you feel like you are finished early, spend "
            "the extra time trying to double-check your work until you are absolutely sure that you have the "
            "correct answer."
        )
    elif "PROMPTSHORT" in env:
        template = (
            "{Question}\n\nAnswer after a short amount of thinking. Do not spend excessive time double-checking "
            "your work."
        )
    else:
        template = "{Question}"
    return template.format(Question=question)


def prompts_of(recipe: Any, problem: Problem) -> dict[tuple[str, str], str]:
    return {(m.label, p.label): user_message(recipe, problem, m.suffix(p)) for m in recipe.methods for p in m.points()}


def test_s1_prompts_are_s1s_strings():
    s1 = load_eval_recipe(ROOT / "recipes/eval/s1.yaml")
    token = load_eval_recipe(ROOT / "recipes/eval/s1_token_conditional.yaml")
    step = load_eval_recipe(ROOT / "recipes/eval/s1_step_conditional.yaml")
    for question in QUESTIONS:
        problem = Problem("aime24", "1", question, "5", "math")
        sent = prompts_of(s1, problem)
        assert sent[("budget_forcing", "N=500")] == s1_query(question, {})
        assert sent[("budget_forcing_wait", "wait x2")] == s1_query(question, {})
        assert sent[("class_conditional", UNPROMPTED)] == s1_query(question, {})
        assert sent[("class_conditional", "short")] == s1_query(question, {"PROMPTSHORT": "true"})
        assert sent[("class_conditional", "long")] == s1_query(question, {"PROMPTLONG": "true"})
        for n in (2048, 4096, 8192, 16384):
            for label in ("token_conditional", "token_conditional+budget_forcing"):
                assert prompts_of(token, problem)[(label, f"N={n}")] == s1_query(question, {"PROMPTTOKEN": str(n)})
        for n in (16, 32, 64, 128, 256):
            for label in ("step_conditional", "step_conditional+budget_forcing"):
                assert prompts_of(step, problem)[(label, f"N={n}")] == s1_query(question, {"PROMPTSTEP": str(n)})
    # GPQA: s1's QUERY_TEMPLATE of gpqa/openai/utils.py:12, the options in our shuffled order.
    options = "A) 1\nB) 2\nC) 3\nD) 4"
    gpqa = Problem("gpqa_diamond", "r", "Which is even and prime?\n\n" + options, "B", "choice", "ABCD")
    assert prompts_of(s1, gpqa)[("budget_forcing", "N=500")] == "Which is even and prime?\n\n" + options
    assert set(CLASSES) == {"short", "long"}


def test_l1_prompts_are_l1s_strings():
    from rl.prompts import PromptSettings
    from rl.prompts import user_message as rl_message

    instruction = "Let's think step by step and output the final answer within \\boxed{}."
    choice = "Let's think step by step and output the final answer (eg, A, B, C, D) within \\boxed{}."
    l1 = load_eval_recipe(ROOT / "recipes/eval/l1.yaml")
    for question in QUESTIONS:
        for n in (512, 3600):
            # scripts/data/deepscaler_dataset.py:68-84 (cmu-l3/l1@294b0b1): f"{question} {instruction}"
            exact, maximum = (
                f"{question} {instruction} Think for {n} tokens.",
                f"{question} {instruction} Think for maximum {n} tokens.",
            )
            settings = PromptSettings()
            assert rl_message(question, n, "exact", settings.instruction, settings.separator) == exact
            assert rl_message(question, n, "max", settings.instruction, settings.separator) == maximum
            sent = prompts_of(l1, Problem("aime24", "1", question, "5", "math"))
            assert sent[("length_prompt_exact", f"N={n}")] == exact
            assert sent[("length_prompt_max", f"N={n}")] == maximum
            # scripts/data/generate_lsat.py:16 (and 14, with N's sign as fixed at 93dd330)
            lsat = prompts_of(l1, Problem("lsat", "1", question, "A", "choice", "ABCDE"))
            assert lsat[("length_prompt_exact", f"N={n}")] == f"{question}\n\n{choice} Think for {n} tokens."
            assert lsat[("length_prompt_max", f"N={n}")] == f"{question}\n\n{choice} Think for maximum {n} tokens."
    for name in ("l1_exact", "l1_max"):
        from rl import load_recipe

        prompts = load_recipe(ROOT / f"recipes/rl/{name}.yaml").prompts
        assert (prompts.instruction, prompts.separator, prompts.min_budget, prompts.max_budget) == (
            instruction,
            " ",
            100,
            4000,
        )


# -- class-conditional Control as s1 scores it ---------------------------------------------------


def test_class_conditional_control_is_scored_against_the_unprompted_run():
    def point(label: str, mean: float) -> dict[str, Any]:
        return {"point": label, "thinking_tokens": {"mean": mean}, "budget": None, "in_control": None}

    # s1's Table 3: no prompt 6109 tokens, short 8033, long 9651: only "long" moved the right way.
    points = [point(UNPROMPTED, 6109), point("short", 8033), point("long", 9651)]
    assert _class_control(points) == (0.5, 2)
    assert [p["in_control"] for p in points] == [None, False, True]
    assert _class_control([point("short", 10), point("long", 20)]) == (None, 0)  # nothing to compare with


# -- every named recipe's methods, prompts and rewards on a tiny model ---------------------------


def shrink(value: int, factor: int) -> int:
    return max(2, value // factor)


def tiny_eval(name: str, model: Path, tmp_path: Path, factor: int, shrink_budgets: bool = True,
              only: list[str] | None = None) -> Any:  # fmt: skip
    """The recipe with the tiny model, local copies of its benchmarks (one question each; with several samples,
    one benchmark per kind of prompt; `only`: these benchmarks), and its budgets (unless `shrink_budgets` is
    False: step counts are no lengths) and lengths divided by `factor`; every method, prompt and setting else
    as the recipe says."""
    from evals.recipe import recipe_from_dict

    data = read_settings(ROOT / f"recipes/eval/{name}.yaml")
    data.update(model=str(model), tokenizer=None, backend="hf", engine_args={}, output_dir=str(tmp_path / name))
    data.update(dtype="float32", batch_size=16, grading={"workers": 1})
    local = {"aime24": "eval/aime24.jsonl", "aime25": "eval/aime24.jsonl", "math500": "eval/math500.jsonl"}
    benchmarks = []
    for entry in data["benchmarks"]:
        bench = entry if isinstance(entry, dict) else {"name": entry}
        if bench["name"] in local:
            bench = {"name": bench["name"], "path": str(SHARED / "data" / local[bench["name"]])}
            bench["id"] = "unique_id" if bench["name"] == "math500" else "id"
        elif bench["name"] == "gpqa_diamond":  # gated on the hub: LSAT's multiple choice stands in
            bench = {"name": "gpqa_diamond", "path": str(SHARED / "data/pool/agieval/lsat-ar.jsonl"), "kind": "choice",
                     "passage": "passage", "question": "question", "options": ["options"], "answer": "label",
                     "id": None}  # fmt: skip
        else:
            bench = {**bench, "path": str(ROOT / bench["path"])} if not Path(bench["path"]).is_absolute() else bench
        benchmarks.append({**bench, "limit": 1})
    if data.get("samples", 1) > 1:  # L1's 16 samples: one benchmark per kind of prompt (math, multiple choice)
        kinds = {}
        for bench in benchmarks:
            kinds.setdefault(bench.get("kind", "math"), bench)
        benchmarks = list(kinds.values())
    data["benchmarks"] = [b for b in benchmarks if only is None or b["name"] in only]
    for method in data["methods"]:
        for key in ("budgets",):
            if key in method and shrink_budgets:
                method[key] = [shrink(n, factor) for n in method[key]]
    data["max_tokens"] = shrink(data["max_tokens"], factor)
    if isinstance(data.get("answer_reserve"), int):
        data["answer_reserve"] = shrink(data["answer_reserve"], factor)
    return recipe_from_dict(data, f"recipes/eval/{name}.yaml (shrunk)")


@pytest.mark.slow
def test_every_named_eval_recipe_runs_on_a_tiny_model(tmp_path):
    import json

    from evals import run

    s1_model = save_tiny_model(tmp_path / "s1", tokenizer_dir("qwen2.5"), GREEDY_BIASES["s1"], seed=1,
                               init_std=GREEDY_INIT_STD)  # fmt: skip
    think_model = save_tiny_model(tmp_path / "think", tokenizer_dir("r1-distill-qwen"),
                                  {151649: 3.3, QWEN_EOS: 3.5}, seed=1, init_std=GREEDY_INIT_STD)  # fmt: skip
    assert THINK_END != 151649  # the R1-distill vocabulary puts </think> at 151649
    # Rejection sampling draws at temperature 1: this model ends its thinking often enough when sampled.
    sampled = save_tiny_model(tmp_path / "s1-sampled", tokenizer_dir("qwen2.5"), {IM_START: 10.5, QWEN_EOS: 9.0},
                              seed=1)  # fmt: skip
    runs = (("s1", s1_model, 250), ("s1.1", s1_model, 250), ("s1_token_conditional", s1_model, 256),
            ("s1_no_string", s1_model, 250), ("s1_rejection", sampled, 250), ("l1", think_model, 256))  # fmt: skip
    for name, model, factor in runs:
        recipe = tiny_eval(name, model, tmp_path, factor)
        folder = run(recipe, progress=False)
        summary = json.loads((folder / "summary.json").read_text())
        for bench in recipe.benchmarks:
            labels = set(summary["benchmarks"][bench.name])
            assert labels == {m.label for m in recipe.methods}, (name, bench.name, labels)
            for method in recipe.methods:
                points = [p["point"] for p in summary["benchmarks"][bench.name][method.label]["points"]]
                assert points == [p.label for p in method.points()], (name, method.label)
        rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
        if name == "l1":  # the 2 x N window of "Think for N tokens."
            exact = [r for r in rows if r["method"] == "length_prompt_exact"]
            assert exact and all(len(r["completion_ids"]) <= 2 * r["budget"] for r in exact)
        if name == "s1":
            classes = summary["benchmarks"]["aime24"]["class_conditional"]
            assert classes["control_points"] == 2 and classes["control"] in (0.0, 0.5, 1.0)


# -- s1's "2x without string" ----------------------------------------------------------------------


def test_an_empty_wait_string_refuses_the_end_and_inserts_nothing(s1_model_dir):
    from decode import Budget, Sampling, generate, get_format

    fmt = get_format("s1")
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    plain = generate(str(s1_model_dir), None, prompts, format=fmt, budget=Budget(num_ignore=0), max_new_tokens=64,
                     sampling=Sampling(temperature=0))  # fmt: skip
    refused = generate(str(s1_model_dir), None, prompts, format=fmt.with_wait(""), budget=Budget(num_ignore=2),
                       max_new_tokens=64, sampling=Sampling(temperature=0))  # fmt: skip
    for a, b in zip(plain, refused, strict=True):
        assert a.thinking_tokens < 30  # the tiny model ends its thinking early on its own
        assert b.waits == 2 and b.thinking_tokens > a.thinking_tokens
        # Up to its first end the refused run is the plain run; then the model's next-best token follows,
        # with no token put in the end's place.
        assert b.completion_ids[: a.thinking_tokens] == a.completion_ids[: a.thinking_tokens]
        assert b.completion_ids[a.thinking_tokens] != a.completion_ids[a.thinking_tokens]
        wait = get_format("s1").tokens(__import__("transformers").AutoTokenizer.from_pretrained(s1_model_dir)).wait
        assert wait[0] not in b.completion_ids[: b.thinking_tokens]


def test_an_empty_wait_string_is_refused_where_the_engine_cannot_propose_again():
    from evals.recipe import RecipeError

    data = read_settings(ROOT / "recipes/eval/s1_no_string.yaml")
    with pytest.raises(RecipeError, match="empty wait string"):
        from evals.recipe import recipe_from_dict

        recipe_from_dict({**data, "backend": "vllm"}, "s1_no_string.yaml")


@pytest.mark.slow
def test_l1_recipes_prompts_and_rewards_run_on_a_tiny_model(tmp_path):
    """Each L1 recipe's prompts and reward, as the recipe sets them, on completions of a tiny R1-style model.
    Budgets and lengths are divided by 100; the hub dataset is not reachable here, so every recipe reads
    its offline stand-in's questions (four of them)."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evals import Grader
    from rl import load_recipe
    from rl.prompts import build_dataset, load_questions
    from rl.rewards import LCPOReward

    folder = save_tiny_model(tmp_path / "think", tokenizer_dir("r1-distill-qwen"), {151649: 3.3, 151643: 3.5}, seed=1,
                             init_std=GREEDY_INIT_STD)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with Grader(workers=1).start() as grader:
        for name in ("l1_exact", "l1_max", "l1_exact_offline", "l1_max_offline"):
            recipe = load_recipe(ROOT / f"recipes/rl/{name}.yaml")
            offline = load_recipe(ROOT / f"recipes/rl/{name.removesuffix('_offline')}_offline.yaml")
            specs = [dataclasses.replace(spec, limit=2) for spec in offline.data]
            prompts = dataclasses.replace(recipe.prompts, min_budget=1, max_budget=40)
            dataset = build_dataset(load_questions(specs), tokenizer, prompts)
            length = recipe.trainer["max_completion_length"] // 100
            ids = []
            for text in dataset["prompt"]:
                inputs = tokenizer(text, return_tensors="pt")
                torch.manual_seed(0)
                sampling = {"temperature": recipe.trainer["temperature"], "top_p": recipe.trainer["top_p"]}
                out = model.generate(**inputs, max_new_tokens=length, do_sample=True, **sampling)
                ids.append(out[0, inputs["input_ids"].shape[1] :].tolist())
            reward = LCPOReward(tokenizer, grader, recipe.reward, prompts.format, [151643])
            scores = reward(dataset["prompt"], None, ids, budget=dataset["budget"], mode=dataset["mode"],
                            answer=dataset["answer"], kind=dataset["kind"], letters=dataset["letters"])  # fmt: skip
            scored = reward.score(ids, dataset["budget"], dataset["mode"], dataset["answer"])
            for s, n, mode in zip(scored, dataset["budget"], dataset["mode"], strict=True):
                assert s.reward == pytest.approx(recipe.reward.reward(s.correct, s.length, n, mode))
            assert len(scores) == len(ids) == 4 and all(math.isfinite(x) for x in scores)
            assert set(dataset["mode"]) == ({"exact", "max"} if "max" in name else {"exact"})
            for message, n, mode in zip(dataset["message"], dataset["budget"], dataset["mode"], strict=True):
                sentence = f"Think for maximum {n} tokens." if mode == "max" else f"Think for {n} tokens."
                assert message.endswith(f" {prompts.instruction} {sentence}")
