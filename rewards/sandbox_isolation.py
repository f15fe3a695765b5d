"""Isolation of one sandbox run with unprivileged Linux namespaces (no setuid helper, no root needed).

The host starts ``python -I -S -B -c <launcher_script()>``: process A. Like ``unshare --user
--map-root-user --pid --net --mount --ipc --uts --fork``, done here with ``unshare(2)`` through ctypes:
- A enters a new user, mount, PID, network, IPC and UTS namespace (ns1). A non-root caller maps its own
  uid to 0 in ns1; a root caller maps a fresh unprivileged uid instead (through a helper forked before
  the unshare, which keeps root's CAP_SETUID), so root and non-root callers get the same isolation.
- A forks B, PID 1 of the new PID namespace. B builds a minimal root on a tmpfs: the Python runtime
  (interpreter prefix with its ``site-packages`` hidden, /usr with ``dist-packages`` hidden), the
  packages the task names, a few /dev nodes, a size-capped /tmp and working directory; no /proc, /sys,
  /home, checkout or datasets. It pivots into it and detaches the host's tree.
- B forks the candidate, which closes every descriptor but its two pipes, enters a nested user, mount
  and PID namespace (uid 1000 there, every capability dropped, every mount locked read-only as
  inherited), sets its limits and only then reads its program. It cannot name the judge's process.
- B then leaves ns1's privileges (another user namespace) and runs the judge: the dataset's test code,
  in the same minimal root. The verdict goes to B's stdout, which the candidate never holds.
- When B exits, the kernel kills every process of its PID namespace, the candidate's double-forked
  ``setsid`` children included; B dies with A (PR_SET_PDEATHSIG), and the host kills A.
Setup failures go to a status pipe that B closes before any untrusted code runs: only this harness
can declare a sandbox failure. Every function here is sent as source (see sandbox_harness._script).
"""
# ruff: noqa: BLE001, S110 - a sandbox must catch every failure of the code it runs
from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import signal
import sys
from typing import Any

_CLONE = {"user": 0x10000000, "mount": 0x00020000, "pid": 0x20000000, "net": 0x40000000,
          "ipc": 0x08000000, "uts": 0x04000000}
_MS = {"rdonly": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "remount": 32, "bind": 4096, "rec": 16384,
       "private": 1 << 18, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}
CANDIDATE_UID = 1000  # the candidate's uid inside its own user namespace
SETUP_FAILED = 70  # exit status of A or B when the isolation could not be set up


class SetupError(Exception):
    """The isolation could not be set up; the message names the step and the kernel's reason."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    args = [None if s is None else s.encode() for s in (source, target, fstype)]
    _check(libc.mount(*args, flags, None if data is None else data.encode()), f"mount {target}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    except OSError as e:
        raise SetupError(f"write {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def _enter_outer_namespaces(cfg: dict) -> None:
    """Process A: new user/mount/PID/net/IPC/UTS namespaces, our uid 0 inside mapped as described."""
    libc = _libc()
    flags = sum(_CLONE[k] for k in ("user", "mount", "pid", "net", "ipc", "uts"))
    fresh = cfg.get("fresh_uid")
    if fresh is None:  # non-root: map our own uid and gid to 0
        uid, gid = os.geteuid(), os.getegid()
        _check(libc.unshare(flags), "unshare(user, mount, pid, net, ipc, uts)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
        return
    # root: a helper that stays outside (with CAP_SETUID there) maps a fresh uid; then we become it
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:
        os.close(ready_w)
        os.close(done_r)
        code = 1
        try:
            if os.read(ready_r, 1) == b"u":
                _write(f"/proc/{me}/uid_map", f"0 {fresh} 1")
                _write(f"/proc/{me}/gid_map", f"0 {fresh} 1")
                code = 0
        except BaseException as e:
            os.write(done_w, str(e).encode()[:300])
        os._exit(code)
    os.close(ready_r)
    os.close(done_w)
    try:
        _check(libc.unshare(flags), "unshare(user, mount, pid, net, ipc, uts)")
    finally:
        os.write(ready_w, b"u")
        os.close(ready_w)
    why = os.read(done_r, 400).decode(errors="replace")
    os.close(done_r)
    if os.waitpid(helper, 0)[1] != 0:
        raise SetupError(f"mapping a fresh uid: {why or 'helper failed'}")


def _become_fresh_uid(cfg: dict) -> None:
    """Process A of a root caller, after opening the bind sources: become ns1's root, the fresh uid."""
    if cfg.get("fresh_uid") is None:
        return
    os.setgroups([])  # root's supplementary groups would otherwise follow the candidate
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    _libc().prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid change cleared it; /proc/self must stay ours


