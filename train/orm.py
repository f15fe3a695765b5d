"""Outcome reward model (scalar ORM): Bradley-Terry on the policy's own samples, via TRL's RewardTrainer.

    python -m twinloop.train.orm --policy_dir checkpoints/tiny-arith-policy --output_dir runs/orm-tiny-arith
    twinloop train orm --config RECIPE.yaml      (TrlParser: YAML values, command-line flags override)

Pairs: chosen = a verified-correct sample, rejected = a verified-wrong sample of the same prompt
(``twinloop.train.rm_data``). With ``--hard_negatives K``, up to K more pairs per prompt whose rejected side is a
correct sample with one step's result changed (it differs from the chosen one in that step); held-out pair
accuracy is reported on the natural pairs and on the hard ones separately.
The model is the policy with a fresh ``num_labels=1`` head. The export is an HF
sequence-classification folder plus ``twinloop_reward.json``; ``ScalarRM.from_pretrained(folder)`` (or
``ScalarRM(engine=VLLMEngine(folder, runner="pooling"))``) scores with it, in training and in search.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import RewardConfig, RewardTrainer
from twinloop.train.checkpointing import AtomicCheckpointMixin
from twinloop.train.common import load_tokenizer
from twinloop.train.rm_data import (
    PolicySampleArguments,
    hard_negative_pairs,
    preference_pairs,
    run_rm_trainer,
    sample_completions,
    score_completions,
    write_reward_bundle,
)

from twinloop.tasks import build_task


@dataclass
class ORMScriptArguments(PolicySampleArguments):
    train_problems: int = 256
    eval_problems: int = 64
    samples_per_problem: int = 8
    max_pairs_per_prompt: int = 4
    hard_negatives: int = field(default=0, metadata={"help": "per prompt: pairs whose rejected side is a correct "
                                                             "sample with one step's result changed."})


@dataclass
class ORMConfig(RewardConfig):
    """TRL RewardConfig; CPU-sized defaults."""

    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 16
    num_train_epochs: float = 2.0
    max_length: int | None = 256


class ORMTrainer(AtomicCheckpointMixin, RewardTrainer):
    _card_method = "ORM"


def build_pairs(script: ORMScriptArguments, split: str, n: int, engine: Any, verifier: Any, seed: int
                ) -> list[dict[str, Any]]:
    rows = build_task(script.task).load(split, n=n)
    comps = sample_completions(engine, rows, script.samples_per_problem, script.sample_temperature,
                               script.sample_max_tokens, seed=seed)
    scores = score_completions(verifier, rows, comps)
    pairs = preference_pairs(rows, comps, scores, script.max_pairs_per_prompt, seed)
    if script.hard_negatives:
        pairs += [{**p, "hard": True} for p in hard_negative_pairs(rows, comps, scores, script.hard_negatives,
                                                                   seed=seed)]
    return pairs


def pair_accuracy(rm: Any, pairs: Sequence[dict[str, Any]]) -> float:
    """Fraction of pairs where the RM scores chosen above rejected."""
    if not pairs:
        return float("nan")
    prompts = [p["prompt"] for p in pairs] * 2
    scores = rm(prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    n = len(pairs)
    return sum(1.0 for a, b in zip(scores[:n], scores[n:]) if a > b) / n


def train_orm(script: ORMScriptArguments, cfg: ORMConfig, train_pairs: Sequence[dict[str, Any]],
              eval_pairs: Sequence[dict[str, Any]] = (), callbacks=None) -> tuple[str, dict[str, float]]:
    """Train, export the RM folder, reload it as a twinloop ScalarRM and measure held-out pair accuracy."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from twinloop.rewards.scalar import ScalarRM

    if not train_pairs:
        raise ValueError("no preference pairs: the policy produced no prompt with both a correct and a wrong sample")
    tok = load_tokenizer(script.policy_dir)
    model = AutoModelForSequenceClassification.from_pretrained(script.policy_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    rows = [{k: v for k, v in p.items() if k != "hard"} for p in train_pairs]
    trainer = ORMTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, callbacks=callbacks)
    trainer.train()
    export = script.export_dir or os.path.join(cfg.output_dir, "rm")
    trainer.save_model(export)
    natural = [p for p in eval_pairs if not p.get("hard")]
    hard = [p for p in eval_pairs if p.get("hard")]
    metrics = {"train_pairs": len(train_pairs), "train_hard_pairs": sum(bool(p.get("hard")) for p in train_pairs),
               "eval_pairs": len(natural), "eval_hard_pairs": len(hard)}
    if trainer.args.should_save:
        tok.save_pretrained(export)
        reloaded = AutoModelForSequenceClassification.from_pretrained(export, num_labels=1).eval()
        rm = ScalarRM(model=reloaded, tokenizer=load_tokenizer(export))
        write_reward_bundle(export, rm, "orm", "ORM", script.policy_dir,
                            {"global_step": trainer.state.global_step, "learning_rate": cfg.learning_rate,
                             "train_pairs": len(train_pairs)})
        metrics["eval_pair_accuracy"] = pair_accuracy(rm, natural)
        if hard:
            metrics["eval_hard_pair_accuracy"] = pair_accuracy(rm, hard)
        metrics["train_pair_accuracy"] = pair_accuracy(rm, list(train_pairs)[:256])
    return export, metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_rm_trainer("orm", (ORMScriptArguments, ORMConfig), build_pairs, train_orm,
                          sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
