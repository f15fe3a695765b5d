"""GPPO with colocated vLLM generation on CPU: TRL's weight sync routed through the Engine's load_weights."""
import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
pytest.importorskip("vllm")


@pytest.fixture(scope="module")
def tiny_dir(request, tmp_path_factory):
    try:
        return str(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from twinloop.tiny import build_random_tiny

        return str(build_random_tiny(tmp_path_factory.mktemp("tiny") / "model"))


def _hf_logprobs(model, prefix, cont):
    ids = torch.tensor([prefix + cont])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return [lp[len(prefix) + i - 1, t].item() for i, t in enumerate(cont)]


def test_colocated_vllm_follows_the_trainer_weights(tiny_dir, tmp_path):
    """Runs in a fresh process: TRL's colocated engine sets up vLLM's distributed state for itself, which
    clashes with the session's other in-process engines (a user's training process has only this one)."""
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import test_train_vllm_colocate as t; "
            f"t.colocate_check({tiny_dir!r}, {str(tmp_path)!r}); print('colocate-ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "colocate-ok" in proc.stdout, proc.stderr[-3000:]


def colocate_check(tiny_dir, tmp_path):
    from datasets import Dataset
    from twinloop.infer.vllm_engine import VLLMEngine
    from twinloop.rewards.base import RewardBase
    from twinloop.train.gppo import GPPOConfig, GPPOTrainer

    class Digits(RewardBase):
        name = "digits"

        def score(self, prompt, completion, **row):
            return sum(ch.isdigit() for ch in completion) / max(1, len(completion))

    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + 1?"}]} for a in range(8)]
    cfg = GPPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                     max_completion_length=12, max_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none",
                     save_strategy="no", seed=0, disable_tqdm=True, use_vllm=True, vllm_mode="colocate",
                     vllm_max_model_length=128, vllm_dtype="float32", positive_loss_coeff=0.0,
                     bf16=False)  # TRL defaults to bf16 autocast: trainer logprobs would be off by ~0.03
    trainer = GPPOTrainer(model=tiny_dir, reward_funcs=[Digits()], args=cfg, train_dataset=Dataset.from_list(rows))
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    assert len(logs) == 2 and all(r["completions/mean_length"] > 0 for r in logs)
    # step 2 sampled with the weights synced after step 1: vLLM's sampling logprobs match the trainer's
    assert logs[-1]["sampling/sampling_logp_difference/max"] < 1e-2

    engine = VLLMEngine.attach(trainer.vllm_generation.llm)
    tok = trainer.processing_class
    prefix = tok.apply_chat_template([{"role": "user", "content": "What is 3 + 1?"}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    cont = tok("The answer is 4.").input_ids
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    hf = _hf_logprobs(model, list(prefix), cont)
    stale = engine.continuation_logprobs([list(prefix)], [cont])[0]
    # step 2 changed the trainer's weights after the last sync: vLLM is stale (the check can fail)
    assert max(abs(a - b) for a, b in zip(hf, stale)) > 1e-2
    trainer.vllm_generation.sync_weights()
    synced = engine.continuation_logprobs([list(prefix)], [cont])[0]
    assert max(abs(a - b) for a, b in zip(hf, synced)) < 1e-2


def test_recipe_with_colocated_vllm_trains_and_exits_cleanly(tiny_dir, tmp_path):
    """`python -m twinloop.train.gppo` on the tiny-arith recipe with vLLM generation: the colocated engine is
    shut down before the process group, so the run ends with exit code 0 and no exit-time traceback."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "twinloop.train.gppo", "--config", "recipes/arith/process.yaml",
            "--model_name_or_path", tiny_dir, "--output_dir", str(out), "--max_steps", "2", "--train_size", "16",
            "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "12",
            "--save_strategy", "no", "--disable_tqdm", "true", "--use_vllm", "true", "--vllm_dtype", "float32",
            "--vllm_max_model_length", "128"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file()
