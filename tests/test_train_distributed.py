"""2-process CPU `accelerate launch` of GPPO: DDP over gloo, DeepSpeed ZeRO-2 and ZeRO-3 (2 steps + checkpoint)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REWARD_MODULE = '''
from twinloop.rewards.base import RewardBase


class Digits(RewardBase):
    name = "digits"

    def score(self, prompt, completion, **row):
        return sum(ch.isdigit() for ch in completion) / max(1, len(completion))
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from twinloop.tiny import build_random_tiny

    root = tmp_path_factory.mktemp("dist")
    (root / "mods").mkdir()
    (root / "mods" / "dist_reward.py").write_text(REWARD_MODULE)
    return root, build_random_tiny(root / "model")


def _launch(setup, accel, name):
    root, model = setup
    out = root / name
    env = {**os.environ, "PYTHONPATH": f"{root / 'mods'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"recipes/accelerate/{accel}.yaml",
            "--main_process_port", str(_free_port()), "-m", "twinloop.train.gppo",
            "--config", "recipes/arith/process.yaml", "--model_name_or_path", str(model), "--output_dir", str(out),
            "--max_steps", "2", "--train_size", "16", "--per_device_train_batch_size", "4", "--num_generations", "4",
            "--max_completion_length", "12", "--save_steps", "2", "--logging_steps", "1", "--disable_tqdm", "true",
            "--reward_funcs", "dist_reward:Digits", "--trust_remote_code", "true"]  # a reward outside twinloop
    res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    losses = [r["loss"] for r in state["log_history"] if "loss" in r]
    assert len(losses) == 2
    return out, losses, res.stdout + res.stderr


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def _assert_trained_hf_folder(out, setup):
    import torch
    from transformers import AutoModelForCausalLM

    ckpt = out / "checkpoint-2"
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)  # plain HF reload
    assert "GPPO" in (ckpt / "README.md").read_text()
    start, saved = _weights(setup[1]), _weights(ckpt)
    assert set(start) <= set(saved)
    if "lm_head.weight" in saved and "lm_head.weight" not in start:  # DeepSpeed writes the tied head out too
        torch.testing.assert_close(saved["lm_head.weight"], saved["model.embed_tokens.weight"], rtol=0, atol=0)
    assert all(saved[k].shape == start[k].shape for k in start)  # not ZeRO-3 placeholders
    assert any(not torch.equal(saved[k], start[k]) for k in start)  # 2 optimizer steps happened
    for name, p in model.named_parameters():
        if name in saved:
            torch.testing.assert_close(p.detach(), saved[name], rtol=0, atol=0)
    return saved


@pytest.fixture(scope="module")
def ddp_run(setup):
    return _launch(setup, "cpu2", "ddp")


def test_ddp_two_processes_two_steps_and_checkpoint(ddp_run, setup):
    out, losses, log = ddp_run
    assert sorted(p.name for p in (out / "checkpoint-2").glob("rng_state_*.pth")) == ["rng_state_0.pth",
                                                                                        "rng_state_1.pth"]
    _assert_trained_hf_folder(out, setup)
    assert (out / "model.safetensors").is_file()


def test_deepspeed_zero2_two_steps_and_checkpoint(ddp_run, setup):
    out, losses, log = _launch(setup, "zero2", "zero2")
    assert (out / "checkpoint-2" / "latest").read_text().strip() == "global_step2"  # DeepSpeed engine state
    _assert_trained_hf_folder(out, setup)
    assert losses == pytest.approx(ddp_run[1], abs=1e-6)  # same data, same maths as DDP


def test_deepspeed_zero3_consolidated_checkpoint_reloads(ddp_run, setup):
    import torch

    out, losses, log = _launch(setup, "zero3", "zero3")
    saved = _assert_trained_hf_folder(out, setup)
    final = _weights(out)  # end-of-run save_model: also consolidated from the shards
    for k in saved:
        torch.testing.assert_close(final[k], saved[k], rtol=0, atol=0)
    assert losses == pytest.approx(ddp_run[1], abs=1e-6)
    assert "SIGABRT" not in log and "terminate called" not in log
