"""Outcome reward model: a sequence classifier with num_labels=1 whose raw logit is the reward.

Scores through transformers (``AutoModelForSequenceClassification``) or through an Engine's pooling
``classify`` path (``VLLMEngine(dir, runner="pooling")``); both read the same token ids, built the way TRL's
RewardTrainer builds them, so a model trained there scores the same here.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from twinloop.rewards.base import RewardBase, message_text


def _is_chat(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], dict)


def rm_input_ids(tokenizer: Any, prompt: Any, completion: Any) -> list[int]:
    """Token ids the RM reads, as TRL's RewardTrainer tokenizes: a chat prompt plus the completion as the
    assistant turn through the chat template; otherwise ``prompt + completion + eos`` as text."""
    if _is_chat(prompt):
        reply = list(completion) if _is_chat(completion) else [{"role": "assistant", "content": message_text(completion)}]
        ids = tokenizer.apply_chat_template(list(prompt) + reply, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    text = message_text(prompt) + message_text(completion)
    eos = tokenizer.eos_token or ""
    if eos and not text.endswith(eos):
        text += eos
    return [int(t) for t in tokenizer(text).input_ids]


class ScalarRM(RewardBase):
    """Outcome RM: the raw logit of a num_labels=1 sequence classifier (``sigmoid=True`` maps it to (0, 1)).

    Give ``model`` (+ ``tokenizer``) for transformers, or ``engine`` with ``classify`` (raw logits) for vLLM.
    A non-finite logit is replaced by ``fallback`` and counted in ``usage.unparseable``.
    """

    name = "outcome_rm"
    kinds = ("orm", "meta")
    head = "sequence_classification"

    @classmethod
    def export_score_range(cls, settings: dict[str, Any]) -> list[float | None]:
        return [0.0, 1.0] if settings.get("sigmoid") else [None, None]

    @classmethod
    def export_call(cls, settings: dict[str, Any], tokenizer: Any, kind: str = "orm", **extra: Any) -> dict[str, Any]:
        what = ("a GRM judging prompt (twinloop.rewards.generative.format_grm_prompt) as the prompt and the GRM "
                "judgment as the completion" if kind == "meta" else "the prompt and the completion")
        return {"input": f"{what}: chat prompts through the chat template with the completion as the assistant "
                         "turn, else prompt + completion + eos as text (TRL RewardTrainer format)",
                "output": "the raw logit of the single label at the last token"
                          + (", mapped through a sigmoid" if settings.get("sigmoid") else ""),
                "truncation": "keep the last max_length tokens" if settings.get("max_length") else None}

    def __init__(self, model: Any = None, engine: Any = None, tokenizer: Any = None, sigmoid: bool = False,
                 max_length: int | None = None, fallback: float = 0.0) -> None:
        super().__init__()
        if (model is None) == (engine is None):
            raise ValueError("ScalarRM needs exactly one of model= or engine=")
        tokenizer = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("ScalarRM(model=...) also needs tokenizer=")
        if model is not None and getattr(model.config, "num_labels", 1) != 1:
            raise ValueError(f"an outcome RM needs num_labels=1, the model has {model.config.num_labels}")
        self.model, self.engine, self.tokenizer = model, engine, tokenizer
        self.sigmoid, self.max_length, self.fallback = sigmoid, max_length, fallback

    @classmethod
    def from_pretrained(cls, model_dir: str, **kwargs: Any) -> ScalarRM:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
        return cls(model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), **kwargs)

    def logits(self, sequences: Sequence[list[int]]) -> list[float]:
        """Raw logit per token-id sequence."""
        if self.engine is not None:
            rows = self.engine.classify([list(s) for s in sequences])
            return [float(r[0]) for r in rows]
        import torch

        out = []
        with torch.no_grad():
            for ids in sequences:
                out.append(float(self.model(input_ids=torch.tensor([list(ids)])).logits[0, 0]))
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        sequences = [rm_input_ids(self.tokenizer, p, c) for p, c in zip(prompts, completions)]
        if self.max_length is not None:
            sequences = [s[-self.max_length:] for s in sequences]  # keep the end: the logit is read there
        if not sequences:
            return []
        self.usage.model_calls += len(sequences)
        self.usage.input_tokens += sum(len(s) for s in sequences)
        out: list[float | None] = []
        for x in self.logits(sequences):
            if not math.isfinite(x):
                self.usage.unparseable += 1
                out.append(self.fallback)
            elif self.sigmoid:
                out.append(1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x)))
            else:
                out.append(x)
        return out
