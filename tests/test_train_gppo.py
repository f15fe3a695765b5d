"""GPPOTrainer on a tiny random Qwen2 (CPU, transformers generation, a couple of steps each)."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(request, tmp_path_factory):
    try:
        return str(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from twinloop.tiny import build_random_tiny

        return str(build_random_tiny(tmp_path_factory.mktemp("tiny") / "model"))


def _rows(n=8):
    return [{"prompt": [{"role": "user", "content": f"What is {a} + {a + 1}?"}], "answer": str(2 * a + 1)}
            for a in range(n)]


def _reward(kind):
    from twinloop.rewards.base import RewardBase

    class InlineReward(RewardBase):
        name = f"inline_{kind}"

        def score(self, prompt, completion, **row):
            if kind == "digits":
                return sum(ch.isdigit() for ch in completion) / max(1, len(completion))
            return 1.0  # constant: every group has zero reward std

    return InlineReward()


def _config(out, **kw):
    from twinloop.train.gppo import GPPOConfig

    base = dict(output_dir=str(out), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                max_completion_length=12, max_steps=2, learning_rate=1e-3, logging_steps=1, report_to="none",
                save_strategy="no", seed=0, disable_tqdm=True, bf16=False)
    base.update(kw)
    return GPPOConfig(**base)


def _train(trainer_cls, model, cfg, reward):
    from datasets import Dataset

    trainer = trainer_cls(model=model, reward_funcs=[reward], args=cfg, train_dataset=Dataset.from_list(_rows()))
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    return trainer, logs, before


def test_ppo_mode_is_trl_dapo_exactly(tiny_dir, tmp_path):
    """With the GPPO additions off and a hard clip, the trainer reproduces TRL's own GRPOTrainer(loss_type="dapo"):
    only the policy loss is replaced, everything around it is TRL's."""
    from trl import GRPOConfig, GRPOTrainer
    from twinloop.train.gppo import GPPOTrainer

    cfg = _config(tmp_path / "a", clip_mode="ppo", dual_clip_c=None, positive_loss_coeff=0.0,
                  filter_zero_std_groups=False, num_iterations=2)
    gppo, logs_g, _ = _train(GPPOTrainer, tiny_dir, cfg, _reward("digits"))
    kw = {k: getattr(cfg, k) for k in ("use_cpu", "per_device_train_batch_size", "num_generations",
                                       "max_completion_length", "max_steps", "learning_rate", "logging_steps",
                                       "save_strategy", "seed", "num_iterations", "epsilon_high", "disable_tqdm",
                                       "bf16")}
    trl_cfg = GRPOConfig(output_dir=str(tmp_path / "b"), report_to="none", loss_type="dapo", **kw)
    grpo, logs_t, _ = _train(GRPOTrainer, tiny_dir, trl_cfg, _reward("digits"))
    assert [r["loss"] for r in logs_g] == pytest.approx([r["loss"] for r in logs_t], abs=1e-6)
    assert [r["grad_norm"] for r in logs_g] == pytest.approx([r["grad_norm"] for r in logs_t], rel=1e-5)
    for (n, p), (_, q) in zip(gppo.model.named_parameters(), grpo.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=n)


def test_zero_std_groups_are_dropped(tiny_dir, tmp_path):
    from twinloop.train.gppo import GPPOTrainer

    trainer, logs, before = _train(GPPOTrainer, tiny_dir, _config(tmp_path, positive_loss_coeff=0.1),
                                   _reward("constant"))
    assert all(r["gppo/kept_frac"] == 0.0 and r["frac_reward_zero_std"] == 1.0 for r in logs)
    assert all(r["loss"] == 0.0 and r["grad_norm"] == 0.0 for r in logs)
    for n, p in trainer.model.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=0, atol=0, msg=n)


