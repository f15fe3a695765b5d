"""Server faults against `twinloop eval --servers` (issue 19, section 5): servers on 127.0.0.1 are killed, hung
(SIGSTOP) and restarted mid-run, and four clients share one server; every fault is counted with the results it
lost (missing or doubled JSONL rows) and the one-line error it gave.

- kill one of two: a server is SIGKILLed once rows are on disk; the run must finish on the other (rc 0);
- hang: the only server is SIGSTOPped mid-run; the run must stop within (retries + 1) x (5 s connect +
  --server_timeout) plus backoff, naming the server; after SIGCONT a rerun finishes only the rest;
- kill the only one: the run stops naming the server; a rerun on a freshly started server finishes the rest;
- concurrency: 4 client threads x 24 prompts at once; each completion must equal what the same prompt
  gets alone (greedy) and carry its own request id.

``--backend fake`` uses tests/fake_openai_server.py processes (seconds); ``--backend vllm`` real vLLM servers
of the shipped tiny policy (minutes of CPU: run it under the heavy-job lock).

    python bench/server_faults.py --backend vllm --out /tmp/server-faults
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "checkpoints" / "tiny-arith-policy"
TWINLOOP = [sys.executable, "-c", "import sys; from twinloop.cli import main; sys.exit(main())"]
TIMEOUT, RETRIES = 3.0, 1
# each try waits at most the connect timeout (5 s: a stopped server's full listen backlog) plus the read timeout
BOUND_S = (RETRIES + 1) * (5.0 + TIMEOUT) + 0.5 * (2**RETRIES - 1)


class Server:
    """One server process (its own session), stopped by PID."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend, self.engine = backend, None
        if backend == "vllm":
            from twinloop.infer.openai_engine import OpenAIEngine

            self.engine = OpenAIEngine.start(str(POLICY), max_model_len=512, dtype="float32")
            self.pid, self.url = self.engine.pid, self.engine.base_url
            return
        port_file = folder / f"fake-{time.monotonic_ns()}.url"
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_openai_server.py"), str(port_file),
                                      "--delay", "0.05"], start_new_session=True, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        self.pid, self.url = self.proc.pid, port_file.read_text()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self.signal(signal.SIGCONT)
        if self.engine is not None:
            self.engine.close()
        else:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def _argv(out: Path, servers: str, n: int) -> list[str]:
    return [*TWINLOOP, "eval", "--checkpoint", str(POLICY), "--task", "arith", "--methods", "greedy", "--budgets",
            "1", "--n_problems", str(n), "--batch", "2", "--reward", "none", "--max_tokens", "32", "--servers",
            servers, "--server_timeout", str(TIMEOUT), "--server_retries", str(RETRIES), "--out", str(out),
            "--no_plot"]


def _rows(out: Path) -> list[str]:
    path = out / "results.jsonl"
    return [line for line in path.read_text().splitlines() if line.endswith("}")] if path.exists() else []


