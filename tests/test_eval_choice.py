"""Multiple choice takes its letters from the item's options (AGIEval/LSAT has five), and the default
answer room fits s1-style answers."""

import json

import pytest

from evals import Answer, BenchmarkError, BenchmarkSpec, Grader, load_problems
from evals.recipe import recipe_from_dict
from tests.conftest import SHARED, tokenizer_dir

AGIEVAL = SHARED / "data" / "pool" / "agieval"
S1K_HEAD = SHARED / "data" / "pool" / "s1k-1.1_head5.parquet"


def lsat(name: str) -> BenchmarkSpec:
    path = AGIEVAL / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"real AGIEval file {path} not found")
    return BenchmarkSpec(name, path=str(path), kind="choice", passage="passage", question="question",
                         answer="label", id=None, options=("options",))  # fmt: skip


def test_lsat_items_have_five_letters_and_e_can_be_right():
    problems = load_problems(lsat("lsat-ar"))
    assert len(problems) == 230 and {p.letters for p in problems} == {"ABCDE"}
    item = next(p for p in problems if p.gold == "E")
    raw = json.loads((AGIEVAL / "lsat-ar.jsonl").read_text().splitlines()[int(item.id)])
    assert item.question.startswith(raw["passage"].strip())  # the passage, then the question, then the options
    assert item.question.index(raw["question"].strip()) < item.question.index("\n(A)") < item.question.index("\n(E)")
    with Grader(workers=1) as grader:
        verdicts = grader.grade([Answer("choice", item.gold, "\\boxed{E}", item.letters),
                                 Answer("choice", item.gold, "Answer: (E)", item.letters)])  # fmt: skip
    assert all(v.correct and v.extracted == "E" for v in verdicts)


def test_letters_follow_the_options_written_in_the_question(tmp_path):
    path = tmp_path / "mc.jsonl"
    rows = [
        {"id": 1, "problem": "Pick one.\nA) 1\nB) 2\nC) 3\nD) 4\nE) 5\nF) 6", "answer": "f"},
        {"id": 2, "problem": "Which? (A) red (B) blue (C) green", "answer": "C"},
        {"id": 3, "problem": "Yes or no?", "answer": "B"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    problems = load_problems(BenchmarkSpec("mc", path=str(path), kind="choice"))
    assert [(p.letters, p.gold) for p in problems] == [("ABCDEF", "F"), ("ABC", "C"), ("ABCD", "B")]
    path.write_text(json.dumps({"id": 1, "problem": "Which? (A) red (B) blue", "answer": "D"}))
    with pytest.raises(BenchmarkError, match=r"mc.jsonl: line 1: answer 'D' is not one of the options' letters A, B"):
        load_problems(BenchmarkSpec("mc", path=str(path), kind="choice"))
    path.write_text(json.dumps({"id": 1, "problem": "Which?", "answer": "A", "choices": "red"}))
    with pytest.raises(BenchmarkError, match="field 'choices' must hold a list of 2 to 10 options"):
        load_problems(BenchmarkSpec("mc", path=str(path), kind="choice", options=("choices",)))
    with pytest.raises(BenchmarkError, match="takes one 'options' field holding a list"):
        load_problems(BenchmarkSpec("mc", path=str(path), kind="choice", options=("choices", "problem")))


@pytest.mark.slow
def test_the_default_answer_room_fits_s1k_answers():
    """s1K-1.1's attempts (the answers s1 trains on) run 689-1,619 Qwen tokens; the old fixed answer
    cap of 1024 cut them. By default the answer has no cap of its own, and the room kept for it when
    thinking has no maximum fits them at s1's 32,768-token window."""
    if not S1K_HEAD.exists():
        pytest.skip(f"real s1K-1.1 rows {S1K_HEAD} not found")
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5"))
    attempts = datasets.Dataset.from_parquet(str(S1K_HEAD))["gemini_attempt"]
    lengths = [len(tokenizer.encode(a, add_special_tokens=False)) for a in attempts]
    assert min(lengths) == 689 and max(lengths) == 1619
    recipe = recipe_from_dict(
        {
            "model": "m",
            "output_dir": "o",
            "benchmarks": ["aime24"],
            "methods": [{"method": "budget_forcing", "budgets": [512]}],
        }
    )
    assert recipe.max_answer_tokens is None and recipe.max_tokens == 32768
    assert recipe.answer_room() >= max(lengths)
    assert recipe.thinking_cap(7) == 32768 - recipe.answer_room() - 7
