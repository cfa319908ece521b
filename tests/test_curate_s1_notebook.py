"""s1K's selection as s1's notebook ran it (simplescaling/s1@77272c6:data/filter.ipynb), on a small
synthetic pool: the preselection, the uniform draws to 700, the GPQA-halved benchmark mix and the
2^-rank length weights, read off every draw the sampler makes."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest

from curate import CurateError
from curate.api import ApiSettings, ChatResult
from curate.cache import CallCache
from curate.recipe import load_recipe
from curate.s1_judge import GRADING_PROMPT, judge_against_solutions, judge_messages, verdict
from curate.select import MixSource, SelectSettings, sample_indices, select, source_mix_weights

ROOT = Path(__file__).resolve().parents[1]
AIME, GPQA, MATH = "s1-59k/qq8933/AIME_1983_2024", "s1-59k/Idavidrein/gpqa", "s1-59k/qfq/openaimath/Algebra"


def s1k_select(**shrunk: int) -> SelectSettings:
    """The select stage of recipes/curate/s1k.yaml, with its sizes shrunk."""
    stage = next(s for s in load_recipe(ROOT / "recipes/curate/s1k.yaml").stages if s.kind == "select")
    return SelectSettings(**{**stage.settings.__dict__, **shrunk})


class SpyRng:
    """Records the probabilities of every draw; domain draws follow `script` (indices into the domains
    with rows left, in name order), other draws take the first option they can (for a row: the
    longest trace): the draws are read exactly
    instead of estimated over many seeds."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.draws: list[np.ndarray] = []
        self.script = list(script or [])

    def choice(self, n: int, p: np.ndarray) -> int:
        self.draws.append(np.asarray(p, dtype=float))
        domain_draw = len(self.draws) % 2 == 1
        if domain_draw and self.script:
            return self.script.pop(0)
        return int(np.flatnonzero(self.draws[-1])[0])  # the first option that can be drawn


def row(i: str, source: str, domain: str, tokens: int, correct: bool | None = None) -> dict:
    return {"id": i, "source": source, "domain": domain, "trace_tokens": tokens, "teacher_correct": correct}


def test_preselection_keeps_teacher_correct_aime_and_gpqa_and_long_math():
    rows = [
        row("aime-right", AIME, "A", 100, True),
        row("aime-wrong", AIME, "A", 9000, False),
        row("aime-ungraded", AIME, "A", 9000, None),
        row("gpqa-right", GPQA, "G", 50, True),
        row("math-long", MATH, "M", 5601, True),
        row("math-at-5600", MATH, "M", 5600, True),  # the notebook's test is strictly more than 5,600
        row("math-long-wrong", MATH, "M", 9000, False),
        row("other-right", "s1-59k/other", "M", 9000, True),
    ]
    out, info = select(datasets.Dataset.from_list(rows), s1k_select(size=3, uniform_first=3))
    kept = {i for i, how in zip(out["id"], out["selected_by"], strict=True) if how.startswith("preselected")}
    assert kept == {"aime-right", "gpqa-right", "math-long"} and info["preselected"] == 3
    assert info["selected"] == 3  # preselected rows are in whatever the size


def test_benchmark_mix_weights_gpqa_at_half_of_aime():
    sources = [AIME] * 10 + [GPQA] * 40 + [MATH] * 5
    domains = ["A"] * 6 + ["B"] * 4 + ["C"] * 30 + ["A"] * 10 + ["Z"] * 5
    mix = s1k_select().source_mix
    # GPQA's 40 rows scaled to 0.5 x AIME's 10: x 0.125, each count truncated (3.75 -> 3, 1.25 -> 1).
    assert source_mix_weights(sources, domains, mix) == {"A": 7.0, "B": 4.0, "C": 3.0}
    unhalved = [MixSource(m.source, 1.0) for m in mix]
    assert source_mix_weights(sources, domains, unhalved) == {"A": 8.0, "B": 4.0, "C": 7.0}
    with pytest.raises(CurateError, match="no row's source matches"):
        source_mix_weights([MATH], ["Z"], mix)


