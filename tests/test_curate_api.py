"""The teacher's API path against a loopback server that times out, fails and talks garbage."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
from transformers import AutoTokenizer

from curate.api import ApiSettings, BadReply, chat_all, parse_reply
from curate.cache import CallCache
from curate.schema import POOL_FEATURES, CurateError
from curate.traces import TracesSettings, traces
from tests.conftest import tokenizer_dir


class FlakyServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 whose behaviour per question is scripted.

    A question containing SLOW-n sleeps past the client's timeout on its first n calls, 503-n
    answers HTTP 503 n times, GARBAGE-n answers non-JSON n times, BROKEN always answers JSON
    without choices, REFUSE answers HTTP 400, TRICKLE sends a good reply a byte every 0.1 s (never
    idle for a whole read timeout) and HUGE sends a good reply of 20 kB. A judge prompt gets YES when
    the question holds SOLVED, a domain prompt gets 11 for a question about primes, else 51. Anything
    else gets a reply with reasoning.
    `max_in_flight` counts the requests a client is waiting on at once.
    The server stops itself after `lifetime_s`, whatever happens to the test.
    """

    def __init__(self, lifetime_s: float = 300.0):
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with server.lock:
                    count = server.calls[question] = server.calls.get(question, 0) + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.answer(question, count)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def answer(self, question: str, count: int):
                def scripted(tag: str) -> bool:
                    for word in question.split():
                        if word.startswith(tag + "-") and count <= int(word.split("-")[1]):
                            return True
                    return False

                time.sleep(0.05)
                if scripted("SLOW"):
                    with server.lock:  # the client abandons this one at its timeout: not in flight for it
                        server.in_flight -= 1
                    time.sleep(1.5)
                    with server.lock:
                        server.in_flight += 1
                    return self.send(200, b'{"too": "late"}')
                if scripted("503"):
                    return self.send(503, b"overloaded")
                if scripted("GARBAGE"):
                    return self.send(200, b"<html>not json")
                if "BROKEN" in question:
                    return self.send(200, b'{"choices": []}')
                if "REFUSE" in question:
                    return self.send(400, b'{"error": "bad request"}')
                if "TRICKLE" in question or "HUGE" in question:
                    message = {"role": "assistant", "content": "x" * (20_000 if "HUGE" in question else 60)}
                    reply = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
                    return self.send(200, reply.encode(), trickle="TRICKLE" in question)
                message = {"role": "assistant", "reasoning_content": f"Let me think about: {question}",
                           "content": "The answer is \\boxed{42}."}  # fmt: skip
                if "YES or NO" in question:  # the difficulty stage's judge
                    message = {"role": "assistant", "content": "YES" if "SOLVED" in question else "NO."}
                elif "two-digit code" in question:  # the LLM domain classifier
                    message = {"role": "assistant", "content": "11" if "prime" in question else "Class 51."}
                reply = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
                return self.send(200, json.dumps(reply).encode())

            def send(self, status: int, payload: bytes, trickle: bool = False):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    if not trickle:
                        return self.wfile.write(payload)
                    for i in range(len(payload)):
                        self.wfile.write(payload[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.1)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.timer = threading.Timer(lifetime_s, self.stop)
        self.timer.daemon = True
        self.timer.start()

    def stop(self):
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    flaky = FlakyServer()
    yield flaky
    flaky.stop()


def settings(url: str, **overrides) -> ApiSettings:
    values = dict(base_url=url, model="teacher", api_key_env=None, concurrency=3, timeout_s=0.5, max_retries=2,
                  backoff_s=0.01, max_backoff_s=0.05)  # fmt: skip
    values.update(overrides)
    return ApiSettings(**values)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_retries_recover_and_failures_are_recorded(server, tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    questions = ["plain one", "SLOW-1 then fine", "503-2 then fine", "GARBAGE-1 then fine", "503-9 always down",
                 "BROKEN reply", "REFUSE me", "plain two", "SLOW-9 always slow"]  # fmt: skip
    results = chat_all(settings(server.url), [ask(q) for q in questions], cache)
    by_question = dict(zip(questions, results, strict=True))
    for q in ("plain one", "SLOW-1 then fine", "503-2 then fine", "GARBAGE-1 then fine", "plain two"):
        assert by_question[q].error == "" and by_question[q].reasoning == f"Let me think about: {q}"
        assert by_question[q].content == "The answer is \\boxed{42}."
    assert by_question["SLOW-1 then fine"].attempts == 2
    assert by_question["503-2 then fine"].attempts == 3
    assert by_question["503-9 always down"].error == "failed after 3 tries: HTTP 503"
    assert by_question["SLOW-9 always slow"].error == "failed after 3 tries: timed out after 0.5 s"
    assert by_question["BROKEN reply"].error == "failed after 3 tries: bad reply: reply has no choices[0].message"
    assert by_question["REFUSE me"].error.startswith("HTTP 400") and by_question["REFUSE me"].attempts == 1
    assert server.calls["503-9 always down"] == 3  # bounded: 1 + max_retries
    assert server.max_in_flight <= 3

    # A rerun sends only what failed; successes come from the cache.
    before = dict(server.calls)
    again = chat_all(settings(server.url), [ask(q) for q in questions], cache)
    assert [r.content for r in again] == [r.content for r in results]
    assert all(again[i].cached for i, r in enumerate(results) if not r.error)
    sent = {q for q in questions if server.calls[q] != before[q]}
    assert sent == {q for q, r in by_question.items() if r.error}
    cache.close()


def test_a_call_ends_at_its_deadline_and_at_its_size_bound(server, tmp_path):
    """A trickle never trips the per-read timeout_s (0.5 s); only the call's deadline ends it."""
    cache = CallCache(tmp_path / "calls.sqlite")
    start = time.monotonic()
    trickle, huge, plain = chat_all(
        settings(server.url, deadline_s=1.0, max_reply_bytes=10_000),
        [ask("TRICKLE slowly"), ask("HUGE reply"), ask("plain one")],
        cache,
    )
    assert time.monotonic() - start < 3.0  # the whole reply would take over 10 s
    assert trickle.error == "deadline_s=1 passed in try 1" and trickle.attempts == 1
    assert huge.error == "reply larger than max_reply_bytes=10000" and server.calls["HUGE reply"] == 1
    assert plain.error == "" and plain.content == "The answer is \\boxed{42}."
    for bad in ({"deadline_s": 0}, {"deadline_s": "10"}, {"max_reply_bytes": 1.5}, {"max_reply_bytes": True}):
        with pytest.raises(CurateError, match=next(iter(bad))):
            settings(server.url, **bad)
    cache.close()


def test_reply_parsing():
    think = parse_reply({"choices": [{"message": {"content": "<think>\nstep 1\n</think>\n\nFinal: 3"}}]})
    assert (think.reasoning, think.content) == ("step 1", "Final: 3")
    with pytest.raises(BadReply, match="empty"):
        parse_reply({"choices": [{"message": {"content": None}}]})
    with pytest.raises(BadReply, match="not text"):
        parse_reply({"choices": [{"message": {"content": 3}}]})


def test_traces_stage_over_the_api_counts_tokens_and_keeps_failures(server, tmp_path):
    rows = [{"id": f"t:{i}", "question": q, "solution": "", "answer": "", "kind": "math", "letters": "",
             "source": "t", "cot_type": "math", "metadata": "{}"}
            for i, q in enumerate(["What is 6 times 7?", "503-9 no", "GARBAGE-1 What is 40 + 2?"])]  # fmt: skip
    data = datasets.Dataset.from_list(rows, features=POOL_FEATURES)
    cache = CallCache(tmp_path / "calls.sqlite")
    stage = TracesSettings(api=settings(server.url), target_tokenizer=str(tokenizer_dir("qwen2.5")))
    out, info = traces(data, stage, cache)
    assert out["thinking_trajectories"][0] == ["Let me think about: What is 6 times 7?"]
    trace = "Let me think about: What is 6 times 7?"
    qwen = AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5"))
    assert out["trace_tokens"][0] == len(qwen.encode(trace, add_special_tokens=False)) == 13  # not chars, not words
    assert out["thinking_trajectories"][1] == [] and out["trace_error"][1] == "teacher failed after 3 tries: HTTP 503"
    assert out["attempt"][2] == "The answer is \\boxed{42}."
    assert info["failures"] == 1 and info["called"] == 3
    cache.close()


def test_traces_from_the_pools_metadata_call_no_teacher(tmp_path):
    metas = [{"trace": "6 times 7 is 42.", "attempt": "42"}, {"trace": "", "attempt": ""}, {"other": 1}]
    rows = [{"id": f"m:{i}", "question": "What is 6 times 7?", "solution": "", "answer": "", "kind": "math",
             "letters": "", "source": "m", "cot_type": "math", "metadata": json.dumps(meta)}
            for i, meta in enumerate(metas)]  # fmt: skip
    data = datasets.Dataset.from_list(rows, features=POOL_FEATURES)
    cache = CallCache(tmp_path / "calls.sqlite")
    stage = TracesSettings(from_metadata={"trace": "trace", "attempt": "attempt"},
                           target_tokenizer=str(tokenizer_dir("qwen2.5")))  # fmt: skip
    out, info = traces(data, stage, cache)
    assert out["thinking_trajectories"] == [["6 times 7 is 42."], [], []] and out["attempt"][0] == "42"
    assert out["trace_error"][1:] == ["the pool row has no trace"] * 2 and out["trace_tokens"][0] > 0
    assert info["failures"] == 2 and info["called"] == 0 and info["teacher"] == "pool metadata"
    with pytest.raises(CurateError, match="exactly one teacher"):
        TracesSettings(from_metadata={"trace": "t", "attempt": "a"}, api=settings("http://x"), target_tokenizer="t")
    with pytest.raises(CurateError, match="from_metadata must map"):
        TracesSettings(from_metadata={"trace": "t"}, target_tokenizer="t")
    cache.close()


@pytest.mark.slow
def test_judge_and_llm_domain_classifier_over_the_api(s1_model_dir, server, tmp_path):
    """Questions with no gold a rule can use go to the judge; `method: llm` domains come from the API."""
    from curate.difficulty import DifficultySettings, difficulty
    from curate.domains import DomainSettings, domains
    from curate.generation import ModelSpec

    questions = ["Prove that SOLVED holds for all n.", "Prove there are infinitely many primes.", "What is 2+2?"]
    rows = [{"id": f"t:{i}", "question": q, "solution": "A proof.", "answer": "4" if i == 2 else "", "kind": "math",
             "letters": "", "source": "t", "cot_type": "math", "metadata": "{}"}
            for i, q in enumerate(questions)]  # fmt: skip
    data = datasets.Dataset.from_list(rows, features=POOL_FEATURES)
    cache = CallCache(tmp_path / "calls.sqlite")
    tiny = ModelSpec(name="tiny", model=str(s1_model_dir), dtype="float32", max_thinking_tokens=4, max_tokens=12)
    stage = DifficultySettings(models=[tiny], judge=settings(server.url), grading={"workers": 1})
    out, info = difficulty(data, stage, cache)
    # The judge sees the whole prompt (question, solution, the model's answer): SOLVED only in the first.
    assert out["drop_reason"] == ["solved: by tiny", "", ""]
    assert json.loads(out["reference_correct"][1]) == {"tiny": False}
    assert info["models"]["tiny"]["answers_generated"] == 3 and info["judge_failures"] == 0
    labelled, _ = domains(data, DomainSettings(method="llm", api=settings(server.url)), cache)
    assert labelled["domain"] == ["51", "11", "51"] and labelled["domain_name"][1] == "Number theory"
    cache.close()
