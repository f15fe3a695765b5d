"""GPPO policy trainer: TRL's GRPOTrainer with Klear-Reasoner's gradient-preserving clipped loss.

Launch (TrlParser style: the YAML recipe sets values, command-line flags override them):

    python -m twinloop.train.gppo --config recipes/arith/process.yaml [--max_steps 20 ...]
    accelerate launch --config_file recipes/accelerate/cpu2.yaml -m twinloop.train.gppo \
        --config recipes/arith/process.yaml

Only the policy loss changes (see ``twinloop.train.losses``); generation (transformers, vLLM colocated, vLLM
server), reward computation, advantages, logging (``report_to``, progress bars) and checkpointing are TRL's and
the HF Trainer's. Two additions: the DAPO zero-std group filter (groups whose rewards are all equal are
dropped from the loss and from the token count) and Klear's NLL term on fully-correct samples. Rewards are
twinloop Reward objects, passed to TRL unchanged.
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
from twinloop.train.common import (  # noqa: F401  (re-exported for recipes and scripts that import them here)
    arrow_safe,
    config_path,
    cpu_overrides,
    cpu_safe_colocate,
    finish_cpu_colocate,
    launch_command,
    load_tokenizer,
    parse_config,
    recipe_launch_line,
    shutdown_colocated_vllm,
    with_flat_recipe,
)
from twinloop.train.losses import (
    CLIP_MODES,
    clip_stats,
    nonzero_std_groups,
    policy_per_token_loss,
    positive_nll,
    token_mean,
)


@dataclass
class GPPOConfig(GRPOConfig):
    """GRPOConfig plus GPPO's knobs. Klear defaults: ε_l = 0.2, ε_h = 0.28, no KL (beta = 0), token-mean
    (TRL's "dapo" normalizer), 8 rollouts per prompt at temperature 1.0, dual clip c = 10, NLL coefficient 0.1."""

    clip_mode: str = field(default="gppo", metadata={"help": "'gppo' (gradient-preserving) or 'ppo' (hard clip, "
                                                              "= TRL dapo plus dual clip) for side-by-side runs."})
    gppo_beta1: float = field(default=1.0, metadata={"help": "[check] gradient scale below 1-ε_l; README 1, "
                                                              "Klear code 0.25."})
    gppo_beta2: float = field(default=1.0, metadata={"help": "gradient scale above 1+ε_h."})
    dual_clip_c: float | None = field(default=10.0, metadata={"help": "dual clip c for Â<0 (None: off)."})
    positive_loss_coeff: float = field(default=0.1, metadata={"help": "NLL coefficient on fully-correct samples."})
    positive_reward_threshold: float = field(default=1.0, metadata={"help": "weighted reward ≥ this is 'fully "
                                                                           "correct' (1.0 = all tests passed)."})
    filter_zero_std_groups: bool = field(default=True, metadata={"help": "DAPO dynamic filter: drop groups whose "
                                                                        "rewards are all equal."})
    epsilon_high: float | None = field(default=0.28, metadata={"help": "ε_h (clip-higher)."})
    vllm_dtype: str | None = field(default=None, metadata={"help": "dtype of the colocated vLLM engine (None: "
                                                                   "vLLM's auto, which downcasts float32)."})

    def __post_init__(self):
        super().__post_init__()
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}; got {self.clip_mode!r}")
        if self.loss_type != "dapo":
            raise ValueError("GPPO aggregates by token-mean over the global batch (loss_type='dapo'); "
                             f"got {self.loss_type!r}")
        if self.dual_clip_c is not None and self.dual_clip_c <= 1.0:
            raise ValueError(f"dual_clip_c must be > 1 or None; got {self.dual_clip_c}")
        if self.use_vllm and self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"vllm_mode must be 'colocate' or 'server'; got {self.vllm_mode!r}")
        if self.use_vllm and self.vllm_mode == "colocate":
            self.generation_kwargs = colocated_sampling_kwargs(self.generation_kwargs)


def colocated_sampling_kwargs(given: dict[str, Any] | None) -> dict[str, Any]:
    """vLLM SamplingParams extras for colocated generation: TRL reads back token ids only, so vLLM's incremental
    detokenizing of every sampled token is wasted work (8-25% of a 128-rollout tiny-policy generate call on
    CPU). Stop strings need the text, so they keep it; an explicit ``detokenize`` wins."""
    kwargs = dict(given or {})
    if not kwargs.get("stop"):
        kwargs.setdefault("detokenize", False)
    return kwargs


class ColocatedGRPOTrainer(AtomicCheckpointMixin, GRPOTrainer):
    """TRL's GRPOTrainer with atomic checkpoints and a colocated vLLM engine that starts and syncs on CPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with cpu_safe_colocate(kwargs.get("args", args[2] if len(args) > 2 else None)):
            super().__init__(*args, **kwargs)
        finish_cpu_colocate(self)

    def _token_normalizer(self, count: torch.Tensor, mode: str) -> torch.Tensor:
        """The global token count of one optimizer micro-step, as TRL's "dapo" normalizer."""
        normalizer = count.clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return normalizer