def test_uniform_draws_until_700_then_the_benchmark_mix():
    """Scaled down (700 -> 5): the 2 preselected rows count, domains are drawn uniformly until 5 rows
    are selected, then by the weights (A 3 : B 0 : C 1)."""
    domains = ["A"] * 4 + ["B"] * 4 + ["C"] * 4
    lengths = [10, 20, 30, 40] * 3
    taken = [7, 11]  # the longest B and C rows, preselected
    settings = SelectSettings(size=8, method="s1_notebook", uniform_first=5, domain_weights={"A": 3.0, "C": 1.0})
    # Domain draws: B (its preselected row: nothing added), A, A, C (preselected), A -> 5 selected;
    # then the weighted draws, which the spy answers with the first domain of weight above 0.
    spy = SpyRng(script=[1, 0, 0, 2, 0])
    picks = sample_indices(domains, lengths, [i for i in range(12) if i not in taken], 6, settings, spy, taken)
    domain_draws = spy.draws[0::2]
    for p in domain_draws[:5]:
        np.testing.assert_allclose(p, [1 / 3] * 3)
    np.testing.assert_allclose(domain_draws[5], [0.75, 0.0, 0.25])  # A's last row
    np.testing.assert_allclose(domain_draws[6], [0.0, 1.0])  # A is used up: B and C are left, B weighs 0
    assert picks == [3, 2, 1, 0, 10, 9] and len(domain_draws) == 8


def test_a_draw_weighs_a_domains_rows_by_two_to_the_minus_rank():
    domains = ["A"] * 4
    lengths = [300, 4000, 50, 2000]  # ranks 2, 0, 3, 1
    spy = SpyRng()
    picks = sample_indices(domains, lengths, [0, 1, 2, 3], 1, SelectSettings(size=1, method="s1_notebook"), spy, [])
    expected = np.array([1, 0.5, 0.25, 0.125]) / 1.875  # longest first
    np.testing.assert_allclose(spy.draws[1], expected)
    assert picks == [1]  # the spy takes the first option: the longest trace


def test_a_draw_on_a_preselected_row_uses_it_up_and_adds_nothing():
    """The notebook's domain pools still hold the preselected rows (filter.ipynb:512-514)."""
    domains, lengths = ["A", "A", "A"], [10, 30, 20]
    spy = SpyRng()
    picks = sample_indices(domains, lengths, [0, 2], 1, SelectSettings(size=2, method="s1_notebook"), spy, [1])
    assert picks == [2]
    assert len(spy.draws) == 4  # two draws: the first took preselected row 1 (the longest) and added nothing
    np.testing.assert_allclose(spy.draws[1], np.array([1, 0.5, 0.25]) / 1.75)  # it ranks among the rows


def test_the_s1k_recipe_selects_as_the_notebook_on_a_synthetic_pool():
    """The recipe's own select settings, sizes shrunk (1,000 -> 40, 700 -> 28)."""
    rng = np.random.default_rng(0)
    rows = [row(f"aime{k}", AIME, "A" if k < 6 else "B", int(rng.integers(100, 9000)), k % 2 == 0) for k in range(10)]
    rows += [row(f"gpqa{k}", GPQA, "C", int(rng.integers(100, 9000)), k < 3) for k in range(40)]
    rows += [row(f"math{k}", MATH, "M", 5000 + 100 * k, True) for k in range(12)]
    rows += [row(f"x{d}{k}", "s1-59k/other", d, int(rng.integers(100, 9000))) for d in "DEF" for k in range(20)]
    out, info = select(datasets.Dataset.from_list(rows), s1k_select(size=40, uniform_first=28))
    pre = {i for i, how in zip(out["id"], out["selected_by"], strict=True) if how.startswith("preselected")}
    assert pre == {f"aime{k}" for k in range(0, 10, 2)} | {"gpqa0", "gpqa1", "gpqa2"} | {
        f"math{k}" for k in range(7, 12)}  # fmt: skip
    assert info["selected"] == 40 and info["domain_weights"] == {"A": 6.0, "B": 4.0, "C": 5.0}
    assert info["preselected"] == 13 and info["uniform_picks"] == 15 and info["weighted_picks"] == 12
    again, _ = select(datasets.Dataset.from_list(rows), s1k_select(size=40, uniform_first=28))
    assert again["selected_by"] == out["selected_by"]


