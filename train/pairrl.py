"""V1-PairRL trainer (arXiv 2603.04304; ALGORITHMS.md "V1"): one model trained in two roles, chosen by prompt.

Launch (TrlParser style: the YAML recipe sets values, command-line flags override them):

    python -m twinloop.train.pairrl --config recipes/arith/pairrl.yaml [--max_steps 20 ...]
    accelerate launch --config_file recipes/accelerate/cpu2.yaml -m twinloop.train.pairrl \
        --config recipes/arith/pairrl.yaml

Each rollout has two stages, in TRL's ``_generate_and_score_completions``:
1. generation role: TRL generates G solutions per problem and scores them with the recipe's verifiable reward
   (``build_reward`` specs); the advantage is GRPO's group mean baseline (``scale_rewards="none"``, no KL);
2. verify role: the solutions and their correctness are gathered from every process (a problem's group may span
   ranks), pairs with at least one correct solution are formed (``pairrl_math.form_pairs``, the same seed on every
   rank), the verify prompts are scattered back in equal slices, the same model writes ratings, and each rating
   earns the 0.2-band reward with a REINFORCE mean baseline over all verify prompts of the step.
Both roles' rows go into one batch; the loss is J = J_gen + λ·J_verify, each role clipped at 0.2/0.28 and
token-meaned over its own tokens, in one optimizer update. Generation uses transformers or colocated / server
vLLM (``use_vllm``), for both roles; TRL's vLLM importance-sampling correction covers the verify rows too.
"""
from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig
from twinloop.rewards.base import checked, message_text
from twinloop.rewards.pairwise import BAND, PAIRWISE_TEMPLATE, parse_ratings
from twinloop.train.common import (
    cpu_overrides,
    load_tokenizer,
    with_flat_recipe,
)
from twinloop.train.gppo import (
    ColocatedGRPOTrainer,
    GPPOScriptArguments,
    build_dataset,
    build_rewards,
    colocated_sampling_kwargs,
    teardown,
)
from twinloop.train.losses import clip_stats, policy_per_token_loss
from twinloop.train.pairrl_math import (
    PAIR_ORDERS,
    combined_loss,
    correctness_labels,
    cross_rank_fraction,
    form_pairs,
    importance_ratio,
    mean_baseline_advantages,
    pairwise_accuracy,
    scatter_slots,
    split_budget,
    verify_rewards,
)

TRUNCATION_MARK = "\n[truncated]"



@dataclass
class PairRLConfig(GRPOConfig):
    """GRPOConfig plus V1-PairRL's knobs. V1 defaults: λ = 1, clip 0.2/0.28, no KL, token-mean, no std scaling.
    Values marked [check] are configurable choices, not fixed by the paper."""

    verify_coef: float = field(default=1.0, metadata={"help": "λ in J = J_gen + λ·J_verify."})
    pairs_per_problem: int = field(default=4, metadata={"help": "verify prompts per problem and step [check]: the "
                                                                "paper's 8 rollouts = 4 generate + 4 verify."})
    pair_order: str = field(default="random", metadata={"help": "'random' (A/B swapped with probability ½) or "
                                                                "'both' (each pair shown in both orders)."})
    verify_band: float = field(default=BAND, metadata={"help": "reward band of the verify role (0.2)."})
    correct_threshold: float = field(default=1.0, metadata={"help": "verifiable reward ≥ this is 'correct' [check]."})
    verify_max_completion_length: int = field(default=64, metadata={"help": "token limit of a rating completion."})
    verify_template: str | None = field(default=None, metadata={"help": "rating prompt with {prompt}, {a}, {b}; "
                                                                        "None: rewards.pairwise.PAIRWISE_TEMPLATE."})
    verify_max_prompt_length: int | None = field(default=None, metadata={
        "help": "token limit of a verify prompt; longer solutions lose their tails (marked). None: the context "
                "(vllm_max_model_length or the model's max positions) minus verify_max_completion_length."})
    epsilon_high: float | None = field(default=0.28, metadata={"help": "ε_h (clip-higher)."})
    scale_rewards: str = field(default="none", metadata={"help": "V1: no std normalisation of the group advantage."})
    vllm_dtype: str | None = field(default=None, metadata={"help": "dtype of the colocated vLLM engine (None: "
                                                                   "vLLM's auto, which downcasts float32)."})

    def __post_init__(self):
        super().__post_init__()
        if self.loss_type != "dapo":
            raise ValueError(f"V1-PairRL token-means each role (loss_type='dapo'); got {self.loss_type!r}")
        if self.beta != 0.0:
            raise ValueError(f"V1-PairRL trains without a KL term (beta=0); got beta={self.beta}")
        if self.use_vllm and self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"vllm_mode must be 'colocate' or 'server'; got {self.vllm_mode!r}")
        if self.use_vllm and self.vllm_mode == "colocate":
            self.generation_kwargs = colocated_sampling_kwargs(self.generation_kwargs)
        if self.pair_order not in PAIR_ORDERS:
            raise ValueError(f"pair_order must be one of {PAIR_ORDERS}; got {self.pair_order!r}")
        if self.pairs_per_problem < (2 if self.pair_order == "both" else 1):
            raise ValueError(f"pairs_per_problem={self.pairs_per_problem} is too small for pair_order="
                             f"{self.pair_order!r}")
        if self.num_generations < 2:
            raise ValueError("pairs need at least 2 generations per problem (num_generations >= 2)")
        if self.verify_coef < 0:
            raise ValueError(f"verify_coef must be >= 0; got {self.verify_coef}")
        template = self.verify_template or PAIRWISE_TEMPLATE
        if not all(f"{{{k}}}" in template for k in ("prompt", "a", "b")):
            raise ValueError("verify_template must contain {prompt}, {a} and {b}")


