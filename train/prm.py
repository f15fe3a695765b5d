"""Process reward model (PRM) from Monte-Carlo step labels on the policy's own samples.

    python -m twinloop.train.prm --policy_dir checkpoints/tiny-arith-policy --output_dir runs/prm-tiny-arith
    twinloop train prm --config RECIPE.yaml      (TrlParser: YAML values, command-line flags override)

Labels come from ``twinloop.train.rm_data.mc_step_labels``. With ``--hard_negatives true`` every training
sample labelled good in all steps also appears with one step's result changed, labelled bad from that step on
(``rm_data.one_step_negatives``: it differs from a good sample in one step); held-out data stay as sampled.
The model is the policy with a fresh 2-label
token-classification head, trained (HF Trainer, cross-entropy) only at the step-tag position after each step;
the inputs are built by ``rewards.process.build_step_inputs``, the same function ``TokenClassifierPRM`` reads
with, so training and scoring see identical ids. The export is an HF token-classification folder plus
``twinloop_reward.json``; ``TokenClassifierPRM.from_pretrained(folder, delimiter=..., aggregation=...)`` loads it.
"""
from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import Trainer, TrainingArguments
from twinloop.train.checkpointing import AtomicCheckpointMixin
from twinloop.train.common import load_tokenizer
from twinloop.train.rm_data import (
    PolicySampleArguments,
    mc_step_labels,
    one_step_negatives,
    run_rm_trainer,
    sample_completions,
    write_reward_bundle,
)

from twinloop.tasks import build_task


@dataclass
class PRMScriptArguments(PolicySampleArguments):
    train_problems: int = 128
    eval_problems: int = 32
    samples_per_problem: int = 4
    rollouts: int = 8
    threshold: float | None = field(default=None, metadata={"help": "[check] success rate for a good step; "
                                                                   "None = at least one success."})
    delimiter: str = "\n\n"
    aggregation: str = field(default="min", metadata={"help": "how the exported PRM reduces step scores."})
    max_length: int = 512
    hard_negatives: bool = field(default=False, metadata={"help": "add one-step-changed copies of all-good "
                                                                  "training samples, labelled bad from there."})


@dataclass
class PRMConfig(TrainingArguments):
    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 16
    num_train_epochs: float = 2.0
    remove_unused_columns: bool = False


class PRMTrainer(AtomicCheckpointMixin, Trainer):
    _card_method = "PRM"


def tokenize_example(tokenizer: Any, example: dict[str, Any], tag_ids: Sequence[int], max_length: int
                     ) -> dict[str, list[int]]:
    """input_ids with a label (0/1) at each step's tag position and -100 elsewhere; cut from the left."""
    from twinloop.rewards.process import build_step_inputs

    ids, positions = build_step_inputs(tokenizer, example["prompt"], example["steps"], tag_ids)
    labels = [-100] * len(ids)
    for pos, lab in zip(positions, example["labels"]):
        labels[pos] = int(lab)
    return {"input_ids": ids[-max_length:], "labels": labels[-max_length:]}


def step_accuracy(prm: Any, examples: Sequence[dict[str, Any]], truth_key: str = "labels") -> float:
    """Fraction of steps where P(good) > 0.5 agrees with the 0/1 label in ``truth_key``."""
    if not examples:
        return float("nan")
    scores = prm.step_scores([e["prompt"] for e in examples], [e["steps"] for e in examples])
    pairs = [(s > 0.5, bool(t)) for e, row in zip(examples, scores) for s, t in zip(row, e[truth_key])]
    return sum(a == b for a, b in pairs) / max(1, len(pairs))


def with_exact_labels(task: str, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the task's exact label per step (``exact`` key) when the task can check steps (arith can): 1 while
    every step so far is correct, which is what a Monte-Carlo label estimates (can this prefix still succeed)."""
    module = build_task(task).module
    if not hasattr(module, "step_correctness"):
        return examples
    for e in examples:
        if "expression" in e:
            e["exact"] = [int(x >= 1.0) for x in itertools.accumulate(module.step_correctness(e["expression"],
                                                                                              e["steps"]), min)]
    return examples


def train_prm(script: PRMScriptArguments, cfg: PRMConfig, train_examples: Sequence[dict[str, Any]],
              eval_examples: Sequence[dict[str, Any]] = (), callbacks=None) -> tuple[str, dict[str, float]]:
    """Train, export, reload as a twinloop TokenClassifierPRM and measure held-out step accuracy."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification
    from twinloop.rewards.process import TokenClassifierPRM, text_ids

    if not train_examples:
        raise ValueError("no PRM examples: the policy produced no completion with a step")
    tok = load_tokenizer(script.policy_dir)
    tok.padding_side = "right"
    tag_ids = text_ids(tok, script.delimiter)
    data = Dataset.from_list([tokenize_example(tok, e, tag_ids, script.max_length) for e in train_examples])
    model = AutoModelForTokenClassification.from_pretrained(script.policy_dir, num_labels=2, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    trainer = PRMTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok,
                         data_collator=DataCollatorForTokenClassification(tok), callbacks=callbacks)
    trainer.train()
    export = script.export_dir or os.path.join(cfg.output_dir, "prm")
    trainer.save_model(export)
    metrics: dict[str, float] = {"train_examples": len(train_examples), "eval_examples": len(eval_examples),
                                 "train_hard_negatives": sum(bool(e.get("negative")) for e in train_examples)}
    if trainer.args.should_save:
        tok.padding_side = "left"
        tok.save_pretrained(export)
        reloaded = AutoModelForTokenClassification.from_pretrained(export).eval()
        prm = TokenClassifierPRM(model=reloaded, tokenizer=load_tokenizer(export), delimiter=script.delimiter,
                                 aggregation=script.aggregation)
        write_reward_bundle(export, prm, "prm", "PRM", script.policy_dir,
                            {"global_step": trainer.state.global_step, "rollouts": script.rollouts,
                             "threshold": script.threshold})
        metrics["eval_step_accuracy_mc"] = step_accuracy(prm, eval_examples)
        labels = [lab for e in eval_examples for lab in e["labels"]]
        metrics["eval_good_step_rate"] = sum(labels) / max(1, len(labels))  # majority baseline = max(p, 1-p)
        if eval_examples and all("exact" in e for e in eval_examples):
            metrics["eval_step_accuracy_exact"] = step_accuracy(prm, eval_examples, "exact")
        metrics["train_step_accuracy_mc"] = step_accuracy(prm, list(train_examples)[:128])
    return export, metrics


def build_examples(script: PRMScriptArguments, split: str, n: int, engine: Any, verifier: Any, seed: int):
    rows = build_task(script.task).load(split, n=n)
    comps = sample_completions(engine, rows, script.samples_per_problem, script.sample_temperature,
                               script.sample_max_tokens, seed=seed)
    examples = mc_step_labels(engine, verifier, rows, comps, script.rollouts, script.threshold, script.delimiter,
                              script.sample_temperature, script.sample_max_tokens, seed=seed)
    if script.hard_negatives and split == "train":
        examples += one_step_negatives(examples, seed)
    return with_exact_labels(script.task, examples)


def main(argv: Sequence[str] | None = None) -> int:
    return run_rm_trainer("prm", (PRMScriptArguments, PRMConfig), build_examples, train_prm,
                          sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