def test_s1s_judge_message_and_verdict():
    messages = judge_messages("What is {x}?", "It is 4.", "x = 4, so 4.")
    assert messages[0] == {"role": "system", "content": GRADING_PROMPT}
    user = "## Problem\nWhat is {x}?\n\n## Attempt\nIt is 4.\n\n## Correct answer\nx = 4, so 4."
    assert messages[1]["content"] == user
    assert GRADING_PROMPT.startswith("You are an AI assistant for grading a science problem.\n")
    assert "by comparing it with the correct answer. \nIf" in GRADING_PROMPT and GRADING_PROMPT.endswith("quotes).")
    assert (verdict("Right.\nYes"), verdict("Wrong.\nNo"), verdict("Yes\nmaybe"), verdict("yes")) == (
        True, False, None, None)  # fmt: skip


def test_the_judge_grades_rows_with_a_solution_and_records_failures(monkeypatch, tmp_path):
    import curate.s1_judge as judge

    def fake_chat_all(settings, conversations, cache):
        replies = {"a": ChatResult(content="Matches.\nYes"), "b": ChatResult(content="No"),
                   "c": ChatResult(content="I cannot tell."),
                   "d": ChatResult(error="failed after 7 tries")}  # fmt: skip
        return [replies[c[1]["content"].split("\n")[1]] for c in conversations]

    monkeypatch.setattr(judge, "chat_all", fake_chat_all)
    rows = [{"question": q, "solution": "s" if q != "e" else None} for q in "abcde"]
    api = ApiSettings(base_url="http://127.0.0.1:9", model="judge")
    cache = CallCache(tmp_path / "calls.sqlite")
    marks, errors = judge_against_solutions(rows, ["x"] * 5, api, cache)
    cache.close()
    assert marks == [True, False, None, None, None]
    assert sorted(errors) == [2, 3] and "not Yes or No" in errors[2] and "7 tries" in errors[3]


def notebook_keeps(question: str, source: str) -> bool:
    """simplescaling/s1@77272c6:data/filter.ipynb:194-203, restated as the reference to compare with."""
    import re

    clean = ("[asy]" not in question and "![Image]" not in question
             and not any(f"p{i}." in question for i in range(1, 1000))
             and not re.search(r"\*\*(?=.*\d)[^\s\]]*\*\*", question))  # fmt: skip
    return clean or ("[asy]" in question and "AIME" in source)


def test_the_recipes_string_filters_are_the_notebooks():
    from curate.quality import quality
    from curate.schema import POOL_FEATURES

    stage = next(s for s in load_recipe(ROOT / "recipes/curate/s1k.yaml").stages if s.kind == "quality")
    questions = ["Find x.", "Draw [asy]draw(circle);[/asy] and find x.", "See ![Image](a.png).", "Solve p1. first.",
                 "Solve p999. then", "Solve p1000x.", "Then p0. and p.", "Compute **12** now.", "A **bold** word.",
                 "**x** then 3", "Both ![Image] and p12. here", "![image] lower case",
                 "[asy]draw(p1.A);[/asy]"]  # fmt: skip
    rows = []
    for source in ("s1-59k/qq8933/AIME_1983_2024", "s1-59k/qfq/openaimath/Geometry", "s1-59k/aime-lower"):
        rows += [{"id": f"{source}:{k}", "question": q, "solution": "", "answer": "", "kind": "math", "letters": "",
                  "source": source, "cot_type": "math", "metadata": "{}"} for k, q in enumerate(questions)]  # fmt: skip
    out, _ = quality(datasets.Dataset.from_list(rows, features=POOL_FEATURES), stage.settings)
    ours = [not reason for reason in out["drop_reason"]]
    theirs = [notebook_keeps(r["question"], r["source"]) for r in rows]
    # One case differs: an AIME question with [asy] and another pattern, which the notebook keeps
    # for its figure (its `elif`); each rule here applies on its own.
    differ = [r["question"] for r, a, b in zip(rows, ours, theirs, strict=True) if a != b]
    assert differ == ["[asy]draw(p1.A);[/asy]"]
    assert theirs.count(False) > 10


