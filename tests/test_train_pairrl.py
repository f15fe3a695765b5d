"""V1-PairRL trainer on the shipped tiny policy (CPU, transformers generation, a couple of steps each)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "checkpoints" / "tiny-arith-policy"

# Correctness by rank: every solution of rank 0 is "correct", every one of rank 1 is not. With 2 solutions per rank
# and 4 per problem, each problem's group spans both ranks, and only pairs across ranks are mixed.
RANK_REWARD = '''
import torch.distributed as dist

from twinloop.rewards.base import RewardBase


class RankSplit(RewardBase):
    name = "rank_split"

    def score(self, prompt, completion, **row):
        return 1.0 if dist.get_rank() == 0 else 0.0
'''


def _rows(n=4):
    from twinloop.tasks import build_task

    return build_task("arith").load("train", n=n, seed=0)


class _Alternating:
    """Solutions 0, 2, ... of each batch are correct, 1, 3, ... are not: every group holds both (a fake reward for
    the trainer's own logic)."""

    __name__ = "alternating"

    def __call__(self, prompts, completions, **columns):
        return [1.0 - (k % 2) for k in range(len(completions))]


def _config(out, **kw):
    from twinloop.train.pairrl import PairRLConfig

    base = dict(output_dir=str(out), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                max_completion_length=24, verify_max_completion_length=8, max_steps=2, learning_rate=1e-3,
                logging_steps=1, report_to="none", save_strategy="no", seed=0, disable_tqdm=True, bf16=False)
    base.update(kw)
    return PairRLConfig(**base)


def test_config_defaults_and_validation():
    from twinloop.train.pairrl import PairRLConfig

    cfg = PairRLConfig(output_dir="/tmp/x", use_cpu=True)
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.loss_type, cfg.scale_rewards) == (0.2, 0.28, 0.0, "dapo",
                                                                                          "none")
    assert cfg.verify_coef == 1.0 and cfg.pairs_per_problem == 4 and cfg.verify_band == 0.2
    for bad, match in [(dict(beta=0.1), "KL"), (dict(loss_type="grpo"), "token-means"),
                       (dict(pair_order="sorted"), "pair_order"), (dict(pair_order="both", pairs_per_problem=1),
                                                                   "too small"),
                       (dict(verify_template="rate {a}"), "verify_template"), (dict(verify_coef=-1), "verify_coef")]:
        with pytest.raises(ValueError, match=match):
            PairRLConfig(output_dir="/tmp/x", use_cpu=True, **bad)


def _one_step(tmp_path, **kw):
    import twinloop.train.pairrl as pairrl
    from datasets import Dataset

    trainer = pairrl.PairRLTrainer(model=str(POLICY), reward_funcs=[_Alternating()], args=_config(tmp_path, **kw),
                                   train_dataset=Dataset.from_list(_rows()),
                                   processing_class=pairrl.load_tokenizer(str(POLICY)))
    trainer.train()
    return trainer, [r for r in trainer.state.log_history if "loss" in r]


def test_one_update_trains_both_roles(tmp_path, monkeypatch):
    """One step on the tiny policy: every group holds correct and wrong solutions, so each step forms 4 verify
    prompts per problem. Ratings are read by a fixed fake parser (the tiny policy writes no rating tags), so the
    verify rewards vary. The same seeded step with λ = 0 updates the weights differently: the verify role's
    gradient is in the update. (On-policy, each role's loss value is ~0 by construction: advantages are centred.)"""
    import twinloop.train.pairrl as pairrl

    monkeypatch.setattr(pairrl, "parse_ratings", lambda text: (10, 1))  # "A correct, B wrong", whatever it read
    joint, logs = _one_step(tmp_path / "joint", max_steps=1)
    (row,) = logs
    assert row["verify/prompts"] == 8.0  # 2 problems x 4 (5 eligible pairs each, capped at 4)
    assert row["verify/cross_rank_frac"] == 0.0 and row["verify/unparseable_frac"] == 0.0
    # (10, 1) earns 1 on a (correct, wrong) pair, 0 on (wrong, correct) and ½ on (correct, correct)
    assert 0.0 < row["verify/reward_mean"] < 1.0
    assert {"pairrl/gen_loss", "pairrl/verify_loss", "verify/mixed_frac", "verify/pair_accuracy"} <= set(row)
    assert row["loss"] == pytest.approx(row["pairrl/gen_loss"] + row["pairrl/verify_loss"], abs=1e-6)
    gen_only, (row0,) = _one_step(tmp_path / "gen", max_steps=1, verify_coef=0.0)
    assert row0["verify/reward_mean"] == row["verify/reward_mean"]  # same seeded rollout and pairs
    assert row0["loss"] == pytest.approx(row0["pairrl/gen_loss"], abs=1e-7)
    moved = [n for (n, p), (_, q) in zip(joint.model.named_parameters(), gen_only.model.named_parameters())
             if not torch.allclose(p, q, rtol=0, atol=1e-7)]
    assert moved, "the verify role did not change the update"


