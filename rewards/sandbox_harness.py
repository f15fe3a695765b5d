"""Code that runs inside the sandbox's two processes: the candidate (untrusted program, answers calls)
and the judge (runs the test code, prints the verdict); see rewards/sandbox.py for the design.

Neither process imports this module: ``candidate_script()`` and ``judge_script()`` send the functions
as source text (inspect.getsource) to ``python -I -B -c``, so nothing here has to be reachable from
inside the candidate's mount namespace, and every function uses only the standard library and the
others in this file (no imports of the package, no module state besides ``_SHARED`` and ``_IMPORTS``).
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
import select
import sys
import time
from typing import Any


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
        if not os.path.isdir(shared) or shared in paths:
            continue
        # the interpreter may live under a scratch dir (a checkout in /tmp): hide the rest, keep its entry
        keep_entries = sorted({shared + "/" + p[len(shared) + 1:].split("/")[0] for p in paths
                               if p.startswith(shared + "/")})
        held = [(entry, os.open(entry, os.O_PATH)) for entry in keep_entries if os.path.isdir(entry)]
        if libc.mount(b"tmpfs", shared.encode(), b"tmpfs", 2 | 4 | 8, b"mode=0755,size=64k") != 0:
            return False
        for entry, fd in held:  # bind the held directory back through its fd, the old path being hidden
            os.makedirs(entry, mode=0o755, exist_ok=True)
            ok = libc.mount(f"/proc/self/fd/{fd}".encode(), entry.encode(), None, ms_bind | ms_rec, None) == 0
            os.close(fd)
            if not ok:
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


def candidate_script() -> str:
    """Source for ``python -c`` of the candidate process: confine, load the program, answer calls."""
    return _script(_candidate_main, _block_sockets, _interpreter_paths, _closed_dirs, _private_mounts, _owner,
                   _confine)


def judge_script() -> str:
    """Source for ``python -c`` of the judge process: run the test code, print the verdict as JSON."""
    return _script(_judge_main, _check_statements)


def check_statements(test: str, entry_point: str) -> tuple[str, bool, list[tuple[ast.stmt, bool]]]:
    """The judge's reading of ``test`` (see ``_check_statements``), for counting checks outside it."""
    return _check_statements(test, entry_point)