def test_teacher_grade_with_s1s_judge_marks_the_attempt(monkeypatch, tmp_path):
    import curate.s1_judge as judge
    from curate.teacher_grade import TeacherGradeSettings, teacher_grade

    def fake_chat_all(settings, conversations, cache):
        return [ChatResult(content="ok\nYes" if "right" in c[1]["content"] else "bad\nNo") for c in conversations]

    monkeypatch.setattr(judge, "chat_all", fake_chat_all)
    data = datasets.Dataset.from_list([{"question": "q1", "solution": "s", "attempt": "right"},
                                       {"question": "q2", "solution": "s", "attempt": "wrong"},
                                       {"question": "q3", "solution": "", "attempt": "right"}])  # fmt: skip
    cache = CallCache(tmp_path / "calls.sqlite")
    settings = TeacherGradeSettings(judge=ApiSettings(base_url="http://127.0.0.1:9", model="judge"))
    out, info = teacher_grade(data, settings, cache)
    cache.close()
    assert out["teacher_correct"] == [True, False, None] and out["drop_reason"] == ["", "", ""]
    assert (info["correct"], info["wrong"], info["ungraded"]) == (1, 1, 1)
    with pytest.raises(CurateError, match="needs 'judge'"):
        TeacherGradeSettings()


def test_difficulty_graded_by_s1s_judge_drops_solved_rows_and_rows_without_a_solution(monkeypatch, tmp_path):
    import curate.difficulty as difficulty_module
    import curate.s1_judge as judge
    from curate.difficulty import DifficultySettings, ReferenceModel, difficulty
    from curate.schema import POOL_FEATURES

    def fake_generate(spec, prompts, cache):
        return [{"thinking": "", "answer": f"{spec.name} says {p[0]['content']}"} for p in prompts]

    def fake_chat_all(settings, conversations, cache):
        return [ChatResult(content="Yes" if "big says easy" in c[1]["content"] else "No") for c in conversations]

    monkeypatch.setattr(difficulty_module, "generate_cached", fake_generate)
    monkeypatch.setattr(judge, "chat_all", fake_chat_all)
    rows = [{"id": f"t:{q}", "question": q, "solution": "" if q == "nosol" else "the solution", "answer": "1",
             "kind": "math", "letters": "", "source": "t", "cot_type": "math", "metadata": "{}"}
            for q in ("easy", "hard", "nosol")]  # fmt: skip
    models = [ReferenceModel(name="small", model="m"), ReferenceModel(name="big", model="m")]
    settings = DifficultySettings(models=models, prompts={"math": "{question}", "choice": "{question}"},
                                  grade_by="s1_judge", judge=ApiSettings(base_url="http://127.0.0.1:9", model="j"),
                                  grading={"workers": 1})  # fmt: skip
    cache = CallCache(tmp_path / "calls.sqlite")
    out, info = difficulty(datasets.Dataset.from_list(rows, features=POOL_FEATURES), settings, cache)
    cache.close()
    # "1" is the row's answer: math-verify would have marked nothing solved; the judge sees the solution.
    assert out["drop_reason"] == ["solved: by big", "", "no solution: s1 grades against the solution"]
    assert info["ungraded_rows"] == 1
