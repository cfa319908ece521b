"""LCPO's rewards on hand-computed cases: correct and wrong answers, under and over N, Exact and Max
(the paper's formula and the released code's), the whole completion or only the thinking counted.

Completions are real token ids of the real tokenizers: k thinking tokens, the end of thinking, the
answer, end-of-sequence. Correctness goes through the evaluation harness's grader (math-verify in a
worker process), as in training.
"""

import pytest
from transformers import AutoTokenizer

from evals import Grader
from rl import CODE, COMPLETION, PAPER, THINKING, LCPOReward, RewardError, RewardSettings, exact_reward, max_reward
from tests.conftest import tokenizer_dir

THINK_END, EOS = 151668, 151645
STEP = 3019  # " step"
ANSWER_4 = [271, 59, 79075, 90, 19, 92]  # "\n\n\\boxed{4}"
ANSWER_5 = [271, 59, 79075, 90, 20, 92]  # "\n\n\\boxed{5}"


def completion(thinking: int, answer: list[int] | None = ANSWER_4) -> list[int]:
    """k thinking tokens, then (unless answer is None) the end of thinking, the answer and end-of-sequence."""
    ids = [STEP] * thinking
    return ids if answer is None else ids + [THINK_END, *answer, EOS]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tokenizer_dir("qwen3-style"))


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=1).start() as started:
        yield started


def rewards(tokenizer, grader, settings, ids, budget, mode, gold="4"):
    reward = LCPOReward(tokenizer, grader, settings, format="think")
    n = len(ids)
    return reward(None, None, ids, budget=[budget] * n, mode=[mode] * n, answer=[gold] * n, kind=["math"] * n)


def test_formulas_by_hand():
    assert exact_reward(1.0, 30, 50, 0.01) == pytest.approx(0.8)
    assert exact_reward(0.0, 70, 50, 0.01) == pytest.approx(-0.2)
    assert exact_reward(1.0, 1100, 100, 0.0003) == pytest.approx(0.7)  # L1's alpha: 1000 tokens off costs 0.3
    # Paper: correct * clip(alpha (N - n) + delta, 0, 1)
    assert max_reward(1.0, 30, 50, 0.01, 0.5) == pytest.approx(0.7)
    assert max_reward(1.0, 70, 50, 0.01, 0.5) == pytest.approx(0.3)
    assert max_reward(1.0, 0, 50, 0.01, 0.5) == pytest.approx(1.0)  # clipped at 1
    assert max_reward(1.0, 110, 50, 0.01, 0.5) == pytest.approx(0.0)  # clipped at 0
    assert max_reward(0.0, 30, 50, 0.01, 0.5) == 0.0
    assert max_reward(1.0, 50, 50, 0.0003, 0.5) == pytest.approx(0.5)
    # Released code: correct * (clip(alpha (N - n), -1, 1) + 1) / 2: half the paper's slope
    assert max_reward(1.0, 30, 50, 0.01, 0.5, CODE) == pytest.approx(0.6)
    assert max_reward(1.0, 70, 50, 0.01, 0.5, CODE) == pytest.approx(0.4)
    assert max_reward(1.0, 110, 50, 0.01, 0.5, CODE) == pytest.approx(0.2)  # the paper gives 0 here
    assert max_reward(1.0, 160, 50, 0.01, 0.5, CODE) == pytest.approx(0.0)
    assert max_reward(1.0, 0, 500, 0.01, 0.5, CODE) == pytest.approx(1.0)
    with pytest.raises(RewardError, match="max_formula"):
        max_reward(1.0, 1, 1, 0.1, 0.5, "other")


