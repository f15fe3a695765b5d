"""Code-execution reward for HumanEval-style problems, run in a sandbox.

Threat model: the program is hostile. It may try to forge a pass, read the answers (dataset files,
the tests, the project's source), reach the network, write outside its working directory, read the
caller's secrets, signal or outlive its run, or exhaust memory, processes or disk. Root and non-root
callers get the same isolation, built from unprivileged Linux namespaces (``unshare(2)`` through ctypes,
the equivalent of ``unshare --user --map-root-user --pid --net --mount --ipc --uts --fork``); see
sandbox_isolation.py for the processes and the minimal read-only root they see.
- **Fail closed:** the first run probes the isolation; where it cannot be set up (user namespaces
  disabled, say) the reward raises a one-line error naming the cause and ``allow_unsafe_execution``.
  That switch (off by default) runs programs with resource limits only.
- **Two processes** in the sandbox: the *candidate* loads the program and only answers calls, sending
  values back as tagged JSON; the *judge* runs the dataset's test code and rebuilds the candidate's
  values as plain data, so a forged ``__eq__`` never reaches an assertion. The candidate sits in a
  nested user and PID namespace: it cannot name, signal or trace the judge, and never holds the
  tests (they arrive after it forked) or the verdict's descriptor.
- **Authenticated verdict:** the judge's verdict carries a per-run nonce the candidate never had,
  and must hold exactly as many checks as the host counts in the test code; anything else scores 0.
  Only the harness's status pipe, closed before untrusted code runs, can declare a sandbox failure.
- **Limits** ([check] defaults in ``SandboxLimits``): wall clock for setup, loading and every check;
  memory: RLIMIT_AS per process plus a host-side watch of the summed resident memory of all the run's
  processes (no cgroup: it is not delegated to non-root users here); processes: RLIMIT_NPROC, counted
  per user namespace so it holds for a non-root caller too; CPU; file size; a size-capped tmpfs for
  /tmp and the working directory; the largest value per call.
- Afterwards the whole PID namespace dies with its first process, ``setsid`` escapees included.

Soft reward: the fraction of checks passed. A check is a top-level statement of ``check(candidate)``
holding an ``assert`` of a non-constant (``assert True`` does not count; a loop of asserts is one).
Test code without ``check`` is read as top-level asserts on the entry point (MBPP style).
``binary=True`` gives pass/fail; ``pass_fail`` and ``outcomes`` give the details.

Columns (HumanEval names): ``test``, ``entry_point``, optional ``code_prompt`` or ``prompt``: code to
prepend (TRL never forwards ``prompt``; without them, the positional prompt or the fenced block in it,
when that is Python). A completion (plain or chat, maybe fenced) that continues the prompt is appended
to it; one defining the entry point goes after it. No code, or no compiling program: 0.0, unparseable.
"""
from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .base import RewardBase, column, message_text
from .sandbox_harness import check_statements, launcher_script
from .sandbox_isolation import SETUP_FAILED, launch_config, package_dirs, runnable_python
from .sandbox_programs import build_program, extract_code

__all__ = ["CodeExecutionReward", "ExecutionOutcome", "Sandbox", "SandboxError", "SandboxLimits",
           "build_program", "count_checks", "extract_code"]


@dataclass
class SandboxLimits:
    """Per-run limits. All values are [check] defaults."""

    timeout_s: float = 10.0  # wall clock for setup, loading the program and running every check
    cpu_s: int = 10  # RLIMIT_CPU of each candidate process
    memory_mb: int = 2048  # RLIMIT_AS per process, and the cap on the run's summed resident memory
    max_processes: int = 16  # RLIMIT_NPROC (processes and threads) in the candidate's user namespace
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file the candidate may write
    workdir_mb: int = 64  # size of each tmpfs: /tmp and the working directory
    max_reply_mb: int = 16  # largest value the candidate may return in one call

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")


class SandboxError(RuntimeError):
    """The sandbox itself failed (never the program it ran): isolation missing or its setup broke."""


@dataclass
class ExecutionOutcome:
    """What the judge saw for one program."""

    passed: int
    total: int
    timed_out: bool = False
    error: str | None = None  # load error of the program, or why it was not run or scored
    wall_s: float = 0.0
    isolation: list[str] = field(default_factory=list)  # what was set up
    pid: int | None = None  # the run's first process, on the host

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total


_UID_BASE, _UID_SPAN = 1_500_000_000, 1 << 24  # fresh uids for root callers, far above any real account
ISOLATION = ["user, mount, pid, net, ipc and uts namespaces", "minimal read-only root", "nested candidate namespaces",
             "rlimits", "summed-memory watch"]