class GPPOTrainer(ColocatedGRPOTrainer):
    """GRPOTrainer whose policy loss is GPPO's; everything else is TRL's."""

    _tag_names = ["trl", "gppo", "twinloop"]
    _name = "GPPO"

    # ---- rewards -> keep / positive masks ------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gppo_rewards_per_func = rewards_per_func  # gathered over processes, as TRL normalizes per group
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        rpf = self._gppo_rewards_per_func
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        if self.args.filter_zero_std_groups and group > 1:
            keep = nonzero_std_groups(rewards, group)
        else:
            keep = torch.ones_like(rewards, dtype=torch.bool)
        positive = rewards >= self.args.positive_reward_threshold  # NaN compares False
        n = out["completion_ids"].size(0)
        local = slice(self.accelerator.process_index * n, (self.accelerator.process_index + 1) * n)
        device = out["completion_mask"].device
        keep, positive = keep[local].to(device), (positive[local] & keep[local]).to(device)
        loss_mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        kept_tokens = (loss_mask * keep.unsqueeze(1)).sum()
        pos_tokens = (loss_mask * positive.unsqueeze(1)).sum()
        totals = self.accelerator.gather(torch.stack([kept_tokens, pos_tokens]).reshape(1, 2).float()).sum(dim=0)
        out["gppo_keep"] = keep.float()
        out["gppo_positive"] = positive.float()
        out["num_items_in_batch"] = totals[0]
        out["num_positive_tokens"] = totals[1]
        self._metrics[mode]["gppo/kept_frac"].append(keep.float().mean().item())
        return out

    # ---- loss ----------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        args = self.args
        mode = "train" if self.model.training else "eval"
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True,
            token_type_ids=inputs.get("token_type_ids"))
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        mask = mask * inputs["gppo_keep"].unsqueeze(1)
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages.unsqueeze(1)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old

        per_token = policy_per_token_loss(logps, old, advantages, eps_low=self.epsilon_low, eps_high=self.epsilon_high,
                                          mode=args.clip_mode, beta1=args.gppo_beta1, beta2=args.gppo_beta2,
                                          dual_clip=args.dual_clip_c)
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token = per_token * inputs["importance_sampling_ratio"]
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token = per_token + self.beta * (torch.exp(ref - logps) - (ref - logps) - 1)
        loss = token_mean(per_token, mask, self._token_normalizer(inputs["num_items_in_batch"], mode))
        metrics = self._metrics[mode]
        if args.positive_loss_coeff > 0:
            nll = positive_nll(logps, mask, inputs["gppo_positive"],
                               self._token_normalizer(inputs["num_positive_tokens"], mode))
            loss = loss + args.positive_loss_coeff * nll
            metrics["gppo/positive_nll"].append(self.accelerator.gather(nll.detach()).mean().item())

        stats = clip_stats(logps, old, advantages, mask, self.epsilon_low, self.epsilon_high, args.dual_clip_c)
        entropy = ((entropies.detach() * mask).sum() / mask.sum().clamp(min=1)).item()
        local = torch.tensor([stats.low, stats.high, stats.dual, entropy], device=logps.device)
        low, high, dual, entropy = self.accelerator.gather(local.reshape(1, 4)).mean(dim=0).tolist()
        metrics["clip_ratio/low_mean"].append(low)
        metrics["clip_ratio/high_mean"].append(high)
        metrics["clip_ratio/dual_mean"].append(dual)
        metrics["entropy"].append(entropy)
        return loss


# ---- launch ----------------------------------------------------------------------------------------------------
@dataclass
class GPPOScriptArguments:
    """What the recipe trains on: a model folder, a task spec (``arith``, ``rgym:countdown``: see
    ``twinloop.build.build_task``) and reward specs (aliases, ``module:Class(key=literal)`` or bundle folders: see
    ``twinloop.build.build_reward``), the same spellings ``twinloop eval`` reads."""

    model_name_or_path: str = field(default="checkpoints/tiny-arith-policy", metadata={"help": "HF model folder."})
    task: str = field(default="arith", metadata={"help": "task spec: arith, gsm8k, rgym:countdown, ..."})
    train_size: int = field(default=512, metadata={"help": "training problems."})
    task_seed: int | None = field(default=None, metadata={"help": "seed of the task's train split."})
    reward_funcs: list[str] = field(default_factory=lambda: ["arith_outcome"],
                                    metadata={"help": "reward specs: alias, module:Class(key=literal), bundle."})
    dtype: str = field(default="float32", metadata={"help": "model dtype (float32, bfloat16)."})


