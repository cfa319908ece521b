"""Grading as s1 graded: its answer extraction, then an LLM judge over any OpenAI-compatible endpoint.

s1's harness (simplescaling/s1@77272c6, eval/lm-evaluation-harness/lm_eval/tasks/aime/utils.py:243-291
and gpqa/openai/utils.py:168-200) reads the answer as the last `\\boxed{}` of the text after the end of
thinking, else the last "Answer:" line, and then:

- math: digits against digits are compared as integers ("023" = "23"); anything else goes to the
  judge (gpt-4o-mini in s1) with `MATH_INDEX`: the gold answer as the only option (one sample per
  question; s1 adds the other samples' answers as options when it draws several), and the answer
  counts as the gold one when the judge names option 1;
- multiple choice: a letter a-d is taken as it is; anything else goes to the judge with
  `CHOICE_LETTER` and the question as `CHOICE_QUESTION` shows it; a reply that is not a letter
  counts as "A", as in s1.

It is off by default (math-verify grades); an evaluation recipe turns it on with `judge: {base_url,
model, ...}`, and then every sample records the judge, its reply and its verdict beside math-verify's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from .extract import last_boxed
from .judge_prompts import CHOICE_LETTER, MATH_INDEX

S1_ANSWER = re.compile(r"(?i)Answer\s*:\s*(.*)", re.DOTALL)  # s1's ANSWER_PATTERN, matched as it did
OPTION_LINE = re.compile(r"^([A-Z])\) (.*)$")


class JudgeError(ValueError):
    """Judge settings that cannot be used, or an endpoint that keeps failing."""


@dataclass(frozen=True)
class JudgeSettings:
    """An OpenAI-compatible chat endpoint used as s1's judge.

    Attributes:
        base_url: the endpoint ("https://api.openai.com/v1", or a local `vllm serve` at ".../v1").
        model: the judge model (s1: gpt-4o-mini).
        api_key_env: the environment variable holding the key ("" for none).
        temperature, max_tokens: s1's sampler settings (0.5 and 1,024).
        timeout_s, max_retries: per request; a request that still fails stops the run with the reason.
        concurrency: requests in flight.
    """

    base_url: str
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.5
    max_tokens: int = 1024
    timeout_s: float = 60.0
    max_retries: int = 5
    concurrency: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise JudgeError(f"judge.base_url must be an http(s) URL, got {self.base_url!r}")
        if self.max_retries < 0 or self.concurrency < 1 or self.max_tokens < 1:
            raise JudgeError("judge: max_retries must be >= 0, concurrency and max_tokens >= 1")

    def record(self) -> dict[str, Any]:
        """What a sample records of the judge (never the key)."""
        return {k: v for k, v in asdict(self).items() if k not in ("timeout_s", "max_retries", "concurrency")}


@dataclass(frozen=True)
class JudgeVerdict:
    """s1's verdict on one answer: what was read, whether the judge was asked, and its reply."""

    correct: bool
    extracted: str
    asked: bool
    reply: str | None


def s1_extract(answer: str) -> str:
    """s1's reading of the answer text: the last boxed expression, else what follows the last "Answer:"."""
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed
    matches = S1_ANSWER.findall(answer)
    return matches[-1] if matches else answer


def choice_question(question: str) -> str:
    """Our multiple-choice question ("...\\n\\nA) x\\nB) y") as s1 showed it to the judge (`CHOICE_QUESTION`)."""
    head, _, tail = question.rpartition("\n\n")
    options = [OPTION_LINE.match(line) for line in tail.splitlines()]
    if not head or not options or not all(options):
        return question
    return head + "\nAnswer Choices:\n" + "\n".join(f"({m.group(1)}) {m.group(2)}" for m in options)


class Judge:
    """s1's grading with an LLM judge; `ask` may be replaced (tests) by any str -> str function."""

    def __init__(self, settings: JudgeSettings):
        from openai import OpenAI

        key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        self.settings = settings
        self.client = OpenAI(base_url=settings.base_url, api_key=key or "none", timeout=settings.timeout_s,
                             max_retries=0)  # fmt: skip

    def ask(self, prompt: str) -> str:
        """One chat request, as s1's sampler sent it (one user message), retried with backoff."""
        s = self.settings
        for attempt in range(s.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=s.model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=s.temperature,
                    max_tokens=s.max_tokens,
                )
                return (response.choices[0].message.content or "").strip()
            except Exception as err:  # the client's errors: connection, status, timeout
                if attempt == s.max_retries:
                    raise JudgeError(f"judge {s.model} at {s.base_url}: {err}") from None
                time.sleep(min(2**attempt, 30))
        raise AssertionError("unreachable")

    def verdict(self, kind: str, gold: str, answer: str, question: str = "") -> JudgeVerdict:
        """s1's verdict on one answer (the text after the end of thinking)."""
        read = s1_extract(answer)
        if kind == "choice":
            if read in ("a", "b", "c", "d"):
                read = read.upper()
            reply = None
            if read not in ("A", "B", "C", "D"):
                reply = self.ask(CHOICE_LETTER % {"expression1": choice_question(question), "expression2": read})
                read = reply
            if read not in ("A", "B", "C", "D"):
                read = "A"  # s1 counts an unreadable choice as "A"
            return JudgeVerdict(read == gold, read, reply is not None, reply)
        truth = str(int(gold)) if gold.isdigit() else gold
        if read.isdigit() and truth.isdigit():
            read = str(int(read))
            return JudgeVerdict(read == truth, read, False, None)
        reply = self.ask(MATH_INDEX % {"expression1": "['" + truth + "']", "expression2": read})
        if reply.isdigit() and int(reply) == 1:
            read = truth
        return JudgeVerdict(read == truth, read, True, reply)

    def verdicts(self, items: Sequence[tuple[str, str, str, str]]) -> list[JudgeVerdict]:
        """Verdicts for (kind, gold, answer, question) items, `concurrency` requests at a time."""
        with ThreadPoolExecutor(self.settings.concurrency) as pool:
            return list(pool.map(lambda item: self.verdict(*item), items))
