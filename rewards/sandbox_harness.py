"""Code that runs inside the sandbox: the candidate (untrusted program, answers calls) and the judge
(runs the test code, returns the verdict); see rewards/sandbox.py for the design.

No sandbox process imports this module: ``launcher_script()`` sends these functions and those of
sandbox_isolation.py as source text (inspect.getsource) to ``python -I -S -B -c``, so nothing of the
package has to be reachable inside the sandbox's minimal root, and every function uses only the
standard library and the others sent along (no module state besides ``_SHARED`` and ``_IMPORTS``).
"""
# ruff: noqa: BLE001, S102, S110 - a sandbox must catch every failure of the code it runs
from __future__ import annotations

import ast
import builtins
import inspect
import json
import os
import select
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
    """Without a network namespace (``allow_unsafe_execution``), sockets are refused in-process."""
    import _socket
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("network access is disabled in the sandbox")

    for module in (socket, _socket):
        for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def _candidate_loop(source: str, rfd: int, wfd: int, max_reply: int) -> None:
    """Untrusted side, already confined: loads the program, then answers calls until the pipe closes."""
    namespace: dict[str, Any] = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        with open("candidate.py", "w") as f:  # for tracebacks and programs that read their own source
            f.write(source)
    except OSError:
        pass
    try:
        exec(compile(source, "candidate.py", "exec"), namespace)
    except BaseException as e:
        _send(wfd, {"load_error": f"{type(e).__name__}: {e}"[:500]}, None)
        os._exit(0)
    names = [k for k, v in list(namespace.items()) if callable(v) and not k.startswith("__")]
    _send(wfd, {"ready": names[:1000]}, None)
    while True:
        try:
            request = _recv(rfd, None, max_reply)
        except BaseException:
            os._exit(0)
        try:
            fn = namespace[request["call"]]
            value = fn(*_decode(request["args"]), **_decode(request["kwargs"]))
            reply = {"ok": _encode(value)}
        except BaseException as e:
            reply = {"error": [type(e).__name__, str(e)[:500]]}
        _send(wfd, reply, None)


def _judge(spec: dict, rfd: int, wfd: int) -> dict:
    """Trusted side: runs the test code itself; returns the verdict (checks, timed_out, load_error)."""
    deadline, limit = spec["deadline"], spec["max_reply"]
    for fd in (rfd, wfd):
        os.set_blocking(fd, False)
    param, has_check, statements = _check_statements(spec["test"], spec["entry_point"])
    checks = [False] * sum(flag for _, flag in statements)
    out: dict[str, Any] = {"checks": checks, "timed_out": False, "load_error": None}
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
        hello = _recv(rfd, deadline, limit)
        if "load_error" in hello:
            out["load_error"], state["alive"] = str(hello["load_error"])[:500], False
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
    return out


_SHARED = (_wait, _read_exact, _recv, _send, _Opaque, _encode, _decode, _check_statements, _block_sockets,
           _candidate_loop, _judge)
_IMPORTS = ("import ast, builtins, ctypes, json, os, platform, resource, select, signal, sys, time\n"
            "from typing import Any\n")


def launcher_script() -> str:
    """Source for ``python -I -S -B -c`` of the sandbox's first process (see sandbox_isolation.py)."""
    from . import sandbox_isolation as iso

    parts = [_IMPORTS] + [inspect.getsource(obj) for obj in _SHARED]
    parts += [f"{name} = {getattr(iso, name)!r}" for name in ("_CLONE", "_MS", "_SYSCALLS", "CANDIDATE_UID",
                                                            "SETUP_FAILED")]
    helpers = (iso.SetupError, iso._libc, iso._check, iso._mount, iso._write, iso._enter_outer_namespaces,
               iso._become_fresh_uid, iso._open_sources, iso._bind_read_only, iso._build_root, iso._drop_capabilities,
               iso._enter_candidate_namespaces, iso._owned, iso._set_limits, iso._keep_only_fds, iso._die_with_parent,
               iso._status, iso._read_frame, iso._init_main, iso._candidate_process, iso._launch_main)
    parts += [inspect.getsource(obj) for obj in helpers]
    return "\n\n".join(parts) + "\n\n_launch_main(json.loads(sys.argv[1]))\n"


def check_statements(test: str, entry_point: str) -> tuple[str, bool, list[tuple[ast.stmt, bool]]]:
    """The judge's reading of ``test`` (see ``_check_statements``), for counting checks outside it."""
    return _check_statements(test, entry_point)
