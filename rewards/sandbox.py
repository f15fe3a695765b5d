"""Code-execution reward for HumanEval-style problems, run in a sandbox.

One completion = two processes, each in its own process group (``start_new_session=True``):
- the *candidate* process loads the untrusted program and only answers calls ("call f with these
  arguments"), sending values back as tagged JSON;
- the *judge* process runs the test code itself, statement by statement, and rebuilds the candidate's
  values as plain data (int, float, str, list, tuple, dict, set, ...), so a forged ``__eq__`` never
  reaches an assertion; the prompt's helpers (e.g. ``encode_cyclic``) and builtins stay its own. Its
  verdict goes to our pipe, out of the candidate's reach: ``os._exit(0)``, ``sys.exit(0)``, patched
  builtins or printed "passed" lines only make the candidate's own calls fail.

The candidate process confines itself before reading the program:
- network: ``unshare(CLONE_NEWNET)``, an empty namespace; where not permitted, sockets are blocked
  inside the process (best effort); a private IPC namespace too, so SysV segments die with it;
- files (as root): ``unshare(CLONE_NEWNS)``; every mount read-only; /tmp, /var/tmp, /run and /dev/shm
  replaced by empty ones (no other users' files or unix sockets); the working directory a size-capped
  tmpfs (removed afterwards); a directory closed to others on the interpreter's path (a 0700 /root
  holding pyenv) replaced by a tmpfs exposing only the needed entries;
- limits: RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core, NO_NEW_PRIVS;
- user: RLIMIT_NPROC is per user and root ignores it, so as root each candidate gets a fresh
  unprivileged uid: the limit holds, and afterwards ``kill -KILL -1`` run as that uid ends every
  process of it, even ones that left the group with ``setsid``. Without root the caller's uid is kept
  with RLIMIT_NPROC = its current process count + the limit, and only the process group is killed;
- environment: only PATH, HOME/TMPDIR (the working directory), LANG and single-thread settings.
A wall-clock deadline covers loading and all checks; then both process groups are killed.
The code of both processes lives in sandbox_harness.py; this module starts, limits and reaps them.

Soft reward: the fraction of checks passed. A check is a top-level statement of ``check(candidate)``
holding an ``assert`` of a non-constant (``assert True`` does not count; a loop of asserts is one).
Test code without ``check`` is read as top-level asserts on the entry point (MBPP style).
``binary=True`` gives pass/fail; ``pass_fail`` and ``outcomes`` give the details.

Columns (HumanEval names): ``test``, ``entry_point``, optional ``code_prompt`` or ``prompt``: code to
prepend (TRL never forwards ``prompt``; without them, the positional prompt or the fenced block in it,
when that is Python). A completion (plain or chat, maybe fenced) that continues the prompt is appended
to it; one defining the entry point goes after it. No code, or no compiling program: 0.0, unparseable.
"""
# ruff: noqa: BLE001, S102, S110 - a sandbox must catch every failure of the code it runs
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .base import RewardBase, column, message_text
from .sandbox_harness import candidate_script, check_statements, judge_script


@dataclass
class SandboxLimits:
    """Per-candidate limits. All values are [check] defaults."""

    timeout_s: float = 10.0  # wall clock for loading the program and running every check
    cpu_s: int = 10  # RLIMIT_CPU of the candidate process
    memory_mb: int = 2048  # RLIMIT_AS of the candidate process
    max_processes: int = 16  # RLIMIT_NPROC (processes and threads) of the candidate's uid
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file the candidate may write
    workdir_mb: int = 64  # size of the working directory's tmpfs (as root)
    max_reply_mb: int = 16  # largest value the candidate may return in one call


@dataclass
class ExecutionOutcome:
    """What the judge saw for one program."""

    passed: int
    total: int
    timed_out: bool = False
    error: str | None = None  # load error of the program, or why it was not run
    wall_s: float = 0.0
    isolation: list[str] = field(default_factory=list)  # what the candidate process reported it set up
    uid: int | None = None
    pgid: int | None = None
    workdir: str | None = None

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


_UID_BASE, _UID_SPAN = 1_500_000_000, 1 << 24  # fresh uids far above any real account


