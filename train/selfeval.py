"""Self-evaluation probe adapter (arXiv 2410.02725): a LoRA that teaches the policy to answer
"Would you do better if you started over?" about its own responses.

    python -m twinloop.train.selfeval --policy_dir checkpoints/tiny-arith-policy --output_dir runs/selfeval-tiny-arith
    twinloop train selfeval --config RECIPE.yaml      (TrlParser: YAML values, command-line flags override)
    twinloop eval --checkpoint checkpoints/tiny-arith-policy --method adaptive_selfeval \\
        --reward selfeval:runs/selfeval-tiny-arith/adapter

Labels come from the policy's own samples, judged by the verifier. A restart does better ("Yes") when the
response is wrong and the policy solved the prompt in at least one of its samples; otherwise "No" (the
response is right, or no restart found a right one) [check: the paper uses win rates under a reward model;
with a verifiable reward this is their 0/1 form]. Each example is exactly the probe prompt that
``rewards.selfeval.SelfEvalProbe`` reads, plus the one answer token; the loss is on that token only. The
adapter (peft, HF format, plus ``twinloop_reward.json`` naming the probe with its question and answer words) is what
``selfeval:ADAPTER`` loads in ``twinloop eval`` and in the search.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from transformers import Trainer, TrainingArguments
from twinloop.train.checkpointing import AtomicCheckpointMixin, write_model_card
from twinloop.train.common import load_tokenizer
from twinloop.train.rm_data import (
    CORRECT,
    PolicySampleArguments,
    run_rm_trainer,
    sample_completions,
    score_completions,
)

from twinloop.tasks import build_task


@dataclass
class SelfEvalScriptArguments(PolicySampleArguments):
    train_problems: int = 512
    eval_problems: int = 64
    samples_per_problem: int = 8
    yes: str = field(default="Yes", metadata={"help": "the probe's 'a restart does better' answer."})
    no: str = field(default="No", metadata={"help": "the probe's 'keep this response' answer. A from-scratch model "
                                                  "needs words whose first token it has trained (e.g. 1 / 0)."})
    lora_r: int = 16
    lora_alpha: int = 32


@dataclass
class SelfEvalConfig(TrainingArguments):
    learning_rate: float = 2e-3
    per_device_train_batch_size: int = 32
    num_train_epochs: float = 2.0
    remove_unused_columns: bool = False


class SelfEvalTrainer(AtomicCheckpointMixin, Trainer):
    _card_method = "SelfEval"


def better_labels(scores: Sequence[float | None]) -> list[int]:
    """1 ("a restart does better") for a wrong response of a prompt the policy solved at least once, else 0."""
    solved = any(s is not None and s >= CORRECT for s in scores)
    return [int(solved and not (s is not None and s >= CORRECT)) for s in scores]


def build_examples(script: SelfEvalScriptArguments, split: str, n: int, engine: Any, verifier: Any, seed: int
                   ) -> list[dict[str, Any]]:
    rows = build_task(script.task).load(split, n=n)
    comps = sample_completions(engine, rows, script.samples_per_problem, script.sample_temperature,
                               script.sample_max_tokens, seed=seed)
    out = []
    for row, cs, sc in zip(rows, comps, score_completions(verifier, rows, comps)):
        for c, s, better in zip(cs, sc, better_labels(sc)):
            out.append({"prompt": list(row["prompt"]), "response": c, "better": better,
                        "correct": int(s is not None and s >= CORRECT), "id": row.get("id", "")})
    return out


def probe_for(tokenizer: Any, yes: str = "Yes", no: str = "No"):
    """The probe that search uses, here only to build its token ids (no engine needed for that)."""
    from twinloop.rewards.selfeval import SelfEvalProbe

    return SelfEvalProbe(SimpleNamespace(tokenizer=tokenizer), yes=yes, no=no)


def tokenize_example(probe: Any, example: dict[str, Any]) -> dict[str, list[int]]:
    ids = probe.probe_ids(example["prompt"], example["response"])
    target = probe.yes_id if example["better"] else probe.no_id
    return {"input_ids": ids + [target], "labels": [-100] * len(ids) + [target]}


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def p_no(model: Any, probe: Any, examples: Sequence[dict[str, Any]], batch: int = 32) -> list[float]:
    """P("No") per example from a transformers model, renormalised over Yes/No as the probe does."""
    import torch

    out = []
    for i in range(0, len(examples), batch):
        chunk = [probe.probe_ids(e["prompt"], e["response"]) for e in examples[i:i + batch]]
        width = max(len(c) for c in chunk)
        ids = torch.tensor([[0] * (width - len(c)) + c for c in chunk])
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the real positions
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1, :].float()
        two = torch.log_softmax(logits[:, [probe.no_id, probe.yes_id]], dim=-1)
        out += two[:, 0].exp().tolist()
    return out


def selection_accuracy(scores: Sequence[float], examples: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """(accuracy of the highest-P("No") sample per prompt, accuracy of a random sample): the best-of-N gain."""
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e["id"], []).append(i)
    picked = [examples[max(idx, key=lambda i: scores[i])]["correct"] for idx in groups.values()]
    mean = [sum(examples[i]["correct"] for i in idx) / len(idx) for idx in groups.values()]
    return sum(picked) / max(1, len(picked)), sum(mean) / max(1, len(mean))


def train_selfeval(script: SelfEvalScriptArguments, cfg: SelfEvalConfig, train_examples: Sequence[dict[str, Any]],
                   eval_examples: Sequence[dict[str, Any]] = (), callbacks=None) -> tuple[str, dict[str, float]]:
    """Train the LoRA, export it (peft, HF format) and measure the probe on held-out samples."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    if not train_examples:
        raise ValueError("no self-evaluation examples: the policy produced no samples")
    tok = load_tokenizer(script.policy_dir)
    tok.padding_side = "right"
    probe = probe_for(tok, script.yes, script.no)
    data = Dataset.from_list([tokenize_example(probe, e) for e in train_examples])
    base = AutoModelForCausalLM.from_pretrained(script.policy_dir, dtype=torch.float32)
    lora = LoraConfig(r=script.lora_r, lora_alpha=script.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, lora)
    trainer = SelfEvalTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok,
                              data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=-100), callbacks=callbacks)
    trainer.train()
    export = script.export_dir or os.path.join(cfg.output_dir, "adapter")
    trainer.save_model(export)
    metrics: dict[str, float] = {"train_examples": len(train_examples), "eval_examples": len(eval_examples),
                                 "train_better_rate": sum(e["better"] for e in train_examples) / len(train_examples)}
    if trainer.args.should_save:
        from twinloop.checkpoints.spec import write_trainer_bundle

        write_trainer_bundle(export, probe, "selfeval", weights="lora", base_model=script.policy_dir, tokenizer=tok)
        write_model_card(export, method="SelfEval", base_model=script.policy_dir, step=trainer.state.global_step,
                         settings={"lora_r": script.lora_r, "learning_rate": cfg.learning_rate,
                                   "train_examples": len(train_examples)})
        fresh = AutoModelForCausalLM.from_pretrained(script.policy_dir, dtype=torch.float32)
        reloaded = PeftModel.from_pretrained(fresh, export).eval()
        if eval_examples:
            scores = p_no(reloaded, probe, eval_examples)
            metrics["eval_auc_correct"] = auc(scores, [e["correct"] for e in eval_examples])
            metrics["eval_accuracy_better"] = sum((s < 0.5) == bool(e["better"])
                                                  for s, e in zip(scores, eval_examples)) / len(eval_examples)
            metrics["eval_select_accuracy"], metrics["eval_sample_accuracy"] = selection_accuracy(scores,
                                                                                                  eval_examples)
    return export, metrics


def main(argv: Sequence[str] | None = None) -> int:
    return run_rm_trainer("selfeval", (SelfEvalScriptArguments, SelfEvalConfig), build_examples, train_selfeval,
                          sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
