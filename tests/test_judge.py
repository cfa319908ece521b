"""s1's LLM-judge grading against a local OpenAI-compatible server (a fake judge in a thread).

The fake judge answers as a careful grader would on these few cases, and records every request, so
the tests see what reaches an endpoint: s1's prompt, its settings, one user message.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evals.judge import Judge, JudgeSettings, choice_question, s1_extract
from evals.judge_prompts import CHOICE_LETTER, CHOICE_QUESTION, MATH_INDEX
from tests.conftest import SHARED

# The prompts as simplescaling/s1@77272c6 has them (aime/utils.py:37, gpqa/openai/utils.py:36 and 13).
DIGESTS = {
    "MATH_INDEX": "f7aa42f471b68fe4d5f809bc00430d36c9f0942c331a706a3353df5cc4ec383d",
    "CHOICE_LETTER": "77e32e64c079e649b99645270d814ce5016ceb00014e470ae587a4db4bb8a61c",
    "CHOICE_QUESTION": "a6e6a06172bb4620934eeb311a269e8129747b766a6630567082c3c785117e4e",
}
SAME = {("\\text{Evelyn}", "Evelyn"), ("\\text{Navin}", "it is navin"), ("\\frac{14}{3}", "14/3")}


class FakeJudge(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append(body)
        prompt = body["messages"][-1]["content"]
        attempt = prompt.rsplit("Attempt: ", 1)[1].strip()
        if "Options:" in prompt.rsplit("YOUR TASK", 1)[1]:
            option = re.search(r"Options: \['(.*)'\]", prompt.rsplit("YOUR TASK", 1)[1]).group(1)
            reply = "1" if (option, attempt) in SAME or option == attempt else "-1"
        else:
            reply = {"Elephant": "B", "the second one": "B"}.get(attempt, "-1")
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": reply}}]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_prompts_are_s1s_byte_for_byte():
    for name, text in (("MATH_INDEX", MATH_INDEX), ("CHOICE_LETTER", CHOICE_LETTER),
                       ("CHOICE_QUESTION", CHOICE_QUESTION)):  # fmt: skip
        assert hashlib.sha256(text.encode()).hexdigest() == DIGESTS[name], name
    assert MATH_INDEX.startswith("Look at the following attempt by a student and extract the student's answer.")
    assert MATH_INDEX.endswith("    Options: %(expression1)s\n    Attempt: %(expression2)s")


def test_s1s_reading_and_the_judge_verdicts(endpoint):
    judge = Judge(JudgeSettings(base_url=endpoint, api_key_env=""))
    FakeJudge.requests.clear()
    assert s1_extract("so \\boxed{14/3}. Answer: 5") == "14/3" and s1_extract("Answer: Evelyn") == "Evelyn"
    # Digits against digits: s1's integer rule, no request.
    assert judge.verdict("math", "023", "Answer: 23") == judge.verdict("math", "23", "\\boxed{023}")
    assert judge.verdict("math", "23", "\\boxed{023}").correct and not FakeJudge.requests
    evelyn = judge.verdict("math", "\\text{Evelyn}", "The winner is Evelyn.\nAnswer: Evelyn")
    assert (evelyn.correct, evelyn.asked, evelyn.reply, evelyn.extracted) == (True, True, "1", "\\text{Evelyn}")
    assert not judge.verdict("math", "\\frac{14}{3}", "\\boxed{4.66}").correct
    sent = FakeJudge.requests[0]
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.5 and sent["max_tokens"] == 1024
    assert sent["messages"] == [
        {"role": "user", "content": MATH_INDEX % {"expression1": "['\\text{Evelyn}']", "expression2": "Evelyn"}}
    ]
    question = "Which animal is largest?\n\nA) Dinosaur\nB) Elephant\nC) Cat\nD) Dog"
    assert choice_question(question) == (
        "Which animal is largest?\nAnswer Choices:\n(A) Dinosaur\n(B) Elephant\n(C) Cat\n(D) Dog"
    )
    assert judge.verdict("choice", "B", "Answer: b") == judge.verdict("choice", "B", "\\boxed{B}")
    picked = judge.verdict("choice", "B", "Answer: Elephant", question)
    assert (picked.correct, picked.asked, picked.extracted) == (True, True, "B")
    assert FakeJudge.requests[-1]["messages"][0]["content"] == CHOICE_LETTER % {
        "expression1": choice_question(question), "expression2": "Elephant"}  # fmt: skip
    assert judge.verdict("choice", "C", "no idea", question).extracted == "A"  # s1's default letter


def test_an_eval_run_with_the_judge_records_it_in_every_sample(endpoint, s1_model_dir, tmp_path):
    """A real run on the tiny model, graded by s1's rules and the judge. The model's own answers are noise,
    so a fixed answer stands in for the model's (math-verify rejects "Evelyn" against "\\text{Evelyn}"
    as "not equivalent" text only when it cannot parse it; the judge accepts it, as s1 did)."""
    from evals import run
    from evals.recipe import recipe_from_dict

    rows = tmp_path / "q.jsonl"
    rows.write_text(json.dumps({"id": "e", "problem": "Who won?", "answer": "\\text{Evelyn}"}) + "\n"
                    + json.dumps({"id": "n", "problem": "How many?", "answer": "12"}) + "\n")  # fmt: skip
    base = {"model": str(s1_model_dir), "format": "s1", "benchmarks": [{"name": "q", "path": str(rows)}],
            "methods": [{"method": "budget_forcing", "budgets": [4]}], "max_tokens": 24, "max_answer_tokens": 8,
            "instruction": {"math": ""}, "sampling": {"temperature": 0}, "dtype": "float32",
            "grading": {"workers": 1}}  # fmt: skip
    plain = run(recipe_from_dict({**base, "output_dir": str(tmp_path / "plain")}), progress=False)
    judged = run(recipe_from_dict({**base, "output_dir": str(tmp_path / "judged"),
                                   "judge": {"base_url": endpoint, "api_key_env": ""}}), progress=False)  # fmt: skip
    off = [json.loads(line) for line in (plain / "samples.jsonl").read_text().splitlines()]
    on = [json.loads(line) for line in (judged / "samples.jsonl").read_text().splitlines()]
    assert all(r["judge"] is None for r in off)
    for r in on:
        assert r["judge"]["model"] == "gpt-4o-mini" and r["judge"]["base_url"] == endpoint
        assert r["correct"] == r["judge"]["correct"] and "math_verify_correct" in r
        assert r["settings"]["judge"]["model"] == "gpt-4o-mini"  # a resume with another judge is refused
    words = {r["problem_id"]: r for r in on}
    assert words["e"]["judge"]["asked"] or s1_extract(words["e"]["answer"]).isdigit()
    assert not words["n"]["judge"]["asked"] or not s1_extract(words["n"]["answer"]).isdigit()


def test_the_judge_catches_a_verdict_math_verify_gets_wrong(endpoint):
    """math-verify cannot read "it is navin" as `\\text{Navin}` and marks a right answer wrong; s1's judge
    (one of the examples in its own prompt) accepts it."""
    from evals import Answer, Grader

    text = "So the one who wins is Navin.\nAnswer: it is navin"
    with Grader(workers=1).start() as grader:
        (plain,) = grader.grade([Answer("math", "\\text{Navin}", text)])
    judge = Judge(JudgeSettings(base_url=endpoint, api_key_env=""))
    judged = judge.verdict("math", "\\text{Navin}", text)
    assert plain.correct is False and judged.correct is True and judged.asked


def test_bad_judge_settings_are_refused():
    from evals.recipe import RecipeError, recipe_from_dict

    base = {"model": "m", "output_dir": "o", "benchmarks": [{"name": "q", "path": str(SHARED / "x.jsonl")}],
            "methods": [{"method": "budget_forcing", "budgets": [4]}]}  # fmt: skip
    with pytest.raises(RecipeError, match="judge.base_url must be an http"):
        recipe_from_dict({**base, "judge": {"base_url": "localhost:8000"}}, "r.yaml")
    with pytest.raises(RecipeError, match="judge: .*unexpected keyword"):
        recipe_from_dict({**base, "judge": {"base_url": "http://h/v1", "temprature": 0}}, "r.yaml")
