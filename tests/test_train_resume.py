"""Kill test: a GPPO run SIGKILLed mid-run resumes from its last checkpoint and continues the same seeded curve.

Run as a script (``python tests/test_train_resume.py OUT MODEL KILL_AT``) it is the child that gets killed.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = 4


def _argv(out, model, tokens=12):
    return ["--config", str(REPO / "recipes/arith/process.yaml"), "--model_name_or_path", str(model),
            "--output_dir", str(out), "--max_steps", str(STEPS), "--train_size", "32", "--per_device_train_batch_size",
            "8", "--num_generations", "4", "--max_completion_length", str(tokens), "--save_steps", "2",
            "--save_total_limit", "2", "--learning_rate", "1e-3", "--logging_steps", "1", "--disable_tqdm", "true",
            "--resume_from_checkpoint", "auto"]


def _child(out, model, kill_at):
    import torch
    from transformers import TrainerCallback
    from twinloop.train.gppo import main

    torch.set_num_threads(1)

    class KillAt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save

    return main(_argv(out, model, tokens=48), callbacks=[KillAt()] if kill_at >= 0 else None)


def _curve(ckpt):
    state = json.loads((Path(ckpt) / "trainer_state.json").read_text())
    return {r["step"]: (r["loss"], r["reward"], r["grad_norm"]) for r in state["log_history"] if "loss" in r}


def test_sigkill_mid_run_resumes_on_the_same_curve(tmp_path):
    import pytest
    import torch
    from safetensors.torch import load_file

    # the trained tiny policy finishes its answers in 48 tokens, so rewards vary and the weights move (a random
    # model scores 0 everywhere: loss and gradients 0, and the comparison below would hold trivially)
    model = REPO / "checkpoints" / "tiny-arith-policy"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # reference: one uninterrupted run
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, __file__, str(ref), str(model), "-1"], check=True, env=env, cwd=REPO,
                   capture_output=True)
    # killed at the start of step 4: checkpoint-2 exists, step 3's work is lost
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, __file__, str(run), str(model), "3"], env=env, cwd=REPO,
                            capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (run / "model.safetensors").exists()
    # resumed with the same command line: picks checkpoint-2 up, redoes steps 3 and 4
    resumed = subprocess.run([sys.executable, __file__, str(run), str(model), "-1"], env=env, cwd=REPO,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    a, b = _curve(ref / f"checkpoint-{STEPS}"), _curve(run / f"checkpoint-{STEPS}")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    assert any(grad > 0 for _, _, grad in a.values())  # (a step whose every group got one reward has none)
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-6), step
    wa, wb = load_file(str(ref / "model.safetensors")), load_file(str(run / "model.safetensors"))
    start = load_file(str(model / "model.safetensors"))
    assert any(not torch.equal(wa[k], start[k]) for k in wa)  # training moved them: the match below can fail
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_save_that_dies_midway_leaves_no_checkpoint(tmp_path, monkeypatch):
    """The model weights of checkpoint-2 are written, then the save dies: checkpoint-2 must not exist (resume
    would pick it up and fail), checkpoint-1 stays the last one, and a resumed run publishes checkpoint-2."""
    import pytest
    import torch
    from transformers.trainer_utils import get_last_checkpoint
    from twinloop.train.checkpointing import STAGING_DIR
    from twinloop.train.gppo import GPPOTrainer, main

    from twinloop.tiny import build_random_tiny

    torch.set_num_threads(1)
    model = build_random_tiny(tmp_path / "model")
    out = tmp_path / "run"
    argv = _argv(out, model)
    argv[argv.index("--max_steps") + 1] = "2"
    argv[argv.index("--save_steps") + 1] = "1"
    original = GPPOTrainer._save_optimizer_and_scheduler

    def dies_on_second_save(self, output_dir):
        if self.state.global_step == 2:
            raise RuntimeError("simulated crash mid-save")
        return original(self, output_dir)

    monkeypatch.setattr(GPPOTrainer, "_save_optimizer_and_scheduler", dies_on_second_save)
    with pytest.raises(RuntimeError, match="mid-save"):
        main(argv)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert (out / STAGING_DIR / "checkpoint-2" / "model.safetensors").is_file()  # the half-written one
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-1")
    monkeypatch.setattr(GPPOTrainer, "_save_optimizer_and_scheduler", original)
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (out / "checkpoint-2" / "optimizer.pt").is_file() and not (out / STAGING_DIR / "checkpoint-2").exists()


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2], int(sys.argv[3])))
