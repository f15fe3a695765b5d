"""Answer one long-context row with exact qTTT (or without TTT, the baseline), from a task row.

A row needs ``prompt`` (chat messages whose last user turn ends with the row's ``question``) and ``question``;
``answer_prefix`` (the assistant turn pre-filled, e.g. "The code for KEY is") and ``answer`` (gold, for the
NLL) are optional. The chat text is cut where the question starts: the part before is the context that is
prefilled once and frozen, the rest (question, turn markers, answer prefix) is the tail decoded after TTT.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from twinloop.infer.qttt import QTTTConfig, QueryForward, query_ttt, restored_queries


@dataclass
class PromptParts:
    context: list[int]
    tail: list[int]
    answer: list[int] | None  # gold continuation ids (" ANSWER"), when the row has one


def prompt_parts(tokenizer: Any, row: dict[str, Any]) -> PromptParts:
    if "question" not in row or "prompt" not in row:
        raise ValueError(f"a qTTT row needs 'prompt' and 'question' columns (context and question apart); got "
                         f"{sorted(row)}")
    full = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    full += row.get("answer_prefix") or ""
    cut = full.rfind(row["question"])
    if cut <= 0:
        raise ValueError(f"row {row.get('id', '?')}: its question is not in its chat prompt")

    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    gold = row.get("answer")
    return PromptParts(enc(full[:cut]), enc(full[cut:]), enc(f" {gold}") if gold not in (None, "") else None)


def answer_row(fwd: QueryForward, tokenizer: Any, row: dict[str, Any], cfg: QTTTConfig | None,
               max_new_tokens: int = 32) -> dict[str, Any]:
    """Prefill the context, run qTTT when ``cfg`` is given (weights restored afterwards), decode greedily.
    Returns the completion text, the gold answer's mean NLL per token (None without a gold answer), the TTT
    losses, the frozen cache size and the wall seconds."""
    parts = prompt_parts(tokenizer, row)
    ids, tail = torch.tensor(parts.context), torch.tensor(parts.tail)
    t0 = time.perf_counter()
    cache, _ = fwd.prefill(ids)
    with restored_queries(fwd):
        losses = query_ttt(fwd, ids, cache, cfg) if cfg is not None and cfg.steps else []
        (tokens,), _ = fwd.generate(cache, tail, max_new_tokens, [tokenizer.eos_token_id])
        nll = fwd.answer_nll(cache, tail, torch.tensor(parts.answer)) if parts.answer else None
    return {"completion": tokenizer.decode(tokens, skip_special_tokens=True), "gold_nll": nll,
            "ttt_losses": losses, "cache_bytes": cache.nbytes(), "prompt_tokens": len(parts.context) + len(parts.tail),
            "seconds": time.perf_counter() - t0}
