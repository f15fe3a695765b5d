"""Server faults (issue 19, section 5), with the engine attached to local servers on 127.0.0.1: a server killed
mid-search (its finished problems stay on disk, the error names the server and what to do, and a second
server or a rerun completes the run with every problem exactly once), slow and hung servers (bounded retries
under a configurable read timeout, then a one-line error), and concurrent clients (no response goes to another
request: request ids are checked). The servers are tests/fake_openai_server.py, in threads or, to be killed,
in processes of their own, always stopped by PID; every wait is bounded."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_openai_server import FakeServer, answer_reply, prompt_key
from scripted_engine import CharTokenizer
from twinloop.infer.openai_engine import OpenAIEngine
from twinloop.infer.search import majority
from twinloop.infer.search._common import Budget, Problem, SearchConfig, last_boxed

from twinloop.cli import main as cli
from twinloop.contracts import EngineError, Request, SamplingConfig

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_openai_server.py"
POLICY = REPO / "checkpoints" / "tiny-arith-policy"  # its tokenizer only: the fake servers do the generating
N_PROBLEMS = 8


def spawn(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """A fake server in a process of its own; returns it and its URL (waits at most 20 s)."""
    port_file = tmp_path / f"server-{time.monotonic_ns()}.url"
    proc = subprocess.Popen([sys.executable, str(FAKE), str(port_file), *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail("fake server did not start")
        time.sleep(0.05)
    return proc, port_file.read_text()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def eval_argv(out: Path, servers: str, *extra: str) -> list[str]:
    return ["eval", "--checkpoint", str(POLICY), "--task", "arith", "--methods", "greedy", "--budgets", "1",
            "--n_problems", str(N_PROBLEMS), "--batch", "1", "--reward", "none", "--servers", servers,
            "--server_timeout", "5", "--server_retries", "1", "--out", str(out), "--no_plot", *extra]


def rows(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1, err
    return err[0]


def test_a_server_killed_mid_search_keeps_finished_problems_and_a_rerun_completes(tmp_path, capsys):
    out = tmp_path / "run"
    dying, url = spawn(tmp_path, "--die-after", "3")  # the process exits when the 4th completion arrives
    second = None
    try:
        assert cli(eval_argv(out, url)) == 2
        line = error_line(capsys)
        assert url in line and "every engine failed" in line and "connection failed" in line
        assert "restart the server or pass another --servers URL, then rerun the same command" in line
        assert dying.poll() is not None  # it really died
        kept = (out / "results.jsonl").read_text()
        assert [r["problem_id"] for r in rows(out)] == [f"arith-test-{i}" for i in range(3)]  # finished ones kept
        second, url2 = spawn(tmp_path)
        capsys.readouterr()
        assert cli(eval_argv(out, url2)) == 0  # the rerun on another server finishes only the rest
        after = (out / "results.jsonl").read_text()
        assert after.startswith(kept)
        ids = [r["problem_id"] for r in rows(out)]
        assert sorted(ids) == sorted(f"arith-test-{i}" for i in range(N_PROBLEMS)) and len(ids) == N_PROBLEMS
        assert {r["answer"] for r in rows(out)} <= {str(k) for k in range(1_000_003)}  # the fake's own answers
    finally:
        stop(dying)
        if second is not None:
            stop(second)


def test_with_a_second_server_the_run_completes_despite_the_kill(tmp_path, capsys):
    out = tmp_path / "run"
    dying, url = spawn(tmp_path, "--die-after", "2")
    healthy, url2 = spawn(tmp_path)
    try:
        assert cli(eval_argv(out, f"{url},{url2}")) == 0
        got = rows(out)
        ids = sorted(r["problem_id"] for r in got)
        assert ids == sorted(f"arith-test-{i}" for i in range(N_PROBLEMS))  # each exactly once
        assert dying.poll() is not None and {r["shard"] for r in got} == {0, 1}
        assert sum(r["shard"] == 0 for r in got) <= 2  # the dead server finished at most what it answered
    finally:
        stop(dying)
        stop(healthy)


def test_a_hung_server_fails_after_bounded_retries_under_the_read_timeout():
    hung = FakeServer(answer_reply, delay=60.0)  # answers after a minute: effectively hung
    try:
        engine = OpenAIEngine(hung.url, CharTokenizer(), read_timeout=0.5, retries=1, backoff=0.1)
        t = time.monotonic()
        with pytest.raises(EngineError) as e:
            engine.generate([Request(prompt_ids=[5, 6])], SamplingConfig(max_tokens=4))
        waited = time.monotonic() - t
        msg = str(e.value)
        assert "\n" not in msg and hung.url in msg and "after 2 tries" in msg
        assert "no reply within 0.5s (read timeout)" in msg
        assert waited < 15  # 2 tries x 0.5 s + 0.1 s backoff, not the server's minute
        assert hung.completions == 2  # exactly the bounded number of tries reached it
    finally:
        hung.close()


def test_a_slow_server_within_the_timeout_is_fine_and_eval_takes_the_timeout_option(tmp_path, capsys):
    slow = FakeServer(answer_reply, delay=0.3)
    try:
        engine = OpenAIEngine(slow.url, CharTokenizer(), read_timeout=10.0, retries=0)
        (result,) = engine.generate([Request(prompt_ids=[7, 8, 9])], SamplingConfig(max_tokens=4))
        assert result.completions[0].text == f"\\boxed{{{prompt_key([7, 8, 9])}}}"
        slow.delay = 30.0
        out = tmp_path / "run"
        t = time.monotonic()
        assert cli(eval_argv(out, slow.url, "--server_timeout", "0.4", "--server_retries", "0")) == 2
        line = error_line(capsys)
        assert "no reply within 0.4s (read timeout)" in line and slow.url in line
        assert time.monotonic() - t < 60 and rows(out) == []
    finally:
        slow.close()


def test_four_concurrent_search_clients_get_their_own_responses():
    server = FakeServer(answer_reply, delay=0.01)
    failures: list[str] = []

    def client(c: int) -> None:
        try:
            engine = OpenAIEngine(server.url, CharTokenizer(), read_timeout=30.0, max_concurrency=8)
            requests = [Request(prompt_ids=[c, i, 40 + c * i]) for i in range(12)]
            for req, res in zip(requests, engine.generate(requests, SamplingConfig(n=2, max_tokens=8))):
                want = f"\\boxed{{{prompt_key(req.prompt_ids)}}}"
                if res.prompt_ids != req.prompt_ids or {x.text for x in res.completions} != {want}:
                    failures.append(f"client {c}: {req.prompt_ids} got {[x.text for x in res.completions]}")
            problems = [Problem([100 + c, i], {"answer": "0"}, id=f"c{c}-{i}") for i in range(6)]
            results = majority.run(problems, engine, None, Budget(n=4),
                                   SearchConfig(answer_fn=last_boxed, max_tokens=8))
            for p, r in zip(problems, results):
                if r.answer != str(prompt_key(p.prompt)):
                    failures.append(f"client {c}: search on {p.prompt} answered {r.answer}")
        except Exception as e:  # noqa: BLE001 - reported below with the client's number
            failures.append(f"client {c}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        assert failures == []
        assert server.completions >= 4 * (12 + 6)
    finally:
        server.close()


def test_a_response_to_another_request_is_refused():
    """The request-id check is live: a server (or proxy) that hands out the previous request's response."""
    mixed = FakeServer(answer_reply, mixup=True)
    try:
        engine = OpenAIEngine(mixed.url, CharTokenizer(), retries=0)
        engine.generate([Request(prompt_ids=[1])], SamplingConfig(max_tokens=4))  # the first gets its own
        with pytest.raises(EngineError, match="responses are mixed up") as e:
            engine.generate([Request(prompt_ids=[2])], SamplingConfig(max_tokens=4))
        assert mixed.url in str(e.value)
    finally:
        mixed.close()
