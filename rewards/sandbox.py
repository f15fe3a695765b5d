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

import ast
import builtins
import ctypes
import inspect
import json
import os
import re
import resource
import secrets
import select
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


# ---------------------------------------------------------------------------------------------------
# Code shared by the candidate and judge processes. These functions are sent as source text
# (inspect.getsource) to `python -c`, so they use only the standard library and each other.

def _wait(fd: int, deadline: float | None, write: bool = False) -> None:
    if deadline is not None:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([] if write else [fd], [fd] if write else [], [], wait)[write]:
            raise TimeoutError("sandbox deadline passed")


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        _wait(fd, deadline)
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline: float | None, limit: int) -> Any:
    size = int.from_bytes(_read_exact(fd, 4, deadline), "big")
    if size > limit:
        raise ValueError(f"message of {size} bytes is over the {limit}-byte limit")
    return json.loads(_read_exact(fd, size, deadline))


def _send(fd: int, obj: Any, deadline: float | None) -> None:
    data = json.dumps(obj).encode()
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        _wait(fd, deadline, write=True)
        try:
            view = view[os.write(fd, view[: 1 << 16]):]
        except BlockingIOError:
            continue


class _Opaque:
    """A value the candidate returned that is not plain data: equal to nothing but itself."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _encode(x: Any, depth: int = 0) -> Any:
    """Plain data to tagged JSON; lists are JSON arrays and every JSON object is one tag."""
    t = type(x)
    if depth > 200:
        return {"o": "too deep"}
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if abs(x) < 1 << 53 else {"x": hex(x)}
    if t is list:
        return [_encode(v, depth + 1) for v in x]
    tags = {tuple: "t", set: "s", frozenset: "f"}
    if t in tags:
        return {tags[t]: [_encode(v, depth + 1) for v in x]}
    if t is dict:
        return {"d": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in x.items()]}
    if t is bytes or t is complex:
        return {"b": x.hex()} if t is bytes else {"c": [x.real, x.imag]}
    for base in (bool, int, float, str, list, tuple, dict, set, frozenset, bytes, complex):
        if isinstance(x, base):  # subclasses (and numpy scalars that subclass float) as their base
            return _encode(base(x), depth + 1)
    if hasattr(x, "tolist") and hasattr(x, "dtype"):  # numpy arrays and scalars
        return _encode(x.tolist(), depth + 1)
    return {"o": t.__name__[:100]}


def _decode(x: Any, depth: int = 0) -> Any:
    """Tagged JSON back to plain data; anything unexpected raises ValueError."""
    if depth > 250:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [_decode(v, depth + 1) for v in x]
    if t is not dict or len(x) != 1:
        raise ValueError("malformed value")
    ((tag, v),) = x.items()
    scalars = {"o": _Opaque, "x": lambda h: int(h, 16), "b": bytes.fromhex}
    if tag in scalars and type(v) is str:
        return scalars[tag](v)
    if type(v) is not list:
        raise ValueError("malformed value")
    if tag == "c" and len(v) == 2:
        return complex(float(v[0]), float(v[1]))
    if tag == "d":
        return {_decode(k, depth + 1): _decode(val, depth + 1) for k, val in v}
    makers = {"t": tuple, "s": set, "f": frozenset}
    if tag in makers:
        return makers[tag](_decode(item, depth + 1) for item in v)
    raise ValueError(f"unknown tag {tag!r}")


def _check_statements(test: str, entry_point: str) -> tuple[str, bool, list[tuple[ast.stmt, bool]]]:
    """(name the candidate is bound to, whether the test defines check(), [(statement, is_check)]).

    With a ``check`` function its body statements are returned; otherwise the test's own top-level
    statements. A statement is a check when it holds an ``assert`` of something other than a constant.
    """
    tree = ast.parse(test)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    body = check.body if check is not None else tree.body
    param = check.args.args[0].arg if check is not None and check.args.args else entry_point

    def is_check(stmt: ast.stmt) -> bool:
        return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(stmt))

    statements = [(s, is_check(s)) for s in body]
    if check is not None and not any(flag for _, flag in statements):
        # a check() with no counted assert is one check: it passes when it runs without error
        call = ast.parse(f"check({param})").body[0]
        statements = [(call, True)]
    return param, check is not None, statements


def _block_sockets() -> None:
    import _socket
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("network access is disabled in the sandbox")

    for module in (socket, _socket):
        for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def _interpreter_paths() -> set[str]:
    return {os.path.realpath(p or ".") for p in (sys.prefix, sys.base_prefix, sys.executable, *sys.path)}


def _closed_dirs(paths: set[str]) -> dict[str, set[str]]:
    """Directories other users cannot enter -> their entries on ``paths``."""
    closed: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        for i in range(2, len(parts)):
            parent, child = "/".join(parts[:i]), "/".join(parts[: i + 1])
            if not os.path.isdir(child) or not os.stat(parent).st_mode & 0o001:
                if os.path.isdir(child):
                    closed.setdefault(parent, set()).add(child)
                break
    return closed


def _private_mounts(libc: Any, workdir: str, workdir_options: str) -> bool:
    """In a fresh mount namespace: keep the interpreter reachable for an unprivileged uid (a tmpfs over
    e.g. a 0700 /root holding only the needed entries), hide the shared scratch directories (other users'
    files and unix sockets) behind empty ones, put a size-capped tmpfs on the working directory, and make
    every other mount read-only."""
    ms_rdonly, ms_remount, ms_bind, ms_move, ms_rec, ms_private = 1, 32, 4096, 8192, 16384, 1 << 18
    keep = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return False
    paths = _interpreter_paths()
    for parent, children in _closed_dirs(paths).items():
        stashes = []
        for k, child in enumerate(sorted(children)):
            stash = os.path.join(workdir, f".stash{k}")
            os.mkdir(stash)
            if libc.mount(child.encode(), stash.encode(), None, ms_bind | ms_rec, None) != 0:
                return False
            stashes.append((stash, child))
        if libc.mount(b"tmpfs", parent.encode(), b"tmpfs", 2 | 4, b"mode=0755,size=64k") != 0:
            return False
        for stash, child in stashes:
            os.makedirs(child, mode=0o755)
            if libc.mount(stash.encode(), child.encode(), None, ms_move, None) != 0:
                return False
            os.rmdir(stash)
    for shared in ("/tmp", "/var/tmp", "/run", "/dev/shm"):
        needed = any(p == shared or p.startswith(shared + "/") for p in paths)
        if os.path.isdir(shared) and not needed and libc.mount(
                b"tmpfs", shared.encode(), b"tmpfs", 2 | 4 | 8, b"mode=0755,size=64k") != 0:
            return False
    os.makedirs(workdir, exist_ok=True)  # in the empty /tmp
    if libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", 2 | 4, workdir_options.encode()) != 0:
        return False
    root_ok = False
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:  # fields[4]: mount point (octal escapes), fields[5]: its flags
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == workdir:
            continue
        flags = ms_remount | ms_bind | ms_rdonly | sum(keep.get(o, 0) for o in fields[5].split(","))
        done = libc.mount(None, point.encode(), None, flags, None) == 0
        root_ok = root_ok or (point == "/" and done)
    return root_ok


def _confine(cfg: dict, source: str) -> list[str]:
    """Runs first in the candidate process, before its program is read. Returns what was set up."""
    notes: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    netns = cfg["network_namespace"] and libc.unshare(0x40000000) == 0  # CLONE_NEWNET
    notes.append("net: empty network namespace" if netns else "net: sockets blocked in-process")
    if libc.unshare(0x08000000) == 0:  # CLONE_NEWIPC: SysV shared memory dies with the candidate
        notes.append("ipc: private namespace")
    uid = cfg["uid"]
    wd_options = f"size={cfg['workdir_mb']}m,mode=0700,uid={uid},gid={uid}"
    if uid is not None and libc.unshare(0x00020000) == 0 and _private_mounts(libc, cfg["workdir"], wd_options):
        notes.append(f"fs: read-only, shared scratch dirs hidden, workdir a {cfg['workdir_mb']} MiB tmpfs")
        os.chdir(cfg["workdir"])  # the old cwd still points into the now read-only mount
        with open(cfg["program_path"], "w") as f:  # the file on disk is now hidden by the tmpfs
            f.write(source)
        os.chown(cfg["program_path"], uid, uid)
    elif uid is not None and _closed_dirs(_interpreter_paths()):
        raise PermissionError("Python lies in a directory other users cannot enter, and no mount namespace "
                              "is available to expose it: install it where all users can read it")
    else:
        notes.append("fs: file permissions only")
    nproc = cfg["max_processes"]
    if uid is None:  # RLIMIT_NPROC counts all processes of this user
        nproc += sum(1 for p in os.listdir("/proc") if p.isdigit() and _owner(p) == os.getuid())
    r = resource
    limits = [(r.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1), (r.RLIMIT_AS, cfg["memory"], cfg["memory"]),
              (r.RLIMIT_NPROC, nproc, nproc), (r.RLIMIT_FSIZE, cfg["max_file"], cfg["max_file"]),
              (r.RLIMIT_NOFILE, 256, 256), (r.RLIMIT_CORE, 0, 0)]
    for which, soft, hard in limits:
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as e:
            notes.append(f"limit {which} not set: {e}")
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot raise privileges
    os.umask(0o077)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        notes.append(f"uid: {uid}")
    if not netns:
        _block_sockets()
    return notes


def _owner(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:  # the process just ended
        return -1


def _candidate_main(cfg: dict) -> None:
    """Untrusted side: loads the program, then answers calls until the pipe closes."""
    rfd, wfd = cfg["rfd"], cfg["wfd"]
    try:
        with open(cfg["program_path"]) as f:
            source = f.read()
        notes = _confine(cfg, source)
    except BaseException as e:  # never run the program unconfined
        _send(wfd, {"isolation": [f"FATAL: confinement failed: {type(e).__name__}: {e}"]}, None)
        os._exit(3)
    _send(wfd, {"isolation": notes}, None)
    namespace: dict[str, Any] = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(source, "candidate.py", "exec"), namespace)
    except BaseException as e:
        _send(wfd, {"load_error": f"{type(e).__name__}: {e}"[:500]}, None)
        os._exit(0)
    names = [k for k, v in list(namespace.items()) if callable(v) and not k.startswith("__")]
    _send(wfd, {"ready": names[:1000]}, None)
    while True:
        try:
            request = _recv(rfd, None, cfg["max_reply"])
        except BaseException:
            os._exit(0)
        try:
            fn = namespace[request["call"]]
            value = fn(*_decode(request["args"]), **_decode(request["kwargs"]))
            reply = {"ok": _encode(value)}
        except BaseException as e:
            reply = {"error": [type(e).__name__, str(e)[:500]]}
        _send(wfd, reply, None)


def _judge_main(cfg: dict) -> None:
    """Trusted side: runs the test code itself and prints the verdict as JSON on stdout."""
    spec = json.loads(sys.stdin.buffer.read())
    rfd, wfd, deadline, limit = cfg["rfd"], cfg["wfd"], cfg["deadline"], cfg["max_reply"]
    for fd in (rfd, wfd):
        os.set_blocking(fd, False)
    param, has_check, statements = _check_statements(spec["test"], spec["entry_point"])
    checks = [False] * sum(flag for _, flag in statements)
    out: dict[str, Any] = {"checks": checks, "timed_out": False, "load_error": None, "isolation": []}
    state = {"alive": True}

    def proxy(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not state["alive"]:
                raise RuntimeError("the candidate process is gone")
            try:
                _send(wfd, {"call": name, "args": _encode(list(args)), "kwargs": _encode(dict(kwargs))}, deadline)
                reply = _recv(rfd, deadline, limit)
                if "ok" in reply:
                    return _decode(reply["ok"])
                kind, message = str(reply["error"][0]), str(reply["error"][1])
            except TimeoutError:
                state["alive"], out["timed_out"] = False, True
                raise
            except Exception as e:
                state["alive"] = False
                raise RuntimeError(f"the candidate process failed: {type(e).__name__}") from None
            error = getattr(builtins, kind, None)  # so a test may catch e.g. ValueError from the candidate
            raise (error if isinstance(error, type) and issubclass(error, Exception) else RuntimeError)(message)

        return call

    try:
        out["isolation"] = [str(n) for n in _recv(rfd, deadline, limit)["isolation"]]
        hello = _recv(rfd, deadline, limit)
        if "load_error" in hello:
            out["load_error"], state["alive"] = str(hello["load_error"]), False
        names = [str(n) for n in hello.get("ready", [])]
    except TimeoutError:
        out["timed_out"], state["alive"], names = True, False, []
    except Exception as e:
        out["load_error"], state["alive"], names = f"the candidate process died while loading ({e})", False, []
    if state["alive"]:
        namespace: dict[str, Any] = {"__name__": "__judge__"}
        for code in (spec.get("prompt") or "", spec["test"] if has_check else ""):
            try:  # the prompt's helpers (e.g. encode_cyclic) come from the problem, not the candidate
                exec(compile(code, "<problem>", "exec"), namespace)
            except Exception:
                pass
        for name in names:  # only names the problem lacks: never builtins such as abs or len
            if name not in namespace and not hasattr(builtins, name):
                namespace[name] = proxy(name)
        namespace[spec["entry_point"]] = namespace[param] = proxy(spec["entry_point"])
        index = 0
        for statement, is_check in statements:
            try:
                exec(compile(ast.Module(body=[statement], type_ignores=[]), "<check>", "exec"), namespace)
                ok = state["alive"]
            except BaseException:
                ok = False
            if is_check:
                checks[index], index = ok, index + 1
    sys.stdout.write(json.dumps(out))


_SHARED = (_wait, _read_exact, _recv, _send, _Opaque, _encode, _decode)
_IMPORTS = "import ast, builtins, ctypes, json, os, re, resource, select, sys, time\nfrom typing import Any\n"


def _script(main: Any, *helpers: Any) -> str:
    parts = [_IMPORTS] + [inspect.getsource(obj) for obj in (*_SHARED, *helpers, main)]
    return "\n\n".join(parts) + f"\n\n{main.__name__}(json.loads(sys.argv[1]))\n"


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
        self._candidate_script = _script(_candidate_main, _block_sockets, _interpreter_paths, _closed_dirs,
                                         _private_mounts, _owner, _confine)
        self._judge_script = _script(_judge_main, _check_statements)

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
        return sum(flag for _, flag in _check_statements(test, entry_point)[2])
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
