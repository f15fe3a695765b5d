"""CTRL trainer (InfAlign, arXiv 2412.19792): calibrate the base reward against reference samples, transform it
for the decoding the policy will meet, then KL-regularised RL with TRL's GRPO.

Launch (TrlParser style: the YAML recipe sets values, command-line flags override them):

    python -m twinloop.train.ctrl --config recipes/arith/ctrl.yaml [--max_steps 20 ...]
    accelerate launch --config_file recipes/accelerate/cpu2.yaml -m twinloop.train.ctrl --config recipes/arith/ctrl.yaml

Pipeline: (1) m reference samples per training prompt from π_ref (the starting policy) on a transformers engine,
cached on disk by ``ReferenceSamples`` (the main process draws them, the others read the cache); (2) Ĉ against
them; (3) the transform from ``decoding``/``decoding_n`` (``transform_for_decoding``: best_of_n -> exp(t·u),
worst_of_n -> -exp(-t·u), sampling -> identity, t from ``best_t`` at ``kl_budget``), mapped onto [0, 1];
(4) GRPO with β > 0 and ``scale_rewards="none"`` (std scaling would undo Φ's shape). With β left unset it is the
analytical one: the β that puts the aligned policy at ``kl_budget`` (sequence-level KL, since TRL's token-mean
loss sums the per-token PG and KL terms over the same tokens). ``reward_mode`` gives the baselines the issue
compares with: ``calibrated`` (the identity of Ĉ) and ``raw`` (standard RLHF on the base reward).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from twinloop.rewards.base import checked
from twinloop.train.checkpointing import AtomicCheckpointMixin
from twinloop.train.common import config_path, cpu_overrides, load_tokenizer, parse_config, with_flat_recipe
from twinloop.train.gppo import GPPOScriptArguments, build_dataset, check_policy, check_script, teardown

REWARD_MODES = ("ctrl", "calibrated", "raw")


@dataclass
class CTRLConfig(GRPOConfig):
    """GRPOConfig plus CTRL's knobs. Defaults marked [check] are configurable choices, not the paper's."""

    reward_mode: str = field(default="ctrl", metadata={"help": "'ctrl' (Φ(Ĉ) for the decoding), 'calibrated' "
                                                               "(Ĉ: the plain-win-rate optimum), 'raw' (base reward)."})
    decoding: str = field(default="best_of_n", metadata={"help": "decoding the policy will meet, as twinloop eval "
                                                                 "names it: best_of_n, worst_of_n, sampling."})
    decoding_n: int = field(default=4, metadata={"help": "N of best/worst-of-N (the eval budget)."})
    kl_budget: float | None = field(default=None, metadata={"help": "KL(π‖π_ref) in nats that t (and an unset β) "
                                                                    "are tuned for; None: 0.5 [check]."})
    ctrl_t: float | None = field(default=None, metadata={"help": "explicit transform exponent t (overrides best_t)."})
    beta: float | None = field(default=None, metadata={"help": "KL coefficient (> 0); None: the analytical β for "
                                                               "kl_budget (for raw: the calibrated one)."})
    scale_rewards: str = field(default="none", metadata={"help": "must stay 'none': std scaling undoes Φ."})
    reference_m: int = field(default=16, metadata={"help": "reference samples per prompt (paper ~100) [check]."})
    reference_temperature: float | None = field(default=None, metadata={"help": "None: the rollout temperature."})
    reference_max_tokens: int | None = field(default=None, metadata={"help": "None: max_completion_length."})
    reference_cache: str = field(default="runs/ctrl-references", metadata={"help": "reference sample cache folder."})

    def __post_init__(self):
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}; got {self.reward_mode!r}")
        if self.scale_rewards not in ("none", False):
            raise ValueError(f"CTRL needs scale_rewards='none' (std scaling undoes Φ); got {self.scale_rewards!r}")
        self.plan = ctrl_plan(self.reward_mode, self.decoding, self.decoding_n, self.kl_budget, self.ctrl_t)
        if self.beta is None:
            self.beta = self.plan["beta"]
        if not self.beta > 0:
            raise ValueError(f"CTRL is KL-regularised RL: beta must be > 0; got {self.beta}")
        super().__post_init__()


def ctrl_plan(reward_mode: str, decoding: str, n: int, kl_budget: float | None, t: float | None) -> dict[str, Any]:
    """The transform and the analytical β (for [0, 1]-ranged rewards) of one reward mode."""
    from twinloop.rewards.calibrated import transform_for_decoding, unit_beta

    if reward_mode == "ctrl":
        plan = transform_for_decoding(decoding, n, kl_budget, t)
    else:  # calibrated and raw: the identity (raw rewards here are in [0, 1] as Ĉ is)
        plan = transform_for_decoding("sampling", 1, kl_budget)
    beta = plan["rl_beta"] if plan["transform"] == "none" else unit_beta(plan["rl_beta"], plan["transform"], plan["t"])
    return {**plan, "beta": beta, "reward_mode": reward_mode}


def calibrated_spec(base: str, cfg: CTRLConfig, model_dir: str) -> str:
    """The CalibratedReward spec of a run: the base reward, the decoding it is transformed for and the reference
    settings, all literals (the reference engine is context)."""
    decoding = cfg.decoding if cfg.reward_mode == "ctrl" else "sampling"
    n = cfg.decoding_n if cfg.reward_mode == "ctrl" else 1
    kwargs = {"base": base, "decoding": decoding, "n": n, "kl_budget": cfg.plan["kl_budget"], "unit_range": True,
              "m": cfg.reference_m, "max_tokens": cfg.reference_max_tokens or cfg.max_completion_length,
              "temperature": cfg.reference_temperature if cfg.reference_temperature is not None else cfg.temperature,
              "top_p": cfg.top_p, "cache_dir": cfg.reference_cache, "model_id": os.path.abspath(model_dir),
              "seed": cfg.seed}
    if cfg.ctrl_t is not None and decoding != "sampling":
        kwargs["t"] = cfg.ctrl_t
    return "calibrated(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def build_reward(script: GPPOScriptArguments, cfg: CTRLConfig, prompts: Sequence[Any]) -> Any:
    """The run's reward through the one builder. Reference samples for every training prompt are drawn up front by
    the main process (others wait, then read the disk cache)."""
    from accelerate import PartialState

    from twinloop.build import build_reward as build

    if len(script.reward_funcs) != 1:
        raise ValueError(f"CTRL calibrates one base reward; got {len(script.reward_funcs)}: {script.reward_funcs}")
    trust = bool(getattr(cfg, "trust_remote_code", False))
    if cfg.reward_mode == "raw":
        return build(script.reward_funcs[0], task=script.task, trust_remote_code=trust)
    spec = calibrated_spec(script.reward_funcs[0], cfg, script.model_name_or_path)
    with PartialState().main_process_first():
        engine = None
        if PartialState().is_main_process:
            from twinloop.infer.hf_engine import HFEngine

            engine = HFEngine(script.model_name_or_path, tokenizer=load_tokenizer(script.model_name_or_path),
                              dtype=script.dtype)
        reward = build(spec, task=script.task, engine=engine if engine is not None else _NoEngine(),
                       trust_remote_code=trust)
        unique = list({_key(p): p for p in prompts}.values())
        reward.references.get(unique)  # main: draws and saves; the others: all cached by now
    return reward


class _NoEngine:
    """Stands in for the reference engine on non-main processes: every sample comes from the main's cache."""

    model = None

    def generate(self, requests, sampling):
        raise RuntimeError("reference samples missing from the cache on a non-main process")