def _eval(out: Path, servers: str, n: int, fault: Any = None, after_rows: int = 4) -> dict[str, Any]:
    """One `twinloop eval` run; ``fault()`` is applied once ``after_rows`` rows are on disk."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(_argv(out, servers, n), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    faulted_at, at_fault = None, None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if fault is not None and faulted_at is None and len(_rows(out)) >= after_rows:
            fault()
            faulted_at, at_fault = time.monotonic(), len(_rows(out))
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    err = proc.stderr.read()
    proc.wait()
    line = next((x for x in err.splitlines() if "error:" in x), "")
    return {"rc": proc.returncode, "faulted": faulted_at is not None, "rows_at_fault": at_fault,
            "seconds_after_fault": None if faulted_at is None else round(time.monotonic() - faulted_at, 1),
            "error": line}


def _tally(out: Path, n: int) -> dict[str, int]:
    keys = [json.loads(r)["problem_id"] for r in _rows(out)]
    return {"rows": len(keys), "missing": n - len(set(keys)), "doubled": len(keys) - len(set(keys))}


def concurrency(url: str, clients: int = 4, prompts: int = 24) -> dict[str, Any]:
    from twinloop.infer.openai_engine import OpenAIEngine
    from twinloop.train.common import load_tokenizer

    from twinloop.contracts import Request, SamplingConfig

    tok = load_tokenizer(str(POLICY))
    sampling = SamplingConfig(n=1, max_tokens=16, temperature=0.0)  # vLLM refuses n > 1 when greedy
    reqs = {c: [Request(messages=[{"role": "user", "content": f"What is {c + 3} + {i * 7}?"}])
                for i in range(prompts)] for c in range(clients)}
    alone = OpenAIEngine(url, tok)
    reference = {c: [r.completions[0].text for r in alone.generate(reqs[c], sampling)] for c in reqs}
    got: dict[int, Any] = {}

    def client(c: int) -> None:
        try:
            got[c] = [[x.text for x in r.completions] for r in OpenAIEngine(url, tok).generate(reqs[c], sampling)]
        except Exception as e:  # noqa: BLE001 - counted below
            got[c] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=client, args=(c,)) for c in reqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    errors = [v for v in got.values() if isinstance(v, str)]
    texts = [(c, i, text) for c, v in got.items() if not isinstance(v, str)
             for i, both in enumerate(v) for text in both]
    others = {(c, i): {t for d, refs in reference.items() for j, t in enumerate(refs) if (d, j) != (c, i)}
              for c in reference for i in range(prompts)}
    # another prompt's completion is a mix-up; a text of no prompt is numeric drift of batched greedy decoding
    mixed = sum(t != reference[c][i] and t in others[(c, i)] for c, i, t in texts)
    drift = sum(t != reference[c][i] and t not in others[(c, i)] for c, i, t in texts)
    return {"clients": clients, "requests": clients * prompts, "completions": len(texts), "mixed": mixed,
            "drift": drift, "errors": errors, "distinct_references": len({t for v in reference.values() for t in v})}


def _save(out: Path, report: dict[str, Any]) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1))


def run(backend: str, out: Path, n: int = 24) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    report: dict[str, Any] = {"backend": backend, "problems": n}
    try:
        a, b = Server(backend, out), Server(backend, out)
        servers += [a, b]
        r = _eval(out / "kill-one-of-two", f"{a.url},{b.url}", n, lambda: a.signal(signal.SIGKILL))
        report["kill_one_of_two"] = {**r, **_tally(out / "kill-one-of-two", n)}
        _save(out, report)  # finished scenarios stay on disk if a later one fails

        r = _eval(out / "hang", b.url, n, lambda: b.signal(signal.SIGSTOP))
        b.signal(signal.SIGCONT)
        kept = _rows(out / "hang")
        again = _eval(out / "hang", b.url, n)
        report["hang"] = {**r, "rows_kept": len(kept), "kept_intact": _rows(out / "hang")[:len(kept)] == kept,
                          "rerun_rc": again["rc"], "bound_s": BOUND_S, **_tally(out / "hang", n)}
        _save(out, report)  # finished scenarios stay on disk if a later one fails

        r = _eval(out / "kill-only", b.url, n, lambda: b.signal(signal.SIGKILL))
        kept = _rows(out / "kill-only")
        c = Server(backend, out)
        servers.append(c)
        again = _eval(out / "kill-only", c.url, n)
        report["kill_only_then_new_server"] = {**r, "rows_kept": len(kept), "rerun_rc": again["rc"],
                                               "kept_intact": _rows(out / "kill-only")[:len(kept)] == kept,
                                               **_tally(out / "kill-only", n)}
        _save(out, report)
        report["concurrency"] = concurrency(c.url)
        _save(out, report)
    finally:
        for s in servers:
            s.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["fake", "vllm"], default="fake")
    parser.add_argument("--out", default="runs/server-faults")
    parser.add_argument("--n-problems", type=int, default=24)
    args = parser.parse_args()
    report = run(args.backend, Path(args.out), args.n_problems)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
