"""LoRA-q: the qTTT loop with a peft LoRA on q_proj only, served through vLLM as a per-request LoRA.

A named APPROXIMATION of exact qTTT (``infer.qttt``), never a substitute for it. Training is the same: spans of
the context against the frozen cache of the unadapted prefill, only the q_proj LoRA factors learn (AdamW, clip
1.0). Serving differs: vLLM cannot run adapted queries over the original prefill cache, so the engine
re-prefills the whole prompt under the adapter. From layer 2 on, the context's K/V then come from hidden states
the adapted queries already changed, which exact qTTT never does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from twinloop.infer.qttt import FrozenCache, QTTTConfig, QueryForward, query_ttt


@dataclass(frozen=True)
class LoraQConfig:
    """LoRA-q settings [check]: rank 8, alpha 16 (the project's adapter defaults), no dropout; the TTT settings
    are ``QTTTConfig``'s, usually with a larger lr than full W_Q (B starts at zero)."""

    rank: int = 8
    alpha: int = 16
    ttt: QTTTConfig = QTTTConfig(lr=1e-3)


def lora_q_ttt(model: torch.nn.Module, ids: torch.Tensor, out_dir: str | Path, cfg: LoraQConfig = LoraQConfig(),
               cache: FrozenCache | None = None) -> tuple[Path, list[float]]:
    """Train a fresh q_proj-only LoRA on the context ``ids`` and save it as a peft adapter in ``out_dir``.

    ``model`` (a transformers causal LM) is returned to its original state: the LoRA layers are unloaded, every
    base weight is untouched (only LoRA factors train). Returns (adapter folder, span losses)."""
    from peft import LoraConfig, get_peft_model

    out = Path(out_dir)
    grad_flags = [p.requires_grad for p in model.parameters()]
    fwd = QueryForward(model)
    if cache is None:
        cache, _ = fwd.prefill(ids)
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=["q_proj"],
                      init_lora_weights=True)
    peft_model = get_peft_model(model, lcfg)
    try:
        params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
        losses = query_ttt(QueryForward(peft_model.base_model.model), ids, cache, cfg.ttt, params=params)
        peft_model.save_pretrained(out)
    finally:
        peft_model.unload()  # strips the LoRA layers in place: the caller's model is the base model again
    for p, flag in zip(model.parameters(), grad_flags):
        p.requires_grad_(flag)
    return out, losses