def test_exact_counts_the_whole_completion_or_the_thinking(tokenizer, grader):
    # 30 thinking tokens + end + 6 answer tokens = 37 counted tokens (end-of-sequence not counted).
    ids = [completion(30), completion(30, ANSWER_5), completion(70)]
    whole = rewards(tokenizer, grader, RewardSettings(alpha=0.01, length=COMPLETION), ids, 50, "exact")
    assert whole == pytest.approx([1 - 0.01 * 13, -0.01 * 13, 1 - 0.01 * 27])
    thinking = rewards(tokenizer, grader, RewardSettings(alpha=0.01, length=THINKING), ids, 50, "exact")
    assert thinking == pytest.approx([0.8, -0.2, 0.8])


def test_max_paper_and_code(tokenizer, grader):
    ids = [completion(30), completion(70), completion(110), completion(30, ANSWER_5), completion(0)]
    paper_settings = RewardSettings(alpha=0.01, delta=0.5, max_formula=PAPER, length=THINKING)
    paper = rewards(tokenizer, grader, paper_settings, ids, 50, "max")
    assert paper == pytest.approx([0.7, 0.3, 0.0, 0.0, 1.0])
    code = RewardSettings(max_alpha=0.01, max_formula=CODE, length=THINKING)
    assert rewards(tokenizer, grader, code, ids, 50, "max") == pytest.approx([0.6, 0.4, 0.2, 0.0, 0.75])
    whole = RewardSettings(alpha=0.01, delta=0.5, max_formula=PAPER, length=COMPLETION)
    # n = 37 and 77: clip(0.13 + 0.5) and clip(-0.27 + 0.5)
    assert rewards(tokenizer, grader, whole, ids[:2], 50, "max") == pytest.approx([0.63, 0.23])


def test_unfinished_thinking_is_wrong_and_all_thinking(tokenizer, grader):
    reward = LCPOReward(tokenizer, grader, RewardSettings(alpha=0.01, length=THINKING), format="think")
    # The "answer" tokens here are still thinking: no end-of-thinking token was ever written.
    (scored,) = reward.score([[STEP] * 20 + ANSWER_4], budget=[50], mode=["exact"], answer=["4"])
    assert (scored.thinking_ended, scored.correct, scored.answer) == (False, False, "")
    assert scored.thinking_tokens == scored.completion_tokens == 26
    assert scored.reward == pytest.approx(-0.01 * 24)


def test_correctness_only_and_per_row_modes(tokenizer, grader):
    plain = RewardSettings(length_penalty=False)
    assert rewards(tokenizer, grader, plain, [completion(500), completion(3, ANSWER_5)], 50, "exact") == [1.0, 0.0]
    reward = LCPOReward(tokenizer, grader, RewardSettings(alpha=0.01, max_formula=PAPER, length=THINKING), "think")
    assert reward.__name__ == "lcpo" and LCPOReward(tokenizer, grader, plain).__name__ == "correctness"
    mixed = reward(None, None, [completion(70), completion(70)], budget=[50, 50], mode=["exact", "max"],
                   answer=["4", "4"])  # fmt: skip
    assert mixed == pytest.approx([0.8, 0.3])


def test_metrics_and_columns_reach_trl_hooks(tokenizer, grader):
    metrics, columns = {}, {}
    reward = LCPOReward(tokenizer, grader, RewardSettings(alpha=0.01, length=THINKING), format="think")
    out = reward(
        ["p"] * 3,
        ["c"] * 3,
        [completion(30), completion(60, ANSWER_5), completion(50)],
        budget=[50, 40, 50],
        mode=["exact", "max", "exact"],
        answer=["4", "4", "4"],
        kind=["math"] * 3,
        letters=["ABCD"] * 3,
        log_metric=metrics.__setitem__,
        log_extra=columns.__setitem__,
        trainer_state=None,  # trl passes more keyword arguments; they are ignored
    )
    assert out == pytest.approx([0.8, 0.0, 1.0])
    assert metrics["lcpo/accuracy"] == pytest.approx(2 / 3)
    assert metrics["lcpo/length"] == pytest.approx(140 / 3)
    assert metrics["lcpo/length_error"] == pytest.approx((20 / 50 + 20 / 40 + 0) / 3)
    assert metrics["lcpo/length_signed"] == pytest.approx((-20 / 50 + 20 / 40) / 3)
    assert metrics["lcpo/within_budget"] == pytest.approx(2 / 3)
    assert metrics["lcpo/thinking_ended"] == 1.0
    assert columns == {"n": [30, 60, 50], "N": [50, 40, 50], "mode": ["exact", "max", "exact"],
                       "correct": [True, False, True]}  # fmt: skip


