"""Scores the hostile programs in one batch and prints what happened as JSON (run by test_attacks.py,
as root or under ``setpriv --reuid 65534``; also by bench/reliability_report.py).

stdin: {"site": [package folders, the venv's included], "marker", "tree", "home", "humaneval", "jobs": [...],
"completions": [...]}. The caller's environment holds TWINLOOP_CANARY. Listeners on loopback TCP,
an abstract unix socket, a unix socket file and a SysV segment count whatever reaches them.
"""
from __future__ import annotations

import ctypes
import json
import os
import site
import socket
import sys
import threading
import time


def listeners(marker: str) -> tuple[dict, list[socket.socket], int]:
    hits = {"tcp": 0, "abstract": 0, "unix": 0}
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + marker)
    path = f"/tmp/{marker}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    os.chmod(path, 0o777)
    servers = [("tcp", tcp), ("abstract", abstract), ("unix", unix)]

    def accept(kind: str, server: socket.socket) -> None:
        server.listen(16)
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            hits[kind] += 1
            conn.close()

    for kind, server in servers:
        threading.Thread(target=accept, args=(kind, server), daemon=True).start()
    return hits, [s for _, s in servers], tcp.getsockname()[1]


def main() -> None:
    cfg = json.loads(sys.stdin.read())
    for folder in cfg["site"]:  # an interpreter outside the venv (another uid) still finds twinloop
        site.addsitedir(folder)
    from twinloop.rewards.sandbox import CodeExecutionReward, Sandbox, SandboxLimits

    marker = cfg["marker"]
    hits, servers, port = listeners(marker)
    libc = ctypes.CDLL(None, use_errno=True)
    shm_key = int.from_bytes(os.urandom(3), "big") + 1
    shm_id = libc.shmget(shm_key, 4096, 0o1000 | 0o600)  # IPC_CREAT, the caller's own segment
    values = {"__MARKER__": marker, "__PORT__": str(port), "__ABSTRACT__": marker, "__SHMKEY__": str(shm_key),
              "__UNIXSOCK__": f"/tmp/{marker}.sock", "__TREE__": cfg["tree"], "__HOME__": cfg["home"],
              "__CANARY__": os.environ["TWINLOOP_CANARY"], "__HUMANEVAL__": cfg["humaneval"]}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    limits = SandboxLimits(timeout_s=6.0, cpu_s=5, memory_mb=512, max_processes=16, workdir_mb=64)
    sandbox = Sandbox(limits, workers=cfg.get("workers", 4), allow_unsafe_execution=cfg.get("unsafe", False))
    if cfg.get("unsafe"):  # the baseline that shows the attacks are live: no isolation at all
        sandbox._unavailable = "isolation switched off for the unsafe baseline"
    chosen = [job for job in cfg["jobs"] if not cfg.get("unsafe") or job["name"] in cfg["baseline"]]
    jobs = [{k: fill(job[k]) for k in ("program", "test", "entry_point", "prompt") if k in job} for job in chosen]
    start = time.monotonic()
    outcomes = sandbox.run_many(jobs)
    reward = CodeExecutionReward(sandbox)
    parsed = []
    for item in cfg["completions"]:
        t0 = time.monotonic()
        score = reward(["def f():\n"], [item["completion"]], test=["assert f() == 1\n"], entry_point=["f"])[0]
        parsed.append({"name": item["name"], "score": score, "seconds": time.monotonic() - t0})
    time.sleep(0.2)  # let any late connection land before counting
    for server in servers:
        server.close()
    os.unlink(f"/tmp/{marker}.sock")
    if shm_id >= 0:
        libc.shmctl(shm_id, 0, None)  # IPC_RMID
    print(json.dumps({
        "uid": os.geteuid(), "isolated": sandbox.isolated, "seconds": time.monotonic() - start,
        "hostname": socket.gethostname(), "hits": hits, "completions": parsed,
        "names": [job["name"] for job in chosen],
        "outcomes": [{"passed": o.passed, "total": o.total, "error": o.error, "timed_out": o.timed_out}
                     for o in outcomes],
    }))


if __name__ == "__main__":
    main()
