"""Kill and resume: SIGKILL `twinloop eval` and a 2-process CPU training run mid-run, rerun, and check
that nothing is lost or doubled (issue 19, section 4).

- eval: `twinloop eval` on the shipped tiny policy is killed once rows are on disk; the rerun must keep
  those rows byte for byte, add exactly the missing (method, budget, problem) keys, and end with every
  key exactly once.
- training: a 2-process DDP GPPO run (accelerate, gloo) of the shipped tiny policy is killed from outside,
  with SIGKILL to every process of the run at once, at a random step (seeded), three times in a row; each
  rerun resumes from the last complete checkpoint. After every kill each checkpoint folder must be complete
  (never half-written), and the final weights must match an uninterrupted run with the same seed within
  rtol 1e-4, atol 1e-5.

    python bench/kill_resume.py --what eval,train --out /tmp/kill-resume
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TWINLOOP = [sys.executable, "-c", "import sys; from twinloop.cli import main; sys.exit(main())"]  # the console script


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def _alive_with(text: str) -> list[int]:
    """Live processes whose command line holds ``text`` (the run's output folder, unique per run)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z" and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def _kill_group(proc: subprocess.Popen, marker: str, whole_run: bool = False) -> list[int]:
    """SIGKILL the run's process group (with ``whole_run``, first every process holding ``marker`` at once, as
    an OOM kill or a lost node would: accelerate's launcher starts its workers in sessions of their own, so a
    kill of its group alone leaves them training); returns processes holding ``marker`` that survived."""
    if whole_run:
        for pid in _alive_with(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 5.0
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = _alive_with(marker)
    for pid in survivors:  # reported as a finding, then ended so the next launch starts clean
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return survivors


# --- eval ----------------------------------------------------------------------------------------------

def _eval_argv(out: Path, n_problems: int) -> list[str]:
    return [*TWINLOOP, "eval", "--checkpoint", str(REPO / "checkpoints" / "tiny-arith-policy"), "--task", "arith",
            "--methods", "greedy,majority", "--budgets", "2", "--n-problems", str(n_problems), "--engine", "hf",
            "--batch", "1", "--out", str(out), "--no-plot"]


def _keys(lines: list[str]) -> list[tuple[str, int, str]]:
    rows = [json.loads(line) for line in lines if line.strip()]
    return [(r["method"], r["budget"], r["problem_id"]) for r in rows]


def eval_kill_resume(out: Path, n_problems: int = 20, kill_after_rows: int = 5) -> dict[str, Any]:
    """One SIGKILL of `twinloop eval` once ``kill_after_rows`` rows are written, then a rerun."""
    out = Path(out)
    results = out / "results.jsonl"
    proc = subprocess.Popen(_eval_argv(out, n_problems), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= kill_after_rows:
            break
        time.sleep(0.02)
    finished_early = proc.poll() is not None
    survivors = _kill_group(proc, str(out))
    before = results.read_text()
    kept = [line for line in before.split("\n")[:-1]]  # whole lines; a torn last line is not a row
    rerun = subprocess.run(_eval_argv(out, n_problems), cwd=REPO, env=_env(), capture_output=True, text=True)
    after = results.read_text().splitlines()
    keys = _keys([line for line in after if line.strip().endswith("}")])
    expected = {(m, b, f"arith-test-{i}") for m, b in (("greedy", 1), ("majority", 2)) for i in range(n_problems)}
    kept_keys = set(_keys(kept))
    return {
        "killed": not finished_early, "rows_before_kill": len(kept), "rerun_rc": rerun.returncode,
        "rerun_error": rerun.stderr[-500:] if rerun.returncode else "",
        "kept_intact": after[:len(kept)] == kept, "rows_after": len(keys), "expected": len(expected),
        "duplicates": len(keys) - len(set(keys)), "missing": len(expected - set(keys)),
        "added": len(set(keys) - kept_keys), "survivors": survivors,
    }


# --- training --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_argv(model: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "recipes" / "accelerate" / "cpu2.yaml"), "--main_process_port", str(_free_port()),
            "-m", "twinloop.train.gppo", "--config", str(REPO / "recipes" / "arith" / "process.yaml"),
            "--model_name_or_path", str(model), "--output_dir", str(out), "--max_steps", str(steps),
            "--train_size", "32", "--per_device_train_batch_size", "4", "--num_generations", "4",
            "--max_completion_length", "64", "--save_steps", "2", "--save_total_limit", "3",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--disable_tqdm", "true", "--seed", "0",
            "--resume_from_checkpoint", "auto"]


def _train(model: Path, out: Path, steps: int, kill_at_step: int | None, log: Path | None = None) -> dict[str, Any]:
    """Runs (resuming from the last checkpoint); with ``kill_at_step``, SIGKILLs the process group as soon
    as that many step logs of this launch have appeared (the kill lands inside the next step)."""
    proc = subprocess.Popen(_train_argv(model, out, steps), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    logged: list[str] = []
    reached = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            logged.append(line)
            if kill_at_step is not None and "'loss'" in line and sum("'loss'" in x for x in logged) >= kill_at_step:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None and not reached.is_set():
        time.sleep(0.05)
    killed = reached.is_set() and proc.poll() is None
    survivors = _kill_group(proc, str(out), whole_run=True) if killed else []
    proc.wait()
    reader.join(timeout=5)
    if log is not None:
        log.write_text("".join(logged))
    return {"rc": proc.returncode, "killed": killed, "survivors": survivors, "log": "".join(logged[-40:])}


def _checkpoint_complete(folder: Path) -> str:
    """'' when ``folder`` is a whole checkpoint, else what is wrong with it."""
    from safetensors.torch import load_file

    needed = ["model.safetensors", "trainer_state.json", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"]
    missing = [name for name in needed if not (folder / name).exists()]
    if missing:
        return f"{folder.name}: missing {missing}"
    try:
        load_file(str(folder / "model.safetensors"))
        json.loads((folder / "trainer_state.json").read_text())
    except Exception as e:  # noqa: BLE001 - any unreadable file is the finding
        return f"{folder.name}: {type(e).__name__}: {e}"
    return ""


def _max_weight_gap(a: Path, b: Path) -> tuple[float, bool]:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    wa = {k: v.float() for k, v in wa.items()}
    wb = {k: v.float() for k, v in wb.items()}
    gap, close = 0.0, set(wa) == set(wb)
    for name in wa:
        gap = max(gap, float((wa[name] - wb[name]).abs().max()))
        close = close and torch.allclose(wa[name], wb[name], rtol=1e-4, atol=1e-5)
    return gap, close


def train_kill_resume(out: Path, steps: int = 8, kills: int = 3, seed: int = 0) -> dict[str, Any]:
    """An uninterrupted reference, then the same run killed ``kills`` times at random steps and resumed."""
    out = Path(out)
    model = REPO / "checkpoints" / "tiny-arith-policy"  # trained, and 64 tokens finish its answers: rewards vary
    reference = _train(model, out / "reference", steps, None, out / "reference.log")
    if reference["rc"] != 0:
        return {"error": "reference run failed: " + reference["log"][-1500:]}
    rng = random.Random(seed)
    run, events, bad = out / "killed", [], []
    for k in range(kills):
        done = max([int(p.name.split("-")[1]) for p in run.glob("checkpoint-*")] or [0])
        left = steps - done
        at = rng.randint(1, max(1, left - 1))  # this launch's step count at which the kill lands
        result = _train(model, run, steps, at, out / f"killed-{k}.log")
        checkpoints = sorted(run.glob("checkpoint-*"))
        bad += [problem for c in checkpoints if (problem := _checkpoint_complete(c))]
        events.append({"kill_after_steps_of_launch": at, "resumed_from": done, "killed": result["killed"],
                       "checkpoints": [c.name for c in checkpoints], "survivors": result["survivors"]})
    final = _train(model, run, steps, None, out / "final.log")
    if final["rc"] != 0:
        return {"error": "final resume failed: " + final["log"][-1500:], "events": events}
    if problem := _checkpoint_complete(run / f"checkpoint-{steps}"):
        return {"error": "final checkpoint incomplete: " + problem, "events": events, "incomplete_checkpoints": bad}
    gap, close = _max_weight_gap(out / "reference" / f"checkpoint-{steps}", run / f"checkpoint-{steps}")
    moved, _ = _max_weight_gap(model, out / "reference" / f"checkpoint-{steps}")  # training really changed them
    extra = sorted(p.name for p in run.glob("checkpoint-*") if int(p.name.split("-")[1]) > steps)
    lost = sum(e["kill_after_steps_of_launch"] for e in events)  # steps of work redone after the kills
    return {"kills": sum(e["killed"] for e in events), "events": events, "incomplete_checkpoints": bad,
            "max_abs_weight_gap": gap, "weights_match": close, "reference_moved_from_start": moved,
            "checkpoints_past_max_steps": extra, "final_rc": final["rc"],
            "steps_redone_at_most": lost, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="eval,train")
    parser.add_argument("--out", default="runs/kill-resume")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    report = {}
    if "eval" in args.what:
        report["eval"] = eval_kill_resume(out / "eval")
    if "train" in args.what:
        report["train"] = train_kill_resume(out / "train", seed=args.seed)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