def test_positive_nll_trains_on_fully_correct_samples(tiny_dir, tmp_path):
    """All rewards 1.0 and no filter: advantages are 0, so the loss is 0.1 × the NLL of the correct samples."""
    from twinloop.train.gppo import GPPOTrainer

    cfg = _config(tmp_path, positive_loss_coeff=0.1, filter_zero_std_groups=False, max_steps=1)
    trainer, logs, before = _train(GPPOTrainer, tiny_dir, cfg, _reward("constant"))
    (row,) = logs
    assert row["gppo/kept_frac"] == 1.0 and row["gppo/positive_nll"] > 1.0
    assert row["loss"] == pytest.approx(0.1 * row["gppo/positive_nll"], rel=1e-4)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_gppo_logs_clip_fractions_and_learns_off_policy(tiny_dir, tmp_path):
    """Several updates per generation make the policy move away from π_old, so tokens leave the trust region;
    GPPO still sends their gradients (clip fractions are logged)."""
    from twinloop.train.gppo import GPPOTrainer

    cfg = _config(tmp_path, num_iterations=3, max_steps=3, learning_rate=3e-2)
    _, logs, _ = _train(GPPOTrainer, tiny_dir, cfg, _reward("digits"))
    assert {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/dual_mean", "entropy"} <= set(logs[0])
    assert max(r["clip_ratio/low_mean"] + r["clip_ratio/high_mean"] for r in logs[1:]) > 0


def test_config_validation():
    from twinloop.train.gppo import GPPOConfig

    with pytest.raises(ValueError, match="clip_mode"):
        GPPOConfig(output_dir="/tmp/x", clip_mode="sapo", use_cpu=True)
    with pytest.raises(ValueError, match="token-mean"):
        GPPOConfig(output_dir="/tmp/x", loss_type="grpo", use_cpu=True)
    with pytest.raises(ValueError, match="dual_clip_c"):
        GPPOConfig(output_dir="/tmp/x", dual_clip_c=0.5, use_cpu=True)
    server = GPPOConfig(output_dir="/tmp/x", use_cpu=True, use_vllm=True, vllm_mode="server",
                        vllm_server_base_url="http://127.0.0.1:8000")
    assert server.vllm_mode == "server" and server.epsilon_high == 0.28 and server.beta == 0.0


def test_recipes_parse_and_cli_flags_override():
    from twinloop.train.gppo import parse, validate_recipe

    script, cfg = parse(["--config", str(REPO / "recipes/arith/process.yaml"), "--max_steps", "3",
                         "--gppo_beta1", "0.25"])
    assert cfg.max_steps == 3 and cfg.gppo_beta1 == 0.25 and cfg.num_generations == 8
    assert script.reward_funcs == ["arith_process(aggregation='mean')"] and script.task == "arith"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for recipe, head in [("recipes/arith/process.yaml", ["python", "-m", "twinloop.train.gppo"]),
                             ("recipes/gppo/qwen2.5-1.5b-math.yaml",
                              ["accelerate", "launch", "--config_file", "recipes/accelerate/zero2.yaml",
                               "--num_processes", "8", "-m", "twinloop.train.gppo"])]:
            _, cfg, argv = validate_recipe(recipe)
            assert argv == head + ["--config", recipe]
        assert cfg.use_vllm and cfg.vllm_mode == "colocate" and cfg.bf16
    finally:
        os.chdir(cwd)
    with pytest.raises(FileNotFoundError):
        validate_recipe("recipes/gppo/missing.yaml")


def test_accelerate_configs_parse():
    import yaml

    for name in ("cpu2", "multi_gpu", "zero2", "zero3", "multi_node"):
        cfg = yaml.safe_load((REPO / "recipes/accelerate" / f"{name}.yaml").read_text())
        assert cfg["distributed_type"] in ("MULTI_GPU", "DEEPSPEED")
        ds = cfg.get("deepspeed_config", {}).get("deepspeed_config_file")
        if ds:
            assert (REPO / ds).is_file()
    import json

    z3 = json.loads((REPO / "recipes/accelerate/ds_zero3.json").read_text())
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_main_runs_a_recipe_end_to_end(tiny_dir, tmp_path):
    """`python -m twinloop.train.gppo --config tiny-arith.yaml` path, in-process: task rows, Reward objects from
    module:Class specs, a checkpoint with a model card, the final model in output_dir."""
    from twinloop.train.gppo import main

    out = tmp_path / "run"
    rc = main(["--config", str(REPO / "recipes/arith/process.yaml"), "--model_name_or_path", tiny_dir,
               "--output_dir", str(out), "--max_steps", "2", "--train_size", "16", "--per_device_train_batch_size",
               "8", "--num_generations", "4", "--max_completion_length", "12", "--save_steps", "1",
               "--save_total_limit", "1", "--disable_tqdm", "true"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # save_total_limit
    ckpt = out / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer_config.json").is_file()
    assert "GPPO" in (ckpt / "README.md").read_text()
    assert not any((out / ".staging").iterdir())
    assert (out / "model.safetensors").is_file()


def test_an_in_process_run_leaves_a_process_group_it_did_not_create(tiny_dir, tmp_path):
    """An in-process vLLM engine (or a caller) may already hold the process group: teardown used to destroy it
    (accelerate's end_training and destroy_process_group), which broke every later vLLM engine in the process
    ("not initialized in the world group map")."""
    import torch.distributed as dist
    from twinloop.infer.engine import free_port
    from twinloop.train.gppo import main

    ours = not dist.is_initialized()  # in the full suite an earlier test's vLLM engine may hold one already
    if ours:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        rc = main(["--config", str(REPO / "recipes/arith/process.yaml"), "--model_name_or_path", tiny_dir,
                   "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--train_size", "8",
                   "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "4",
                   "--save_strategy", "no", "--disable_tqdm", "true"])
        assert rc == 0
        assert dist.is_initialized()
        group = dist.group.WORLD
        assert dist.get_world_size(group) == 1  # the same, still usable group
        dist.barrier(group)
    finally:
        if ours and dist.is_initialized():
            dist.destroy_process_group()


def test_task_family_rows_are_arrow_safe_and_the_task_reward_is_the_tasks_own():
    from fractions import Fraction

    from twinloop.train.gppo import GPPOScriptArguments, arrow_safe, build_dataset, build_rewards

    assert arrow_safe({"a": Fraction(1, 2), "b": [1, (2.5, None)], 3: "x"}) == {"a": "1/2", "b": [1, [2.5, None]],
                                                                                 "3": "x"}
    script = GPPOScriptArguments(task="rgym:gsm_symbolic", train_size=4, reward_funcs=["task"])
    ds = build_dataset(script)
    (reward,) = build_rewards(script)
    rows = list(ds)  # as TRL hands them to rewards: one dict per example
    cols = {k: [r[k] for r in rows] for k in ds.column_names if k != "prompt"}
    right = [f"\\boxed{{{r['answer']}}}" for r in rows]
    assert reward([r["prompt"] for r in rows], right, **cols) == [1.0] * 4
    with pytest.raises(ValueError, match="unknown reward"):
        build_rewards(GPPOScriptArguments(reward_funcs=["no_colon"]))


def test_reward_specs_take_keyword_literals():
    from twinloop.build import split_call
    from twinloop.train.gppo import GPPOScriptArguments, build_rewards

    from twinloop.tasks.arith import ArithProcessReward

    assert split_call("m:C") == ("m:C", {})
    assert split_call("m:C(a='x', b=2, c=[1, 2])") == ("m:C", {"a": "x", "b": 2, "c": [1, 2]})
    specs = ["twinloop.tasks.arith:ArithProcessReward(aggregation='mean')", "arith_process"]
    (mean, strict) = build_rewards(GPPOScriptArguments(reward_funcs=specs))
    assert isinstance(mean, ArithProcessReward) and (mean.aggregation, strict.aggregation) == ("mean", "min")
    prompt = [{"role": "user", "content": "Compute 2 + 3 * 4. ..."}]
    one_wrong = "3 * 4 = 12\n\n2 + 12 = 15\n\nAnswer: \\boxed{15}"
    # one right step of three: the wrong sum, and the answer 15 is not the true 14
    assert mean([prompt], [one_wrong], expression=["2 + 3 * 4"]) == [pytest.approx(1 / 3)]
    assert strict([prompt], [one_wrong], expression=["2 + 3 * 4"]) == [0.0]
    for bad in ["m:C(1)", "m:C(a=open('x'))", "m:C(a="]:
        with pytest.raises(ValueError, match="module:Class"):
            split_call(bad)


def test_colocated_generation_skips_detokenizing_unless_stop_strings_need_it():
    from twinloop.train.gppo import GPPOConfig, colocated_sampling_kwargs

    assert colocated_sampling_kwargs(None) == {"detokenize": False}
    assert colocated_sampling_kwargs({"stop": ["\n\n"]}) == {"stop": ["\n\n"]}
    assert colocated_sampling_kwargs({"detokenize": True}) == {"detokenize": True}
    common = dict(output_dir="/tmp/unused", use_cpu=True, per_device_train_batch_size=8, num_generations=4)
    assert GPPOConfig(**common, use_vllm=True, vllm_mode="colocate").generation_kwargs == {"detokenize": False}
    assert not GPPOConfig(**common).generation_kwargs  # transformers generation: untouched