class Sandbox:
    """Runs programs against test code with the isolation described in the module docstring."""

    def __init__(self, limits: SandboxLimits | None = None, workers: int | None = None,
                 network_namespace: bool = True, python: str = sys.executable) -> None:
        self.limits = limits or SandboxLimits()
        self.workers = workers or min(32, 2 * (os.cpu_count() or 1))  # [check]
        self.network_namespace = network_namespace  # False: only the in-process socket block
        self.python = python
        self._kill = shutil.which("kill", path="/usr/bin:/bin") or ""
        self.as_root = os.geteuid() == 0 and bool(self._kill)  # fresh uids need root and kill(1)
        self._uids: set[int] = set()
        self._lock = threading.Lock()
        self._candidate_script = candidate_script()
        self._judge_script = judge_script()

    def run_many(self, jobs: Sequence[dict[str, str]]) -> list[ExecutionOutcome]:
        """Each job: program, test, entry_point and optional prompt. At most ``workers`` run at once."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda job: self.run(**job), jobs))

    def run(self, program: str, test: str, entry_point: str, prompt: str = "") -> ExecutionOutcome:
        start, lim = time.monotonic(), self.limits
        uid = self._take_uid() if self.as_root else None
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="twinloop-sandbox-"))
        pipes = [*os.pipe(), *os.pipe()]  # judge->candidate (r, w), candidate->judge (r, w)
        procs: list[subprocess.Popen] = []
        outcome = ExecutionOutcome(0, 0, uid=uid, workdir=workdir)
        try:
            path = os.path.join(workdir, "candidate.py")
            with open(path, "w") as f:
                f.write(program)
            if uid is not None:
                os.chown(workdir, uid, uid)
                os.chown(path, uid, uid)
            cfg = {"rfd": pipes[0], "wfd": pipes[3], "uid": uid, "workdir": workdir, "program_path": path,
                   "network_namespace": self.network_namespace, "cpu_s": lim.cpu_s,
                   "memory": lim.memory_mb << 20, "max_processes": lim.max_processes,
                   "max_file": lim.max_file_mb << 20, "workdir_mb": lim.workdir_mb, "max_reply": lim.max_reply_mb << 20}
            judge_cfg = {"rfd": pipes[2], "wfd": pipes[1], "max_reply": cfg["max_reply"],
                         "deadline": time.monotonic() + lim.timeout_s}
            procs.append(self._spawn(["-I", "-B", self._candidate_script, cfg], workdir, subprocess.DEVNULL))
            procs.append(self._spawn(["-I", "-B", self._judge_script, judge_cfg], "/", subprocess.PIPE))
            outcome.pgid = procs[0].pid
            while pipes:
                os.close(pipes.pop())
            spec = json.dumps({"test": test, "entry_point": entry_point, "prompt": prompt}).encode()
            try:
                stdout, stderr = procs[1].communicate(spec, timeout=lim.timeout_s + 5.0)
            except subprocess.TimeoutExpired:
                _kill_group(procs[1].pid)
                stdout, stderr = procs[1].communicate()
                outcome.timed_out = True
            _read_verdict(outcome, stdout, stderr, test, entry_point)
        finally:
            while pipes:
                os.close(pipes.pop())
            for proc in procs:
                _kill_group(proc.pid)
            try:
                if uid is not None:
                    self._kill_uid(uid)
                for proc in procs:
                    proc.wait()
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            with self._lock:
                self._uids.discard(uid)
        if outcome.error and outcome.error.startswith("FATAL"):  # the sandbox, not the candidate, failed
            raise RuntimeError(f"code sandbox: {outcome.error}")
        outcome.wall_s = time.monotonic() - start
        return outcome

    def _spawn(self, args: list[Any], cwd: str, pipe: int) -> subprocess.Popen:
        *flags, script, cfg = args
        return subprocess.Popen([self.python, *flags, "-c", script, json.dumps(cfg)], cwd=cwd,
                                env=_clean_env(cwd), stdin=pipe, stdout=pipe, stderr=pipe,
                                pass_fds=(cfg["rfd"], cfg["wfd"]), start_new_session=True)

    def _take_uid(self) -> int:
        with self._lock:
            while (uid := _UID_BASE + secrets.randbelow(_UID_SPAN)) in self._uids:
                pass
            self._uids.add(uid)
            return uid

    def _kill_uid(self, uid: int) -> None:
        """kill(-1) sent as ``uid`` reaches every process of that uid, even ones that left the group."""
        for _ in range(2):  # the first round may race with a fork; the second finds it
            subprocess.run([self._kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[], env={},
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30, check=False)


def _read_verdict(outcome: ExecutionOutcome, stdout: bytes, stderr: bytes, test: str, entry: str) -> None:
    try:
        verdict = json.loads(stdout)
        checks, timed_out, error = verdict["checks"], verdict["timed_out"], verdict["load_error"]
        isolation = [str(note) for note in verdict["isolation"]]
    except (ValueError, KeyError, TypeError):
        outcome.total = count_checks(test, entry)
        outcome.error = f"judge failed: {stderr.decode(errors='replace')[-300:]}"
        return
    outcome.total, outcome.passed = len(checks), sum(c is True for c in checks)
    outcome.timed_out, outcome.isolation = outcome.timed_out or bool(timed_out), isolation
    fatal = [note for note in isolation if note.startswith("FATAL")]
    outcome.error = "; ".join(fatal) if fatal else error


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _clean_env(home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def count_checks(test: str, entry_point: str) -> int:
    """How many checks ``test`` holds (see the module docstring). Raises ValueError if it does not parse."""
    try:
        return sum(flag for _, flag in check_statements(test, entry_point)[2])
    except SyntaxError as e:
        raise ValueError(f"test code does not parse: {e}") from None


_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL | re.MULTILINE)


def extract_code(text: str, entry_point: str = "") -> str:
    """The code in a completion: the fenced block defining ``entry_point``, else the first python (or
    unlabelled) fenced block, else the whole text. Fences open at a line start; an unclosed one runs to
    the end."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3", "")]
    python = python or [body for _, body in blocks]
    if entry_point:
        defining = re.compile(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
        for body in python:
            if defining.search(body):
                return body
    return python[0]


def build_program(code: str, prefix: str, entry_point: str) -> str | None:
    """The program to run, or None when it has no code or does not compile."""
    if not code.strip():
        return None
    defines = re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)
    if defines:
        program = (prefix.rstrip() + "\n\n\n" if prefix.strip() else "") + code
    else:  # a function body continuing the prompt, as in HumanEval's own harness
        program = prefix + code
    try:
        compile(program, "candidate.py", "exec")
    except Exception:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError
        return None
    return program