def _pad_left(rows: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(rows, (width - rows.size(1), 0), value=value)


def _pad_right(rows: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(rows, (0, width - rows.size(1)), value=value)


class PairRLTrainer(ColocatedGRPOTrainer):
    """GRPOTrainer whose rollout adds the verify role and whose loss is J = J_gen + λ·J_verify."""

    _tag_names = ["trl", "v1-pairrl", "twinloop"]
    _name = "V1-PairRL"

    # ---- stage 1: TRL's generation and verifiable reward (captured for pairing) ---------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._pairrl_stage1 = (prompts, completions, rewards_per_func)  # rewards gathered over processes
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        device = out["completion_ids"].device
        out["pairrl_is_verify"] = torch.zeros(out["completion_ids"].size(0), device=device)
        out["pairrl_verify_tokens"] = torch.zeros((), device=device)
        if not self.model.training:  # evaluation scores the generation role only
            return out
        verify = self._verify_rollout()
        return out if verify is None else self._merge(out, verify)

    # ---- stage 2: gather, pair, scatter, rate, reward -----------------------------------------------------------
    def _verify_rollout(self) -> dict[str, torch.Tensor] | None:
        from accelerate.utils import gather_object

        args, acc = self.args, self.accelerator
        prompts, completions, rpf = self._pairrl_stage1
        metrics = self._metrics["train"]
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        labels = correctness_labels(rewards.tolist(), args.correct_threshold)
        problems = gather_object([message_text(p) for p in prompts])
        solutions = gather_object([message_text(c) for c in completions])
        group = self.num_generations
        for g in range(len(problems) // group):
            if len(set(problems[g * group:(g + 1) * group])) != 1:
                raise RuntimeError(f"generation group {g} mixes problems: TRL's sampler order was not kept")
        rng = random.Random(f"{args.seed}-{self.state.global_step}-{self._step}")  # identical on every rank
        pairs = form_pairs(labels, group, args.pairs_per_problem, args.pair_order, rng)
        metrics["verify/prompts"].append(float(len(pairs)))
        metrics["verify/cross_rank_frac"].append(cross_rank_fraction(pairs, len(prompts)))
        if not pairs:
            return None
        metrics["verify/mixed_frac"].append(sum(p.mixed for p in pairs) / len(pairs))
        slots = scatter_slots(len(pairs), acc.num_processes, args.steps_per_generation)[acc.process_index]
        mine = [pairs[k if k is not None else 0] for k in slots]  # padding slots repeat pair 0, weight 0
        weights = [0.0 if k is None else 1.0 for k in slots]
        items = [(problems[p.a // group * group], solutions[p.a], solutions[p.b]) for p in mine]
        prompt_ids, weights = self._verify_prompt_ids(items, isinstance(prompts[0], list), weights)
        with self._verify_generation_length():
            completion_ids, sampling_logps = self._generate_single_turn(prompt_ids, None, {}, 1)
        ratings = [parse_ratings(t) for t in self.processing_class.batch_decode(completion_ids,
                                                                                skip_special_tokens=True)]
        # every rank needs every rating: the baseline is the mean over all verify prompts of the step
        rated = sorted(gather_object([(k, r, w) for k, r, w in zip(slots, ratings, weights) if k is not None]))
        all_ratings = [r for _, r, _ in rated]
        all_rewards = verify_rewards(all_ratings, pairs, args.verify_band)
        all_advantages = mean_baseline_advantages(all_rewards, [w for _, _, w in rated])  # cut-off prompts: out
        advantages = [all_advantages[k] if k is not None else 0.0 for k in slots]
        metrics["verify/reward_mean"].append(sum(all_rewards) / len(all_rewards))
        metrics["verify/unparseable_frac"].append(sum(r is None for r in all_ratings) / len(all_ratings))
        acc_pairs = pairwise_accuracy(all_ratings, pairs)
        if acc_pairs is not None:
            metrics["verify/pair_accuracy"].append(acc_pairs)
        return self._verify_tensors(prompt_ids, completion_ids, advantages, weights, sampling_logps)

    def _verify_prompt_limit(self) -> int:
        if self.args.verify_max_prompt_length is not None:
            return self.args.verify_max_prompt_length
        context = self.args.vllm_max_model_length if self.use_vllm else None
        context = context or getattr(self.accelerator.unwrap_model(self.model).config, "max_position_embeddings", None)
        return (context or 10**9) - self.args.verify_max_completion_length

    def _verify_prompt_ids(self, items: list[tuple[str, str, str]], chat: bool, weights: list[float]
                           ) -> tuple[list[list[int]], list[float]]:
        """Token ids of the verify prompts. A prompt over the limit keeps the leading tokens of its solutions
        (``split_budget``, marked); one still over it (a long problem) is kept out of the loss (weight 0)."""
        template = self.args.verify_template or PAIRWISE_TEMPLATE

        def tokenize(rows):
            texts = [template.format(prompt=p, a=a, b=b) for p, a, b in rows]
            return self._tokenize_prompts([[{"role": "user", "content": t}] for t in texts] if chat else texts)[0]

        ids, limit, tok = tokenize(items), self._verify_prompt_limit(), self._tokenizer
        over = [k for k, x in enumerate(ids) if len(x) > limit]
        slack = 2 * len(tok(TRUNCATION_MARK, add_special_tokens=False)["input_ids"]) + 8  # marks, re-tokenising
        for k in over:
            p, a, b = items[k]
            a_ids, b_ids = (tok(x, add_special_tokens=False)["input_ids"] for x in (a, b))
            length = len(ids[k])
            for attempt in range(1, 4):
                room = len(a_ids) + len(b_ids) - (length - limit) - attempt * slack
                keep_a, keep_b = split_budget(len(a_ids), len(b_ids), room)
                items[k] = (p, *(x if n == len(x_ids) else tok.decode(x_ids[:n]) + TRUNCATION_MARK
                                 for x, x_ids, n in ((a, a_ids, keep_a), (b, b_ids, keep_b))))
                ids[k] = tokenize([items[k]])[0]
                if len(ids[k]) <= limit:
                    break
        weights = [0.0 if len(x) > limit else w for x, w in zip(ids, weights)]
        ids = [x[-limit:] for x in ids]  # still over (a long problem): generated from the tail, never trained on
        counts = torch.tensor([[float(len(over)), float(len(items))]], device=self.accelerator.device)
        over_all, total = self.accelerator.gather(counts).sum(dim=0).tolist()
        self._metrics["train"]["verify/truncated_frac"].append(over_all / max(1.0, total))
        return ids, weights

    @contextmanager
    def _verify_generation_length(self):
        """Rating completions get their own token limit; everything else of the sampling setup is the rollout's."""
        limit = self.args.verify_max_completion_length
        target = self.vllm_generation if self.use_vllm else self.generation_config
        field_name = "max_completion_length" if self.use_vllm else "max_new_tokens"
        saved = getattr(target, field_name)
        setattr(target, field_name, limit)
        try:
            yield
        finally:
            setattr(target, field_name, saved)

    def _verify_tensors(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], advantages: list[float],
                        weights: list[float], sampling_logps: list[list[float | None]] | None = None
                        ) -> dict[str, torch.Tensor]:
        from trl.trainer.utils import pad

        device, pad_id = self.accelerator.device, self._tokenizer.pad_token_id
        prompts = [torch.tensor(ids) for ids in prompt_ids]
        comps = [torch.tensor(ids if ids else [pad_id]) for ids in completion_ids]
        weight = torch.tensor(weights, device=device)
        out = {
            "prompt_ids": pad(prompts, padding_value=pad_id, padding_side="left").to(device),
            "prompt_mask": pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="left").to(device),
            "completion_ids": pad(comps, padding_value=pad_id, padding_side="right").to(device),
            "completion_mask": pad([torch.full_like(c, int(bool(ids))) for c, ids in zip(comps, completion_ids)],
                                   padding_value=0, padding_side="right").to(device),
            "advantages": torch.tensor(advantages, device=device),
        }
        # padding slots are generated (collectives stay in step) but never trained on
        out["completion_mask"] = out["completion_mask"] * weight.long().unsqueeze(1)
        local_tokens = out["completion_mask"].sum().reshape(1).float()
        out["pairrl_verify_tokens"] = self.accelerator.gather(local_tokens).sum()
        if self._needs_old_logps():
            with torch.no_grad():
                ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
                mask = torch.cat([out["prompt_mask"], out["completion_mask"].clamp(max=1)], dim=1)
                out["old_per_token_logps"], _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, mask, out["completion_ids"].size(1),
                    batch_size=self.args.per_device_train_batch_size)
        if sampling_logps is not None:
            rows = [torch.tensor([float("nan") if x is None else x for x in lp] or [0.0]) for lp in sampling_logps]
            out["sampling_per_token_logps"] = pad(rows, padding_value=0.0, padding_side="right").to(device)
            if self.vllm_importance_sampling_correction:
                out["importance_sampling_ratio"] = importance_ratio(
                    out["old_per_token_logps"], out["sampling_per_token_logps"], out["completion_mask"],
                    self.vllm_importance_sampling_mode, self.vllm_importance_sampling_clip_min,
                    self.vllm_importance_sampling_clip_max)
        return out

    def _needs_old_logps(self) -> bool:
        """TRL's rule: π_old is stored when generation and optimizer steps are misaligned."""
        misaligned = self.args.gradient_accumulation_steps % (self.args.steps_per_generation * self.num_iterations)
        return misaligned != 0 or (self.use_vllm and self.vllm_importance_sampling_correction)

    def _merge(self, gen: dict[str, Any], verify: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One batch of both roles' rows (prompts left-padded, completions right-padded to common widths)."""
        known = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages", "num_items_in_batch",
                 "old_per_token_logps", "pairrl_is_verify", "pairrl_verify_tokens", "sampling_per_token_logps",
                 "importance_sampling_ratio"}
        unknown = sorted(set(gen) - known)
        if unknown:
            raise RuntimeError(f"V1-PairRL cannot merge rollout fields {unknown} (tools, images and vLLM are not "
                               "supported)")
        pad_id = self._tokenizer.pad_token_id
        p_width = max(gen["prompt_ids"].size(1), verify["prompt_ids"].size(1))
        c_width = max(gen["completion_ids"].size(1), verify["completion_ids"].size(1))
        out = dict(gen)
        out["prompt_ids"] = torch.cat([_pad_left(x["prompt_ids"], p_width, pad_id) for x in (gen, verify)])
        out["prompt_mask"] = torch.cat([_pad_left(x["prompt_mask"], p_width, 0) for x in (gen, verify)])
        out["completion_ids"] = torch.cat([_pad_right(x["completion_ids"], c_width, pad_id) for x in (gen, verify)])
        out["completion_mask"] = torch.cat([_pad_right(x["completion_mask"], c_width, 0) for x in (gen, verify)])
        out["advantages"] = torch.cat([gen["advantages"], verify["advantages"]])
        for key, fill in (("old_per_token_logps", 0.0), ("sampling_per_token_logps", 0.0),
                          ("importance_sampling_ratio", 1.0)):
            if gen.get(key) is not None:  # a (B, 1) sequence-level ratio keeps its width
                width = c_width if gen[key].size(1) > 1 or verify[key].size(1) > 1 else 1
                out[key] = torch.cat([_pad_right(x[key], width, fill) if x[key].size(1) < width else x[key]
                                      for x in (gen, verify)])
        n_verify = verify["prompt_ids"].size(0)
        out["pairrl_is_verify"] = torch.cat([gen["pairrl_is_verify"], torch.ones(n_verify, device=gen[
            "pairrl_is_verify"].device)])
        out["pairrl_verify_tokens"] = verify["pairrl_verify_tokens"]
        return out

    # ---- loss ------------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], mask.clamp(max=1)], dim=1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                                      completion_ids.size(1), compute_entropy=True)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        advantages = inputs["advantages"]
        per_token = policy_per_token_loss(logps, old, advantages, eps_low=self.epsilon_low,
                                          eps_high=self.epsilon_high, mode="ppo", dual_clip=None)
        if "importance_sampling_ratio" in inputs:
            per_token = per_token * inputs["importance_sampling_ratio"]
        mask = mask.to(logps.dtype)
        is_verify = inputs["pairrl_is_verify"]
        loss, gen_loss, verify_loss = combined_loss(
            per_token, mask, is_verify, self._token_normalizer(inputs["num_items_in_batch"], mode),
            self._token_normalizer(inputs["pairrl_verify_tokens"], mode), self.args.verify_coef)
        stats = clip_stats(logps, old, advantages, mask, self.epsilon_low, self.epsilon_high, None)
        entropy = ((entropies.detach() * mask).sum() / mask.sum().clamp(min=1)).item()
        local = torch.tensor([gen_loss.item(), verify_loss.item(), stats.low, stats.high, entropy],
                             device=logps.device)
        gen_l, verify_l, low, high, entropy = self.accelerator.gather(local.reshape(1, 5)).mean(dim=0).tolist()
        metrics = self._metrics[mode]
        metrics["pairrl/gen_loss"].append(gen_l)
        metrics["pairrl/verify_loss"].append(verify_l)
        metrics["clip_ratio/low_mean"].append(low)
        metrics["clip_ratio/high_mean"].append(high)
        metrics["entropy"].append(entropy)
        return loss


# ---- launch ----------------------------------------------------------------------------------------------------
def build_trainer(script: GPPOScriptArguments, cfg: PairRLConfig, rewards: Sequence[Any] | None = None,
                  train_dataset=None, callbacks=None) -> PairRLTrainer:
    if not os.path.isdir(script.model_name_or_path):
        raise FileNotFoundError(f"model folder not found: {script.model_name_or_path}")
    cfg.model_init_kwargs = {**(cfg.model_init_kwargs or {}), "dtype": script.dtype}
    rewards = rewards if rewards is not None else build_rewards(script, bool(getattr(cfg, "trust_remote_code", False)))
    return PairRLTrainer(model=script.model_name_or_path, reward_funcs=[checked(r) for r in rewards], args=cfg,
                         train_dataset=train_dataset if train_dataset is not None else build_dataset(script),
                         processing_class=load_tokenizer(script.model_name_or_path), callbacks=callbacks)


def parse(argv: Sequence[str]) -> tuple[GPPOScriptArguments, PairRLConfig]:
    from trl import TrlParser

    argv = with_flat_recipe(argv, "train")
    parser = TrlParser((GPPOScriptArguments, PairRLConfig))
    script, cfg = parser.parse_args_and_config(argv + cpu_overrides(argv))
    return script, cfg


def main(argv: Sequence[str] | None = None, callbacks=None) -> int:
    torch.set_num_threads(int(os.environ.get("TWINLOOP_TORCH_THREADS", "1")))
    script, cfg = parse(sys.argv[1:] if argv is None else argv)
    trainer = build_trainer(script, cfg, callbacks=callbacks)
    resume = cfg.resume_from_checkpoint
    if resume in ("auto", "last", "true", "True"):
        from transformers.trainer_utils import get_last_checkpoint

        resume = get_last_checkpoint(cfg.output_dir) if os.path.isdir(cfg.output_dir) else None
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)
    teardown(trainer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