def test_generation_role_is_trl_grpo_exactly(tmp_path, monkeypatch):
    """With λ = 0 the update is TRL's own GRPOTrainer (dapo token-mean, no std scaling, clip 0.2/0.28, no KL) on
    the same seeded rollout, although the batch also holds the verify rows (wider padding, zero weight)."""
    import twinloop.train.pairrl as pairrl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setattr(pairrl, "parse_ratings", lambda text: (10, 1))
    ours, (row,) = _one_step(tmp_path / "ours", max_steps=1, verify_coef=0.0, optim="sgd", learning_rate=1.0)
    assert row["verify/prompts"] == 8.0
    cfg = _config(tmp_path / "trl", max_steps=1, optim="sgd", learning_rate=1.0)  # Adam would amplify float noise
    kw = {k: getattr(cfg, k) for k in ("use_cpu", "per_device_train_batch_size", "num_generations",
                                       "max_completion_length", "max_steps", "learning_rate", "logging_steps",
                                       "save_strategy", "seed", "disable_tqdm", "bf16", "epsilon", "epsilon_high",
                                       "optim")}
    trl_cfg = GRPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", loss_type="dapo", scale_rewards="none",
                         beta=0.0, **kw)
    theirs = GRPOTrainer(model=str(POLICY), reward_funcs=[_Alternating()], args=trl_cfg,
                         train_dataset=Dataset.from_list(_rows()), processing_class=pairrl.load_tokenizer(str(POLICY)))
    theirs.train()
    (trl_row,) = [r for r in theirs.state.log_history if "loss" in r]
    assert row["reward"] == trl_row["reward"] and row["completions/mean_length"] == trl_row["completions/mean_length"]
    assert row["grad_norm"] == pytest.approx(trl_row["grad_norm"], rel=1e-4)
    # SGD at lr 1: the weights moved by the gradient itself; summation order differs (padding widths): 1e-5
    for (n, p), (_, q) in zip(ours.model.named_parameters(), theirs.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=n)


def test_unparseable_ratings_give_the_verify_role_no_gradient(tmp_path):
    """The tiny policy writes no rating tags: every verify reward is 0, every advantage 0, and the update equals
    the generation-only one (λ = 0) within float noise."""
    joint, (row,) = _one_step(tmp_path / "joint", max_steps=1)
    assert row["verify/unparseable_frac"] == 1.0 and row["verify/reward_mean"] == 0.0
    gen_only, _ = _one_step(tmp_path / "gen", max_steps=1, verify_coef=0.0)
    for (n, p), (_, q) in zip(joint.model.named_parameters(), gen_only.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)


def test_buffered_rollout_with_several_updates_per_generation(tmp_path, monkeypatch):
    """steps_per_generation 2 and num_iterations 2: one rollout (2 problems, 8 solutions, 8 verify prompts) is
    split into micro-batches of both roles and reused for 4 updates against the stored π_old of each role; at a
    high learning rate the later updates leave the trust region (clip fractions > 0)."""
    import twinloop.train.pairrl as pairrl

    monkeypatch.setattr(pairrl, "parse_ratings", lambda text: (10, 1))
    trainer, logs = _one_step(tmp_path, per_device_train_batch_size=4, steps_per_generation=2, num_iterations=2,
                              gradient_accumulation_steps=2, max_steps=2, learning_rate=3e-2)
    assert len(logs) == 2 and trainer._needs_old_logps()
    assert logs[0]["verify/prompts"] == 8.0 and "verify/prompts" not in logs[1]  # the second step reuses it
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in logs)
    assert logs[1]["clip_ratio/low_mean"] + logs[1]["clip_ratio/high_mean"] > 0