class CodeExecutionReward(RewardBase):
    """TRL-signature reward: the fraction of test checks passed (``binary=True``: 1.0 only if all pass)."""

    name = "code_execution"

    def __init__(self, sandbox: Sandbox | None = None, binary: bool = False) -> None:
        super().__init__()
        self.sandbox = sandbox or Sandbox()
        self.binary = binary

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        outcomes = self.outcomes(prompts, completions, **columns)
        if self.binary:
            return [float(o.all_passed) for o in outcomes]
        return [o.fraction for o in outcomes]

    def pass_fail(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[bool]:
        return [o.all_passed for o in self.outcomes(prompts, completions, **columns)]

    def outcomes(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[ExecutionOutcome]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        n = len(completions)
        tests = column(columns, ["test"], n)
        entries = column(columns, ["entry_point"], n)
        if any(columns.get(name) is not None for name in ("code_prompt", "prompt")):
            prefixes = [str(p) for p in column(columns, ["code_prompt", "prompt"], n)]
        else:  # the prompt itself, or the code block inside it, when that is Python
            codes = [extract_code(message_text(p), str(e)) for p, e in zip(prompts, entries)]
            prefixes = [c if build_program(c, "", "") else "" for c in codes]
        totals = [count_checks(str(t), str(e)) for t, e in zip(tests, entries)]
        outcomes: list[ExecutionOutcome | None] = [None] * n
        jobs, where = [], []
        for i, completion in enumerate(completions):
            entry = str(entries[i])
            program = build_program(extract_code(message_text(completion), entry), prefixes[i], entry)
            if program is None:
                self.usage.unparseable += 1
                outcomes[i] = ExecutionOutcome(0, totals[i], error="unparseable: no code that compiles")
            else:
                jobs.append({"program": program, "test": str(tests[i]), "entry_point": entry, "prompt": prefixes[i]})
                where.append(i)
        for i, outcome in zip(where, self.sandbox.run_many(jobs)):
            outcomes[i] = outcome
        return [o for o in outcomes if o is not None]