def _open_sources(cfg: dict) -> dict[str, Any]:
    """Process A, in ns1's mount namespace (bind sources must be in it) but still with the caller's
    kernel uid: O_PATH descriptors of every bind source (a root caller's Python may sit under a 0700
    /root that the fresh uid cannot walk), and of /proc for writing the candidate's maps later."""
    fds = {"binds": [], "proc": os.open("/proc", os.O_PATH | os.O_DIRECTORY)}
    for source, target in cfg["binds"]:
        try:
            fds["binds"].append((os.open(source, os.O_PATH), target, os.path.isdir(source)))
        except OSError as e:
            raise SetupError(f"cannot open {source} for the sandbox: {e.strerror}") from None
    return fds


def _bind_read_only(libc: Any, fd: int, target: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(libc, f"/proc/self/fd/{fd}", target, None, _MS["bind"] | _MS["rec"])
    flags = os.statvfs(target).f_flag  # keep the flags the kernel locks (nosuid, nodev, noexec, atime)
    keep = {2: _MS["nosuid"], 4: _MS["nodev"], 8: _MS["noexec"], 1024: _MS["noatime"],
            2048: _MS["nodiratime"], 4096: _MS["relatime"]}
    extra = sum(ms for st, ms in keep.items() if flags & st)
    _mount(libc, None, target, None, _MS["remount"] | _MS["bind"] | _MS["rdonly"] | _MS["nosuid"] | extra)


def _build_root(cfg: dict, fds: dict[str, Any]) -> None:
    """Process B (root of ns1): the minimal read-only root described in the module docstring."""
    libc = _libc()
    _mount(libc, None, "/", None, _MS["rec"] | _MS["private"])
    new = cfg["stage"]
    _mount(libc, "tmpfs", new, "tmpfs", _MS["nosuid"] | _MS["nodev"], "mode=0755,size=1m")
    for name, link in cfg["links"]:
        os.symlink(link, new + name)
    for fd, target, is_dir in fds["binds"]:
        _bind_read_only(libc, fd, new + target, is_dir)
        os.close(fd)
    for hidden in cfg["hide"]:  # site-packages and the like inside a bound tree
        _mount(libc, "tmpfs", new + hidden, "tmpfs", _MS["rdonly"] | _MS["nosuid"] | _MS["nodev"], "size=4k")
    size = f"size={cfg['workdir_mb']}m,mode=0755"
    for scratch in ("/tmp", cfg["workdir"]):
        os.makedirs(new + scratch, exist_ok=True)
        _mount(libc, "tmpfs", new + scratch, "tmpfs", _MS["nosuid"] | _MS["nodev"], size)
    os.mkdir(new + "/.old")
    calls = _SYSCALLS.get(platform.machine())
    if calls is None:
        raise SetupError(f"no pivot_root syscall number for {platform.machine()}")
    _check(libc.syscall(calls["pivot_root"], new.encode(), (new + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", 2), "detach the host's file tree")  # MNT_DETACH
    os.rmdir("/.old")
    _mount(libc, None, "/", None, _MS["remount"] | _MS["rdonly"] | _MS["nosuid"] | _MS["nodev"])
    libc.sethostname(b"sandbox", 7)


def _drop_capabilities(libc: Any) -> None:
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: fails quietly past the last capability
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    _check(libc.syscall(_SYSCALLS[platform.machine()]["capset"], header, data), "drop capabilities")


def _enter_candidate_namespaces(proc_fd: int) -> None:
    """The candidate's process, still running harness code: a nested user, mount and PID namespace, so
    the judge's process cannot be named, and the inherited mounts stay read-only (locked)."""
    libc = _libc()
    _check(libc.unshare(_CLONE["user"] | _CLONE["mount"] | _CLONE["pid"]), "unshare(candidate)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{CANDIDATE_UID} 0 1"),
                       ("gid_map", f"{CANDIDATE_UID} 0 1")):
        fd = os.open(f"self/{name}", os.O_WRONLY, dir_fd=proc_fd)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _set_limits(cfg: dict, candidate: bool) -> None:
    r = resource
    limits = [(r.RLIMIT_AS, cfg["memory"]), (r.RLIMIT_NOFILE, 256), (r.RLIMIT_CORE, 0),
              (r.RLIMIT_FSIZE, cfg["max_file"])]
    if candidate:  # RLIMIT_NPROC counts per user namespace: only the candidate's own processes
        nproc = cfg["max_processes"]
        if not cfg["isolate"]:  # unsafe: it counts every process and thread of the caller's uid
            nproc += sum(1 for p in os.listdir("/proc") if p.isdigit() and _owned(f"/proc/{p}"))
        limits += [(r.RLIMIT_NPROC, nproc), (r.RLIMIT_CPU, cfg["cpu_s"])]
    for which, value in limits:
        resource.setrlimit(which, (value, value))


def _owned(path: str) -> bool:
    try:
        return os.stat(path).st_uid == os.getuid()
    except OSError:  # the process just ended
        return False


def _keep_only_fds(keep: list[int]) -> list[int]:
    """Moves ``keep`` to 3, 4, ...; points 0-2 at /dev/null; closes everything else."""
    moved = [os.dup(fd) for fd in keep]
    for i, fd in enumerate(moved):
        os.dup2(fd, 3 + i)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3 + len(keep), 1 << 20)
    return list(range(3, 3 + len(keep)))


def _die_with_parent(alive_fd: int) -> None:
    """PR_SET_PDEATHSIG, then make sure the parent did not die before it was set."""
    _libc().prctl(1, signal.SIGKILL, 0, 0, 0)
    os.set_blocking(alive_fd, False)
    try:
        if os.read(alive_fd, 1) == b"":
            os._exit(1)
    except BlockingIOError:
        pass


def _status(cfg: dict, message: str) -> None:
    try:
        os.write(cfg["status_fd"], message.encode()[:1000])
    except OSError:
        pass


def _read_frame(fd: int) -> Any:
    size = int.from_bytes(_read_exact(fd, 4, None), "big")  # noqa: F821 - sent along (sandbox_harness)
    return json.loads(_read_exact(fd, size, None))  # noqa: F821


def _launch_main(cfg: dict) -> None:
    """Process A."""
    try:
        fds = {"binds": [], "proc": -1}
        if cfg["isolate"]:
            _enter_outer_namespaces(cfg)
            fds = _open_sources(cfg)
            _become_fresh_uid(cfg)
    except BaseException as e:
        _status(cfg, f"error: {e}")
        os._exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(alive_w)
        _die_with_parent(alive_r)
        _init_main(cfg, fds)
        os._exit(0)
    os.close(alive_r)
    for fd, _, _ in fds["binds"]:
        os.close(fd)
    status = os.waitpid(child, 0)[1]
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _init_main(cfg: dict, fds: dict[str, Any]) -> None:
    """Process B: build the root, start the candidate, drop ns1's privileges, judge, print the verdict."""
    try:
        if cfg["isolate"]:
            _build_root(cfg, fds)
        os.chdir(cfg["workdir"])
        program = _read_frame(0)["program"]
        to_candidate, from_judge = os.pipe()
        to_judge, from_candidate = os.pipe()
    except BaseException as e:
        _status(cfg, f"error: {e}")
        os._exit(SETUP_FAILED)
    # only harness code has run so far: the status pipe closes before anything untrusted starts
    _status(cfg, "ok")
    candidate = os.fork()
    if candidate == 0:
        _candidate_process(cfg, fds["proc"], program, to_candidate, from_candidate)
    os.close(to_candidate)
    os.close(from_candidate)
    os.close(cfg["status_fd"])
    if fds["proc"] >= 0:
        os.close(fds["proc"])
    verdict_fd = os.dup(1)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    spec = _read_frame(0)  # the tests and the nonce arrive after the fork: never in the candidate's memory
    try:
        if cfg["isolate"]:
            _check(_libc().unshare(_CLONE["user"]), "unshare(judge)")  # no more privileges over ns1
        _set_limits(cfg, candidate=False)
    except BaseException as e:  # before any test code: the nonce still vouches for the harness
        verdict = {"harness_error": f"judge setup failed: {e}"[:500]}
    else:
        sys.path[:0] = cfg["package_paths"]
        verdict = _judge(spec, to_judge, from_judge)  # noqa: F821 - sent along (sandbox_harness)
    verdict["nonce"] = spec["nonce"]
    data = json.dumps(verdict).encode()
    while data:
        data = data[os.write(verdict_fd, data):]
    try:
        os.kill(candidate, signal.SIGKILL)
    except OSError:
        pass
    os._exit(0)


def _candidate_process(cfg: dict, proc_fd: int, program: str, rfd: int, wfd: int) -> None:
    """The candidate's first process: confine, then become PID 1 of its own PID namespace and run."""
    try:
        if cfg["isolate"]:
            _enter_candidate_namespaces(proc_fd)
        rfd, wfd = _keep_only_fds([rfd, wfd])  # closes the proc, status and verdict descriptors too
        if cfg["isolate"]:
            child = os.fork()  # the first child is PID 1 of the candidate's PID namespace
            if child != 0:
                os.waitpid(child, 0)
                os._exit(0)
            _libc().prctl(1, signal.SIGKILL, 0, 0, 0)
            _drop_capabilities(_libc())
            os.setsid()  # kill(0, ...) would otherwise reach the judge: process groups cross PID namespaces
        else:  # unsafe: stay in the run's process group, the only handle the host has on stray children
            _block_sockets()  # noqa: F821 - sent along (sandbox_harness)
        _libc().prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        _set_limits(cfg, candidate=True)
        os.umask(0o077)
        sys.path[:0] = cfg["package_paths"]
    except BaseException as e:  # never run the program unconfined: the judge reads a load error
        try:
            _send(wfd, {"load_error": f"sandbox setup failed: {type(e).__name__}: {e}"[:500]}, None)  # noqa: F821
        finally:
            os._exit(SETUP_FAILED)
    _candidate_loop(program, rfd, wfd, cfg["max_reply"])  # noqa: F821 - sent along (sandbox_harness)
    os._exit(0)


def launch_config(limits: Any, workdir: str, packages: dict[str, str], fresh_uid: int | None,
                  isolate: bool, python: str) -> dict:
    """Process A's configuration (plain JSON; holds no secret)."""
    binds, hide, links = _runtime_binds(python)
    binds += [(path, f"/opt/packages/{name}") for name, path in packages.items()]
    return {"isolate": isolate, "fresh_uid": fresh_uid, "binds": binds, "hide": hide, "links": links,
            "stage": "/tmp", "workdir": workdir, "workdir_mb": limits.workdir_mb,
            "package_paths": ["/opt/packages"] if packages else [],
            "cpu_s": limits.cpu_s, "memory": limits.memory_mb << 20, "max_processes": limits.max_processes,
            "max_file": limits.max_file_mb << 20, "max_reply": limits.max_reply_mb << 20}


def runnable_python() -> str:
    """An interpreter of this Python version that the caller may execute: the real file behind
    ``sys.executable`` (it exists inside the sandbox, a venv's link does not), else the same version on
    PATH (a venv may point into a directory closed to the caller's uid)."""
    import shutil

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for path in (os.path.realpath(sys.executable), sys.executable, shutil.which(version) or "",
                 f"/usr/bin/{version}"):
        if path and os.access(path, os.X_OK):
            return path
    raise SetupError(f"no {version} interpreter that uid {os.geteuid()} may execute")


def _runtime_binds(python: str) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]]]:
    """(source, target) binds of the interpreter's prefix and /usr; site-packages dirs to hide; links."""
    import glob

    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))  # <prefix>/bin/pythonX.Y
    roots = {os.path.realpath(p) for p in ("/usr", prefix)}
    roots = {r for r in roots if not any(r.startswith(o + "/") for o in roots)}
    links, binds = [], [(r, r) for r in sorted(roots)]
    for name in ("/bin", "/lib", "/lib64", "/sbin", "/lib32"):
        if os.path.islink(name):
            links.append((name, os.readlink(name)))
        elif os.path.isdir(name):
            binds.append((name, name))
    binds += [(dev, dev) for dev in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")]
    hide = set()
    for root in roots:  # installed packages, with their data, stay out of reach
        for pattern in ("lib*/python3*/site-packages", "lib*/python3*/dist-packages", "local"):
            hide.update(p for p in glob.glob(os.path.join(root, pattern))
                        if os.path.isdir(p) and not os.path.islink(p))
    return binds, sorted(hide), links


def package_dirs(names: list[str]) -> dict[str, str]:
    """The directories of the packages a task names (e.g. numpy, with its bundled numpy.libs)."""
    import importlib.util

    found: dict[str, str] = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a dotted name whose parent is missing, or an empty name
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"sandbox package {name!r} is not an installed package")
        path = os.path.realpath(next(iter(spec.submodule_search_locations)))
        found[name] = path
        libs = path + ".libs"  # wheels bundle shared libraries next to the package
        if os.path.isdir(libs):
            found[name + ".libs"] = libs
    return found