def test_long_solutions_are_cut_to_fit_the_verify_prompt(tmp_path):
    import twinloop.train.pairrl as pairrl
    from datasets import Dataset

    trainer = pairrl.PairRLTrainer(model=str(POLICY), reward_funcs=[_Alternating()],
                                   args=_config(tmp_path, verify_max_prompt_length=600),
                                   train_dataset=Dataset.from_list(_rows()),
                                   processing_class=pairrl.load_tokenizer(str(POLICY)))
    long = "12 + 30 = 42\n\n" * 60  # ~ 480 tokens
    items = [("Compute 12 + 30 step by step.", "12 + 30 = 42", "Answer: \\boxed{42}"),
             ("Compute 12 + 30 step by step.", long, long + "end"),
             ("Compute 12 + 30 step by step.", "short", long),
             ("What? " * 400, "a", "b")]  # the problem alone is over the limit
    ids, weights = trainer._verify_prompt_ids(items, True, [1.0] * 4)
    assert all(len(x) <= 600 for x in ids) and weights == [1.0, 1.0, 1.0, 0.0]
    texts = [trainer.processing_class.decode(x) for x in ids]
    assert pairrl.TRUNCATION_MARK not in texts[0] and texts[1].count(pairrl.TRUNCATION_MARK) == 2
    assert "[Solution A]\nshort\n[End of Solution A]" in texts[2] and texts[2].count(pairrl.TRUNCATION_MARK) == 1
    assert len(ids[1]) > 550  # the room left is used, not thrown away
    assert trainer._metrics["train"]["verify/truncated_frac"] == [0.75]


def test_recipe_parses_and_main_runs(tmp_path):
    """`python -m twinloop.train.pairrl --config recipes/arith/pairrl.yaml` in-process with the recipe's own
    verifiable reward (the tiny policy may or may not form pairs in 1 step; the run must complete either way)."""
    from twinloop.train.pairrl import main, parse

    from twinloop.cli import TRAINERS

    recipe = str(REPO / "recipes/arith/pairrl.yaml")
    script, cfg = parse(["--config", recipe, "--max_steps", "3"])
    assert TRAINERS["pairrl"] == "twinloop.train.pairrl"
    assert script.reward_funcs == ["arith_outcome"] and script.task == "arith" and cfg.max_steps == 3
    assert cfg.num_generations == 4 and cfg.pairs_per_problem == 4 and cfg.verify_coef == 1.0
    from twinloop.infer.eval_config import recipe_defaults

    assert recipe_defaults(recipe)["reward"] == "arith_outcome"  # the eval section reads the same reward
    out = tmp_path / "run"
    rc = main(["--config", recipe, "--output_dir", str(out), "--max_steps", "1", "--train_size", "8",
               "--per_device_train_batch_size", "8", "--max_completion_length", "48",
               "--verify_max_completion_length", "8", "--save_strategy", "no", "--disable_tqdm", "true"])
    assert rc == 0 and (out / "model.safetensors").is_file()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_pair_across_rank_split_groups(tmp_path):
    """2-process `accelerate launch` (DDP over gloo): 2 solutions per rank, 4 per problem, so every group spans
    both ranks; pairs must be formed from the gathered group (most of them across ranks) and the verify prompts
    scattered back (2 per rank), and the step must complete with both roles' losses logged."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "rank_reward.py").write_text(RANK_REWARD)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'mods'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/cpu2.yaml",
            "--main_process_port", str(_free_port()), "-m", "twinloop.train.pairrl",
            "--config", "recipes/arith/pairrl.yaml", "--output_dir", str(out),
            "--max_steps", "1", "--train_size", "8", "--per_device_train_batch_size", "2", "--num_generations", "4",
            "--max_completion_length", "16", "--verify_max_completion_length", "8", "--save_strategy", "steps",
            "--save_steps", "1", "--logging_steps", "1", "--disable_tqdm", "true",
            "--reward_funcs", "rank_reward:RankSplit", "--trust_remote_code", "true"]
    res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    logs = [r for r in state["log_history"] if "loss" in r]
    assert len(logs) == 1
    for row in logs:
        # one problem per step (2 ranks x 2 solutions): pairs (0,1) (0,2) (0,3) (1,2) (1,3) are eligible, 4 are
        # drawn, and at most the rank-0 pair (0,1) stays on one rank; {2,3} (both wrong, on rank 1) is never drawn
        assert row["verify/prompts"] == 4.0
        assert row["verify/cross_rank_frac"] >= 0.75
        assert row["verify/mixed_frac"] == row["verify/cross_rank_frac"]
        assert {"pairrl/gen_loss", "pairrl/verify_loss", "verify/reward_mean"} <= set(row) and row["grad_norm"] > 0
