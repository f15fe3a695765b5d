"""V1-PairRL with colocated vLLM generation on CPU (both roles sampled by vLLM, importance-sampling corrected)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")
REPO = Path(__file__).resolve().parents[1]


def test_colocated_vllm_generates_both_roles(tmp_path):
    """Runs in a fresh process (TRL's colocated engine sets up vLLM's distributed state for itself). Ratings are
    read by a fixed fake parser, so the verify role has rewards to learn from."""
    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import test_train_pairrl_vllm as t; "
            f"t.colocate_run({str(tmp_path)!r}); print('pairrl-vllm-ok')")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and "pairrl-vllm-ok" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def colocate_run(out):
    import torch
    import twinloop.train.pairrl as pairrl
    from datasets import Dataset

    from twinloop.tasks import build_task

    torch.set_num_threads(1)
    pairrl.parse_ratings = lambda text: (10, 1)

    class Alternating:
        __name__ = "alternating"

        def __call__(self, prompts, completions, **columns):
            return [1.0 - (k % 2) for k in range(len(completions))]

    policy = str(REPO / "checkpoints" / "tiny-arith-policy")
    cfg = pairrl.PairRLConfig(output_dir=out, use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                              max_completion_length=24, verify_max_completion_length=8, max_steps=2,
                              learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no", seed=0,
                              disable_tqdm=True, bf16=False, use_vllm=True, vllm_mode="colocate",
                              vllm_max_model_length=1024, vllm_dtype="float32")
    trainer = pairrl.PairRLTrainer(model=policy, reward_funcs=[Alternating()], args=cfg,
                                   train_dataset=Dataset.from_list(build_task("arith").load("train", n=4, seed=0)),
                                   processing_class=pairrl.load_tokenizer(policy))
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logs) == 2, logs
    for row in logs:
        assert row["verify/prompts"] == 8.0 and 0.0 < row["verify/reward_mean"] < 1.0, row
        assert row["sampling/importance_sampling_ratio/mean"] > 0, row
    # step 2 sampled with the weights synced after step 1: vLLM's logprobs match the trainer's
    assert logs[-1]["sampling/sampling_logp_difference/max"] < 1e-2, logs[-1]
    pairrl.teardown(trainer)