class Sandbox:
    """Runs programs against test code with the isolation described in the module docstring.

    ``packages`` names installed packages the programs may import (bound read-only into the sandbox);
    ``allow_unsafe_execution=True`` runs programs without isolation where it cannot be set up.
    """

    def __init__(self, limits: SandboxLimits | None = None, workers: int | None = None,
                 packages: Sequence[str] = (), allow_unsafe_execution: bool = False,
                 python: str | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.workers = workers or min(32, 2 * (os.cpu_count() or 1))  # [check]
        self.packages = tuple(packages)
        self.allow_unsafe_execution = allow_unsafe_execution
        self.python = python or runnable_python()
        self._package_dirs = package_dirs(list(self.packages))
        self._script = launcher_script()
        self._unavailable: str | None = None  # why isolation cannot be set up; "" once probed fine
        self._probe_lock = threading.Lock()
        self._watch = _MemoryWatch()

    @property
    def isolated(self) -> bool:
        """Whether programs run isolated (probes on first use; raises when closed and unsafe is off)."""
        return self._isolation_mode()

    def run_many(self, jobs: Sequence[dict[str, str]]) -> list[ExecutionOutcome]:
        """Each job: program, test, entry_point and optional prompt. At most ``workers`` run at once."""
        self._isolation_mode()
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda job: self.run(**job), jobs))

    def run(self, program: str, test: str, entry_point: str, prompt: str = "") -> ExecutionOutcome:
        return self._run(program, test, entry_point, prompt, self._isolation_mode())

    def _isolation_mode(self) -> bool:
        with self._probe_lock:
            if self._unavailable is None:
                self._unavailable = self._probe()
        if not self._unavailable:
            return True
        if self.allow_unsafe_execution:
            warnings.warn(f"code sandbox: running untrusted code WITHOUT isolation ({self._unavailable})",
                          RuntimeWarning, stacklevel=3)
            return False
        raise SandboxError(f"code sandbox: cannot isolate untrusted code ({self._unavailable}); pass "
                           "allow_unsafe_execution=True to run it without isolation, at your own risk")

    def _probe(self) -> str:
        try:
            outcome = self._run("def f():\n    return 1\n", "assert f() == 1\n", "f", "", True)
        except SandboxError as e:
            return str(e).removeprefix("code sandbox: ")
        return "" if outcome.all_passed else f"a trivial program failed in the sandbox: {outcome.error}"

    def _run(self, program: str, test: str, entry_point: str, prompt: str, isolate: bool) -> ExecutionOutcome:
        start, lim = time.monotonic(), self.limits
        expected = count_checks(test, entry_point)
        outcome = ExecutionOutcome(0, expected, isolation=list(ISOLATION) if isolate else ["rlimits only"])
        nonce = secrets.token_hex(16)
        host_workdir = None if isolate else os.path.realpath(tempfile.mkdtemp(prefix="twinloop-sandbox-"))
        fresh_uid = _UID_BASE + secrets.randbelow(_UID_SPAN) if isolate and _host_root() else None
        cfg = launch_config(lim, host_workdir or "/sandbox", self._package_dirs, fresh_uid, isolate,
                            self.python)
        status_r, status_w = os.pipe()
        cfg["status_fd"] = status_w
        judge = {"test": test, "entry_point": entry_point, "prompt": prompt, "nonce": nonce,
                 "deadline": start + lim.timeout_s, "max_reply": lim.max_reply_mb << 20}
        frames = b"".join(_frame(x) for x in ({"program": program}, judge))
        proc = None
        try:
            proc = subprocess.Popen([self.python, "-I", "-S", "-B", "-c", self._script, json.dumps(cfg)],
                                    cwd="/", env=_clean_env(isolate, host_workdir), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(status_w,),
                                    start_new_session=True)
            os.close(status_w)
            status_w = -1
            outcome.pid = proc.pid
            self._watch.add(proc.pid, lim.memory_mb << 20)
            try:
                stdout, stderr = proc.communicate(frames, timeout=lim.timeout_s + 2.0)
            except subprocess.TimeoutExpired:
                _kill(proc)
                stdout, stderr = proc.communicate()
                outcome.timed_out = True
        finally:
            if status_w >= 0:
                os.close(status_w)
            if proc is not None:
                _kill(proc)
                proc.wait()
                if self._watch.remove(proc.pid):
                    outcome.error = f"memory limit: the run's processes held over {lim.memory_mb} MiB"
            status = _read_all(status_r)
            os.close(status_r)
            if host_workdir:
                shutil.rmtree(host_workdir, ignore_errors=True)
        if status.startswith("error:") and proc is not None and proc.returncode == SETUP_FAILED:
            raise SandboxError(f"code sandbox: {status.removeprefix('error:').strip()}")
        if status == "ok":
            _read_verdict(outcome, stdout, nonce, expected)
        elif not outcome.error:
            outcome.error = f"the sandbox did not start: {stderr.decode(errors='replace')[-300:]}"
        outcome.wall_s = time.monotonic() - start
        return outcome