def build_rewards(script: GPPOScriptArguments, trust_remote_code: bool = False) -> list[Any]:
    """The recipe's reward specs through the one builder (``task`` serves the task's own reward). Reward classes
    outside ``twinloop.`` load only with the config's ``trust_remote_code``, as models do."""
    from twinloop.build import build_reward

    return [build_reward(s, task=script.task, trust_remote_code=trust_remote_code) for s in script.reward_funcs]


def build_dataset(script: GPPOScriptArguments):
    from datasets import Dataset

    from twinloop.tasks import build_task

    rows = build_task(script.task).load("train", n=script.train_size, seed=script.task_seed)
    if not rows:
        raise ValueError(f"task {script.task!r} gave no training problems (train_size={script.train_size})")
    return Dataset.from_list([arrow_safe(r) for r in rows])


def build_trainer(script: GPPOScriptArguments, cfg: GPPOConfig, rewards: Sequence[Any] | None = None,
                  train_dataset=None, callbacks=None) -> GPPOTrainer:
    check_policy(script.model_name_or_path)
    cfg.model_init_kwargs = {**(cfg.model_init_kwargs or {}), "dtype": script.dtype}
    return GPPOTrainer(model=script.model_name_or_path,
                       reward_funcs=[checked(r) for r in (rewards if rewards is not None else
                                     build_rewards(script, bool(getattr(cfg, "trust_remote_code", False))))],
                       args=cfg, train_dataset=train_dataset if train_dataset is not None else build_dataset(script),
                       processing_class=load_tokenizer(script.model_name_or_path), callbacks=callbacks)


def parse(argv: Sequence[str]) -> tuple[GPPOScriptArguments, GPPOConfig]:
    recipe = config_path(argv)
    argv = with_flat_recipe(argv, "train")
    script, cfg = parse_config((GPPOScriptArguments, GPPOConfig), argv + cpu_overrides(argv), recipe)
    check_script(script)
    return script, cfg


def check_script(script: GPPOScriptArguments) -> None:
    """One-line errors for sizes the config dataclass cannot refuse (the model folder is checked at build time:
    a GPU recipe parses on a machine without its model)."""
    if script.train_size < 1:
        raise ValueError(f"train_size must be >= 1 (training problems), got {script.train_size}")
    if not script.reward_funcs:
        raise ValueError("reward_funcs is empty: name at least one reward spec")


def check_policy(folder: str) -> None:
    """One-line error unless ``folder`` is a policy model folder (not missing, not a reward model)."""
    from twinloop.infer.engine import check_policy_dir

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"model folder not found: {folder}")
    check_policy_dir(folder)


def validate_recipe(recipe: str) -> tuple[GPPOScriptArguments, GPPOConfig, list[str]]:
    """Parse a recipe (GPU ones too, on CPU) and rebuild its stated launch command with ``launch_command``.
    Raises ValueError/FileNotFoundError on a bad recipe."""
    if not os.path.isfile(recipe):
        raise FileNotFoundError(f"recipe not found: {recipe}")
    script, cfg = parse(["--config", recipe])
    stated = recipe_launch_line(recipe)
    if stated[:2] == ["accelerate", "launch"]:
        opts = dict(zip(stated[2::2], stated[3::2]))
        acc = opts.get("--config_file")
        if acc is None or not os.path.isfile(acc):
            raise FileNotFoundError(f"{recipe}: accelerate config {acc!r} not found")
        n = opts.get("--num_processes")
        built = launch_command(recipe, acc, int(n) if n else None)
    else:
        built = launch_command(recipe)
    if built != stated:
        raise ValueError(f"{recipe}: stated launch line {stated} differs from the built one {built}")
    return script, cfg, built


def teardown(trainer: GPPOTrainer) -> None:
    """DeepSpeed on CPU aborts at exit (SIGABRT under ZeRO-3) unless the engine and process group go first;
    a colocated vLLM engine goes before accelerate's end_training."""
    import torch.distributed as dist

    engine = getattr(trainer, "deepspeed", None)
    if engine is not None and hasattr(engine, "destroy"):
        engine.destroy()
    shutdown_colocated_vllm(trainer)
    if getattr(trainer, "process_group_preexisted", False):  # not ours: end the trackers, keep the group
        for tracker in trainer.accelerator.trackers:
            tracker.finish()
        return
    trainer.accelerator.end_training()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None, callbacks=None) -> int:
    torch.set_num_threads(int(os.environ.get("TWINLOOP_TORCH_THREADS", "1")))
    script, cfg = parse(sys.argv[1:] if argv is None else argv)
    trainer = build_trainer(script, cfg, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)  # auto: the newest complete checkpoint
    trainer.save_model(cfg.output_dir)
    teardown(trainer)
    return 0


# `twinloop train gppo ...` (argparse front end: every flag goes through TrlParser)
def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("rest", nargs=argparse.REMAINDER, help="--config RECIPE.yaml and GPPOConfig flags")


def run(args) -> int:
    return main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
