"""Step-conditional control (s1's Table 3): the steps-left SFT format, the step rules of the decoder,
s1's prompt, Control counted in steps, and the recipe run end to end on a tiny model on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decode import Budget, BudgetState, get_format
from decode.rules.result import to_result
from evals.steps import step_mark, step_metrics, steps_of
from sft import DataConfig, build_dataset
from tests.conftest import IM_START, tokenizer_dir
from tests.tiny_model import QWEN_EOS, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
ZERO = 15  # "0" in Qwen2.5's vocabulary


@pytest.fixture(scope="module")
def qwen():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5"))


def decode_scripted(tokenizer, thinking: str, answer: str, budget: Budget, cap: int = 200):
    """Drive the state as an engine would: the model proposes `thinking`'s tokens, then `answer`'s; where the
    decoder forces the end of thinking, the rest of `thinking` is never proposed. Forced tokens consume no
    proposal."""
    tokens = get_format("s1_steps").tokens(tokenizer)
    state = BudgetState(tokens, budget, cap)
    rest = tokenizer.encode(thinking, add_special_tokens=False)
    after = tokenizer.encode(answer, add_special_tokens=False)
    while not state.done:
        if not state.needs_proposal():
            state.advance()
            continue
        if state.forced_end:
            rest = []
        source = rest or after
        state.advance(source.pop(0) if source else QWEN_EOS)
    return to_result(state.summary(), tokens, tokenizer), state


def test_the_step_format_resolves_to_the_zero_marker_and_the_answer_word(qwen):
    tokens = get_format("s1_steps").tokens(qwen)
    assert tokens.open == (IM_START,) and tokens.end == {IM_START}
    assert qwen.decode([tokens.step_zero]) == "0" and qwen.decode([tokens.answer_head]) == "answer"


def test_thinking_goes_on_across_markers_and_ends_at_answer(qwen):
    thinking = "2 steps left\nx = 1\n<|im_start|>1 steps left\nso 2\n<|im_start|>answer\n"
    result, _ = decode_scripted(qwen, thinking, "", Budget())
    assert result.thinking == "2 steps left\nx = 1\n<|im_start|>1 steps left\nso 2\n"
    assert result.answer == "" and not result.forced_end and result.finish_reason == "eos"


def test_the_zero_steps_marker_ends_thinking_only_when_asked(qwen):
    thinking = "1 steps left\nx = 1\n<|im_start|>0 steps left\nmore\n<|im_start|>answer\n"
    forced, _ = decode_scripted(qwen, thinking, "Answer: 2", Budget(end_at_zero_steps=True))
    # s1 stopped at `<|im_start|>0` and appended `answer`: the "0" is never emitted.
    assert forced.thinking == "1 steps left\nx = 1\n" and forced.forced_end
    assert qwen.decode(forced.completion_ids).startswith("1 steps left\nx = 1\n<|im_start|>answer\nAnswer: 2")
    assert forced.answer == "Answer: 2" and ZERO not in forced.completion_ids
    free, _ = decode_scripted(qwen, thinking, "", Budget())
    assert free.thinking == "1 steps left\nx = 1\n<|im_start|>0 steps left\nmore\n" and not free.forced_end


def test_engines_see_the_step_rule_through_the_state(qwen):
    """The vLLM adapters plan with free_run / watched / replaced_ends / preview: after an end token they
    must stop and look at the next proposal."""
    tokens = get_format("s1_steps").tokens(qwen)
    state = BudgetState(tokens, Budget(end_at_zero_steps=True), 50)
    for token in qwen.encode("3 steps left\nx", add_special_tokens=False):
        state.advance(token)
    assert state.free_run() > 0 and ZERO not in state.watched()
    state.advance(IM_START)  # a marker or the end: the next token decides
    assert state.free_run() == 0 and {ZERO, tokens.answer_head} <= state.watched()
    replaced, target = state.replaced_ends()
    assert ZERO in replaced and QWEN_EOS in replaced and target == tokens.answer_head
    assert state.preview(ZERO) == tokens.answer_head and state.preview(16) == 16  # "1": another marker
    # An end-of-sequence right after the end token closes thinking there, not forced by the budget.
    state.advance(QWEN_EOS)
    assert state.answer_start == len(state.completion) - 1 and not state.forced_end
    assert state.thinking == len(qwen.encode("3 steps left\nx", add_special_tokens=False))
    with pytest.raises(ValueError, match="no minimum thinking budget"):
        BudgetState(tokens, Budget(min_thinking_tokens=4), 50)


def test_replay_rebuilds_a_stop_at_zero_steps_from_the_tokens(qwen):
    """Engines that return only token ids (vLLM, a server) rebuild the record by replay: with the model's
    choices known (greedy), the `answer` after the end token is read as the stand-in for its "0"."""
    from decode.rules.replay import replay

    budget = Budget(end_at_zero_steps=True)
    thinking = "1 steps left\nx = 1\n<|im_start|>0 steps left\nmore\n<|im_start|>answer\n"
    forced, state = decode_scripted(qwen, thinking, "Answer: 2", budget)
    tokens, emitted = state.tokens, forced.completion_ids
    own = [True] * len(emitted)
    own[emitted.index(tokens.answer_head)] = False  # the model proposed "0" there
    rebuilt = replay(tokens, budget, 200, emitted, own)
    assert rebuilt == state.summary() and rebuilt.forced_end
    # Unknown choices (sampling): read as the model's own end, as an allowed end token is.
    assert not replay(tokens, budget, 200, emitted).forced_end
    own[emitted.index(tokens.answer_head)] = True
    assert replay(tokens, budget, 200, emitted, own).thinking_tokens == forced.thinking_tokens


def test_sft_rows_get_steps_left_markers_and_the_step_prompt(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5"))
    rows = [{"question": "Is 7 prime?", "thinking_trajectories": ["Divisors of 7:\n\n1 and 7.", "So prime."],
             "attempt": "Yes."}]  # fmt: skip
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps(rows[0]) + "\n")
    dataset, _ = build_dataset(tokenizer, DataConfig(source=str(source), format="s1_steps"))
    ids, mask = dataset[0]["input_ids"], dataset[0]["completion_mask"]
    learnt = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    # The opener the format appends is learnt, as s1's `<|im_start|>think` was.
    assert learnt == ("<|im_start|>3 steps left\nDivisors of 7:\n<|im_start|>2 steps left\n1 and 7.\n"
                      "<|im_start|>1 steps left\nSo prime.\n<|im_start|>answer\nAnswer: Yes.<|im_end|>")  # fmt: skip
    prompt = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    # s1's prompt (PROMPTSTEP) with the trace's own number of steps.
    assert prompt.endswith("Is 7 prime?\n\nThink for up to 3 steps.<|im_end|>\n<|im_start|>assistant\n")


def test_control_counts_steps_as_s1_did():
    mark = step_mark("s1_steps")
    assert mark == " steps left\n"
    runs = [{"thinking": "2 steps left\na\n<|im_start|>1 steps left\nb\n", "answer": "x"},
            {"thinking": "3 steps left\na\n",
             "answer": "<|im_start|>2 steps left\nb\n<|im_start|>1 steps left\n"}]  # fmt: skip
    assert [steps_of(r, mark) for r in runs] == [2, 3]  # the answer's markers count too (the whole response)
    metrics = step_metrics(runs, 2, mark)
    assert metrics["steps"]["mean"] == 2.5 and metrics["in_control"] is False and metrics["within_budget"] == 0.5
    assert step_metrics(runs, 3, mark)["in_control"] is True


def test_the_recipe_runs_on_a_tiny_model(tmp_path):
    """recipes/eval/s1_step_conditional.yaml with a tiny model, one AIME question and the window shrunk
    (step budgets are counts of steps, left as they are). This model writes `<|im_start|>` and "0" often,
    so the forcing method meets the zero-steps marker."""
    from evals import run
    from tests.test_parity import tiny_eval

    model = save_tiny_model(tmp_path / "model", tokenizer_dir("qwen2.5"), {IM_START: 3.5, ZERO: 3.3, QWEN_EOS: 3.0},
                            seed=2, init_std=0.3)  # fmt: skip
    recipe = tiny_eval("s1_step_conditional", model, tmp_path, 512, shrink_budgets=False, only=["aime24"])
    assert [p.budget for m in recipe.methods for p in m.points()] == [16, 32, 64, 128, 256] * 2
    folder = run(recipe, progress=False)
    summary = json.loads((folder / "summary.json").read_text())["benchmarks"]["aime24"]
    assert set(summary) == {"step_conditional", "step_conditional+budget_forcing"}
    for method in summary.values():
        assert method["control"] is not None and [p["budget"] for p in method["points"]] == [16, 32, 64, 128, 256]
        assert all("steps" in p for p in method["points"])
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    assert all(r["prompt"].endswith(f"\n\nThink for up to {r['budget']} steps.") for r in rows)
    forced = [r for r in rows if r["method"] == "step_conditional+budget_forcing"]
    assert all("<|im_start|>0" not in r["thinking"] for r in forced)
    # Ended at the zero-steps marker: forced, but not by the thinking cap (whose force string writes "Final Answer:").
    stopped = [r for r in forced if r["forced_end"] and not r["answer"].startswith("Final Answer:")]
    assert stopped, [(r["thinking"][-40:], r["answer"][:20], r["forced_end"]) for r in forced]
    free = [r for r in rows if r["method"] == "step_conditional"]
    assert all(not r["forced_end"] or r["answer"].startswith("Final Answer:") for r in free)
