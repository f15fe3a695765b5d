"""Pure tensor maths of the policy trainers (GPPO and the clip-higher PPO/GRPO it is compared with).

GPPO (Klear-Reasoner, arXiv 2508.07629), per token with δ = π_θ / π_old and sequence advantage Â:

    L = -(1 / Σ_j T_j) Σ_{j,t} min( δ·Â , clip(δ, lo(δ), hi(δ))·Â ),   then for Â < 0 capped at -c·Â (dual clip)

where lo/hi keep the forward value of clip-higher PPO (DAPO) but carry a gradient: a token that PPO would
clip sends dL/dlogπ = -F·Â/ΣT with F = β₁(1-ε_l) below the trust region (Â < 0) and F = β₂(1+ε_h) above it
(Â > 0); F = δ elsewhere. PPO's hard clip sends 0 there.

Defaults (all configurable):
- ε_l = 0.2, ε_h = 0.28, dual-clip c = 10, token-mean aggregation: Klear's published defaults.
- β₁ = β₂ = 1 [check]. ALGORITHMS.md notes that the Klear README uses β₁ = β₂ = 1 while its code default is
  β₁ = 0.25, β₂ = 1. We default to 1 because that is the published formula, it is what the worked-gradient
  table reproduces (−1.28, +0.8), and with β = 1 the loss is exactly
  ``torch.clamp(ratio, lo / ratio.detach() * ratio, hi / ratio.detach() * ratio)``. Pass β₁ = 0.25 for the
  code default; β scales only the gradient of a clipped token, never the forward value. Measured on the tiny
  arithmetic policy (README, "GPPO against GRPO"): β₁ = 1 without the NLL term collapses within 400 steps at
  lr 1e-4; β₁ = 0.25, or β₁ = 1 with the NLL term, learns.
- positive-sample NLL coefficient 0.1 (`positive_loss_coeff`), on fully-correct samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CLIP_MODES = ("gppo", "ppo")


def _gradient_preserving_bound(ratio: torch.Tensor, bound: float, beta: float) -> torch.Tensor:
    """A tensor whose value is ``bound`` and whose derivative with respect to log π is ``beta * bound``.

    With beta = 1 this equals ``bound / sg(ratio) * ratio`` (Klear's form); d ratio / d log π = ratio, so
    d/dlogπ [bound * (1 + beta * (ratio / sg(ratio) - 1))] = beta * bound.
    """
    unit = ratio / ratio.detach()  # value 1, gradient 1 with respect to log π
    return bound * (1.0 + beta * (unit - 1.0))


def clipped_ratio(
    ratio: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    mode: str = "gppo",
    beta1: float = 1.0,
    beta2: float = 1.0,
) -> torch.Tensor:
    """clip(δ, 1-ε_l, 1+ε_h): a hard clip for ``mode="ppo"``, gradient-preserving for ``mode="gppo"``."""
    if mode == "ppo":
        return torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    if mode != "gppo":
        raise ValueError(f"unknown clip mode {mode!r}; choose from {CLIP_MODES}")
    lo = _gradient_preserving_bound(ratio, 1.0 - eps_low, beta1)
    hi = _gradient_preserving_bound(ratio, 1.0 + eps_high, beta2)
    return torch.maximum(torch.minimum(ratio, hi), lo)


def policy_per_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    mode: str = "gppo",
    beta1: float = 1.0,
    beta2: float = 1.0,
    dual_clip: float | None = 10.0,
) -> torch.Tensor:
    """Per-token clipped surrogate loss, shape of ``logp`` (B, T).

    ``advantages`` is (B,) or (B, 1) (one per sequence) or (B, T). ``dual_clip`` c caps the loss of a token with
    Â < 0 at -c·Â (no gradient there); None disables it. ``mode="ppo"`` is TRL's grpo/dapo clip (plus the same
    dual clip), the baseline GPPO is compared with.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * clipped_ratio(ratio, eps_low, eps_high, mode, beta1, beta2)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 (it bounds the ratio from above for Â < 0); got {dual_clip}")
        capped = torch.minimum(loss, -advantages * dual_clip)
        loss = torch.where(advantages < 0, capped, loss)
    return loss


def token_mean(values: torch.Tensor, mask: torch.Tensor,
               num_tokens: torch.Tensor | float | None = None) -> torch.Tensor:
    """Σ values·mask / ΣT. ``num_tokens`` overrides ΣT (the global token count when a batch is split over
    processes or accumulation steps); it is clamped at 1 so an all-masked batch gives 0, not NaN."""
    total = (values * mask).sum()
    denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=values.dtype)
    return total / denom.clamp(min=1.0)


def positive_nll(
    logp: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor, num_tokens: torch.Tensor | float | None = None
) -> torch.Tensor:
    """Token-mean NLL over the completions flagged ``positive`` (B,) (Klear's SFT term on fully-correct samples)."""
    pos_mask = mask * positive.to(mask.dtype).unsqueeze(1)
    return token_mean(-logp, pos_mask, num_tokens)


def nonzero_std_groups(rewards: torch.Tensor, group_size: int, atol: float = 1e-6) -> torch.Tensor:
    """Bool (N,): True for completions whose group of ``group_size`` consecutive rewards is not constant.

    The DAPO dynamic filter drops the others (all right or all wrong: zero advantage, no signal). NaN rewards
    (unscorable) are ignored; a group with fewer than two scored rewards is dropped.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    groups = rewards.reshape(-1, group_size)
    scored = ~torch.isnan(groups)
    lo = torch.where(scored, groups, torch.full_like(groups, float("inf"))).min(dim=1).values
    hi = torch.where(scored, groups, torch.full_like(groups, float("-inf"))).max(dim=1).values
    keep = (scored.sum(dim=1) >= 2) & ((hi - lo) > atol)
    return keep.repeat_interleave(group_size)


@dataclass
class ClipStats:
    """Fractions of masked tokens outside the trust region on the side where the clip acts."""

    low: float
    high: float
    dual: float


def clip_stats(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    eps_low: float = 0.2, eps_high: float = 0.28, dual_clip: float | None = 10.0,
) -> ClipStats:
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logp - old_logp).detach()
    n = mask.sum().clamp(min=1.0)
    low = ((ratio < 1 - eps_low) & (advantages < 0)).float()
    high = ((ratio > 1 + eps_high) & (advantages > 0)).float()
    dual = ((ratio > dual_clip) & (advantages < 0)).float() if dual_clip is not None else torch.zeros_like(ratio)
    return ClipStats(*(float((x * mask).sum() / n) for x in (low, high, dual)))
