"""SPCT meta RM: a scalar classifier (a copy of the judge's base, the policy with phrase tokens for a separate
judge, with a one-logit head) trained with BCE on (GRM prompt,
judgment) -> Eq. 10 correctness, over judgments sampled from the trained GRM, and exported as the ``meta`` kind
that a GRM bundle carries (``twinloop.train.spct`` runs it as its ``meta`` phase)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twinloop.train.spct import Paths, SPCTConfig, write_json
from twinloop.train.spct_data import Item, meta_rows


def run_meta(cfg: SPCTConfig, engine: Any, items: Sequence[Item], adapter: str, paths: Paths) -> dict[str, Any]:
    """Judgments sampled from the trained GRM on the multi-response train items -> BCE meta RM -> ``meta`` export."""
    from twinloop.rewards.generative import GenerativeReward

    multi = [it for it in items if not it.binary]
    grm = GenerativeReward(engine, lora=adapter if cfg.judge == "lora" else None, k=cfg.meta_k,
                           temperature=cfg.voting_temperature,
                           max_tokens=cfg.judge_max_tokens, mode="group", seed=cfg.seed)
    judged = grm.judge_many([(it.query, it.responses) for it in multi], k=cfg.meta_k)
    rows = [r for it, js in zip(multi, judged) for r in meta_rows(it, js)]
    if not rows:
        raise ValueError("no multi-response train items to sample meta-RM data from")
    report = {"examples": len(rows), "label_1_share": sum(r["label"] for r in rows) / len(rows),
              "unparseable": grm.usage.unparseable}
    train_meta(cfg, rows, paths.meta)
    export_meta(cfg, paths)
    write_json(paths.meta / "report.json", report)
    return report


def train_meta(cfg: SPCTConfig, rows: Sequence[dict[str, Any]], out: Path) -> str:
    """A copy of the policy with a one-logit head, BCE on the Eq. 10 labels (HF Trainer, BCEWithLogits through
    ``problem_type='multi_label_classification'``), inputs built exactly as ``ScalarRM`` reads them."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments
    from twinloop.rewards.scalar import ScalarRM, rm_input_ids
    from twinloop.train.common import load_tokenizer
    from twinloop.train.rm_data import write_reward_bundle

    base = cfg.policy_dir if cfg.judge == "lora" else str(Path(cfg.output_dir) / "judge0")  # reads prompts short
    tok = load_tokenizer(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model.config.problem_type = "multi_label_classification"
    feats = [{"input_ids": rm_input_ids(tok, r["prompt"], r["completion"])[-cfg.max_length:], "labels": [r["label"]]}
             for r in rows]
    args = TrainingArguments(output_dir=str(out), num_train_epochs=cfg.meta_epochs,
                             learning_rate=cfg.meta_learning_rate, per_device_train_batch_size=cfg.sft_batch_size,
                             logging_steps=5, save_strategy="no", report_to="none", seed=cfg.seed, bf16=False,
                             use_cpu=not torch.cuda.is_available(), remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(feats),
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    rm = ScalarRM(model=model.eval(), tokenizer=tok, sigmoid=True, max_length=cfg.max_length)
    write_reward_bundle(str(out), rm, "meta", "SPCT meta RM", base,
                        {"global_step": trainer.state.global_step, "learning_rate": cfg.meta_learning_rate,
                         "examples": len(rows)})
    write_json(out / "train_log.json", trainer.state.log_history)
    return str(out)


def export_meta(cfg: SPCTConfig, paths: Paths) -> Path:
    from twinloop.checkpoints.export import export, load_reward

    return export(paths.meta, paths.meta_export, "meta", reward=load_reward(paths.meta), method="SPCT meta RM",
                  overwrite=True)