def _host_root() -> bool:
    """Root of the host's own user namespace: only it may map a fresh uid (root inside a rootless
    container maps its own uid, like any non-root caller)."""
    try:
        with open("/proc/self/uid_map") as f:
            return os.geteuid() == 0 and f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def _read_verdict(outcome: ExecutionOutcome, stdout: bytes, nonce: str, expected: int) -> None:
    """Accepts only the judge's verdict: the run's nonce and exactly ``expected`` boolean checks."""
    try:
        verdict = json.loads(stdout)
        if verdict["nonce"] == nonce and "harness_error" in verdict:  # before any test code ran
            raise SandboxError(f"code sandbox: {str(verdict['harness_error'])[:500]}")
        checks = verdict["checks"]
        valid = (verdict["nonce"] == nonce and type(checks) is list and len(checks) == expected
                 and all(type(c) is bool for c in checks))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        outcome.error = outcome.error or "no valid verdict (the judge died or its output was not authentic)"
        return
    outcome.passed = sum(checks)
    outcome.timed_out = outcome.timed_out or verdict.get("timed_out") is True
    load_error = verdict.get("load_error")
    outcome.error = outcome.error or (str(load_error)[:500] if load_error else None)


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj).encode()
    return len(data).to_bytes(4, "big") + data


def _read_all(fd: int, limit: int = 1 << 16) -> str:
    chunks: list[bytes] = []
    os.set_blocking(fd, False)
    while sum(map(len, chunks)) < limit and select.select([fd], [], [], 1.0)[0]:
        try:
            chunk = os.read(fd, limit)
        except BlockingIOError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _kill(proc: subprocess.Popen) -> None:
    """The first process and its group; with isolation, its PID namespace dies with it (PDEATHSIG)."""
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def _clean_env(isolate: bool, host_workdir: str | None) -> dict[str, str]:
    home = "/sandbox" if isolate else str(host_workdir)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": "/tmp" if isolate else home,
        "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


class _MemoryWatch:
    """Sums the resident memory of every process under each watched run and kills runs over budget.

    Processes stay under the run's first process: orphans are re-parented to PID 1 of the run's PID
    namespace, itself a child of the first process."""

    interval_s = 0.1  # [check]

    def __init__(self) -> None:
        self._budgets: dict[int, int] = {}
        self._exceeded: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._page = os.sysconf("SC_PAGE_SIZE")

    def add(self, pid: int, budget: int) -> None:
        with self._lock:
            self._budgets[pid] = budget
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sandbox-memory-watch", daemon=True)
                self._thread.start()

    def remove(self, pid: int) -> bool:
        """Stops watching; whether the run went over its budget."""
        with self._lock:
            self._budgets.pop(pid, None)
            exceeded = pid in self._exceeded
            self._exceeded.discard(pid)
            return exceeded

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                budgets = dict(self._budgets)
                if not budgets:
                    self._thread = None
                    return
            children, rss = _process_table()
            for root, budget in budgets.items():
                tree = _subtree(root, children)
                if sum(rss.get(p, 0) for p in tree) * self._page > budget:
                    with self._lock:
                        self._exceeded.add(root)
                    for pid in tree:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass


def _process_table() -> tuple[dict[int, list[int]], dict[int, int]]:
    """parent -> children, and resident pages, of every process on the host."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21])
    return children, rss


def _subtree(root: int, children: dict[int, list[int]]) -> list[int]:
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def count_checks(test: str, entry_point: str) -> int:
    """How many checks ``test`` holds (see the module docstring). Raises ValueError if it does not parse."""
    try:
        return sum(flag for _, flag in check_statements(test, entry_point)[2])
    except SyntaxError as e:
        raise ValueError(f"test code does not parse: {e}") from None


class CodeExecutionReward(RewardBase):
    """TRL-signature reward: the fraction of test checks passed (``binary=True``: 1.0 only if all pass)."""

    name = "code_execution"
    context_args = ("engine", "model", "tokenizer", "sandbox")  # a Sandbox object is built by the caller

    def __init__(self, sandbox: Sandbox | None = None, binary: bool = False, packages: Sequence[str] = (),
                 allow_unsafe_execution: bool = False) -> None:
        super().__init__()
        self.binary = binary
        self.packages = tuple(packages)  # installed packages the programs may import, e.g. ("numpy",)
        self.allow_unsafe_execution = allow_unsafe_execution  # off: refuse to run code without isolation
        self.sandbox = sandbox or Sandbox(packages=self.packages, allow_unsafe_execution=allow_unsafe_execution)

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