def test_s1_format_reads_the_answer_after_its_header(grader):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5"))
    # thinking, "<|im_start|>answer\n", "\\boxed{4}", <|im_end|>
    ids = [STEP] * 10 + [151644, 9217, 198] + tokenizer.encode("\\boxed{4}") + [EOS]
    reward = LCPOReward(tokenizer, grader, RewardSettings(alpha=0.1, length=THINKING), format="s1")
    (scored,) = reward.score([ids], budget=[12], mode=["exact"], answer=["4"])
    assert (scored.thinking_tokens, scored.answer, scored.correct) == (10, "\\boxed{4}", True)
    assert scored.reward == pytest.approx(0.8)
    assert scored.completion_tokens == len(ids) - 1


def l1_code_reward(correct: bool, n: int, num_tokens: int) -> float:
    """L1's reward as cmu-l3/l1@294b0b1 deepscaler/rewards/math_reward.py computes it (lines 111-130 and
    160-168), written out again here: `num_tokens` < 0 marks a "Think for maximum |N| tokens." prompt."""
    if num_tokens < 0:
        delta = n - abs(num_tokens)
        sc = (1 / 500) * delta * -1
        sc = max(-1, min(1, sc))
        return max(0, (sc + 1) / 2) * (1 if correct else 0)
    delta_score = 1 - abs(n - num_tokens) / 3000
    return delta_score if correct else delta_score - 1


def test_defaults_are_l1_code_over_a_grid():
    settings = RewardSettings()
    for budget in (100, 512, 1000, 2048, 3600, 4000):
        for n in (0, 1, 50, budget - 600, budget - 500, budget - 1, budget, budget + 1, budget + 499, budget + 500,
                  budget + 1667, budget + 5000):  # fmt: skip
            for correct in (True, False):
                exact = settings.reward(correct, max(n, 0), budget, "exact")
                assert exact == pytest.approx(l1_code_reward(correct, max(n, 0), budget), abs=1e-12), (n, budget)
                maximum = settings.reward(correct, max(n, 0), budget, "max")
                assert maximum == pytest.approx(l1_code_reward(correct, max(n, 0), -budget), abs=1e-12), (n, budget)
    # The paper's Max (alpha 0.0003, delta 0.5) is a named option and differs from the code beyond N:
    paper = RewardSettings(alpha=0.0003, max_formula=PAPER)
    assert paper.reward(True, 1500, 1000, "max") == pytest.approx(0.35)
    assert settings.reward(True, 1500, 1000, "max") == pytest.approx(0.0)


def test_count_eos_adds_the_closing_token_as_l1_counts_it(tokenizer, grader):
    ids = [completion(30), completion(30, None)]  # the second one was cut at the length limit: no EOS
    counted = RewardSettings(alpha=0.01, length=COMPLETION, count_eos=True)
    reward = LCPOReward(tokenizer, grader, counted, format="think")
    scored = reward.score(ids, budget=[50, 50], mode=["exact", "exact"], answer=["4", "4"])
    assert [s.length for s in scored] == [38, 30]


def test_bad_settings_are_refused():
    with pytest.raises(RewardError, match="length"):
        RewardSettings(length="tokens")
    with pytest.raises(RewardError, match="max_formula"):
        RewardSettings(max_formula="both")
    with pytest.raises(RewardError, match="alpha"):
        RewardSettings(alpha=-1)
    with pytest.raises(RewardError, match="mode"):
        RewardSettings().reward(True, 1, 1, "minimum")