def _key(prompt: Any) -> str:
    from twinloop.rewards.calibrated import prompt_key

    return prompt_key(prompt)


class CTRLTrainer(AtomicCheckpointMixin, GRPOTrainer):
    """TRL's GRPOTrainer on Φ(Ĉ) with β > 0 and no std scaling; everything else is TRL's."""

    _tag_names = ["trl", "ctrl", "twinloop"]
    _name = "CTRL"


def build_trainer(script: GPPOScriptArguments, cfg: CTRLConfig, reward: Any = None, train_dataset=None,
                  callbacks=None) -> CTRLTrainer:
    check_policy(script.model_name_or_path)
    dataset = train_dataset if train_dataset is not None else build_dataset(script)
    reward = reward if reward is not None else build_reward(script, cfg, dataset["prompt"])
    cfg.model_init_kwargs = {**(cfg.model_init_kwargs or {}), "dtype": script.dtype}
    return CTRLTrainer(model=script.model_name_or_path, reward_funcs=[checked(reward)], args=cfg,
                       train_dataset=dataset, processing_class=load_tokenizer(script.model_name_or_path),
                       callbacks=callbacks)


def parse(argv: Sequence[str]) -> tuple[GPPOScriptArguments, CTRLConfig]:
    recipe = config_path(argv)
    argv = with_flat_recipe(argv, "train")
    script, cfg = parse_config((GPPOScriptArguments, CTRLConfig), argv + cpu_overrides(argv), recipe)
    check_script(script)
    return script, cfg


def main(argv: Sequence[str] | None = None, callbacks=None) -> int:
    import json

    torch.set_num_threads(int(os.environ.get("TWINLOOP_TORCH_THREADS", "1")))
    script, cfg = parse(sys.argv[1:] if argv is None else argv)
    trainer = build_trainer(script, cfg, callbacks=callbacks)
    trainer.train()
    trainer.save_model(cfg.output_dir)
    if trainer.accelerator.is_main_process:
        plan = {**cfg.plan, "beta_used": cfg.beta, "base_reward": script.reward_funcs[0]}
        with open(os.path.join(cfg.output_dir, "ctrl_plan.json"), "w") as f:
            json.dump(plan, f, indent=1)
    teardown(trainer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
