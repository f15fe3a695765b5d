"""Pure maths of V1-PairRL (arXiv 2603.04304; ALGORITHMS.md "V1"): pair formation from one step's generations,
the verify-role reward and its REINFORCE mean baseline, how verify prompts are scattered over processes, and the
combined objective J = J_gen + λ·J_verify. The trainer (``twinloop.train.pairrl``) wires these into TRL.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from twinloop.rewards.pairwise import BAND, verifier_reward
from twinloop.train.losses import token_mean

PAIR_ORDERS = ("random", "both")


@dataclass(frozen=True)
class VerifyPair:
    """One verify prompt: solutions ``a`` and ``b`` (indices into the step's gathered generations) of problem
    ``group``, shown in this order, with their ground-truth correctness."""

    group: int
    a: int
    b: int
    label_a: int
    label_b: int

    @property
    def mixed(self) -> bool:
        """One correct and one incorrect solution: the pairs that measure discrimination."""
        return self.label_a != self.label_b


def correctness_labels(rewards: Sequence[float | None], threshold: float = 1.0) -> list[int | None]:
    """1 where the verifiable reward reaches ``threshold`` ([check]: 1.0 = verified correct), else 0; None (or NaN)
    for an unscorable completion, which is then kept out of every pair."""
    out: list[int | None] = []
    for r in rewards:
        out.append(None if r is None or (isinstance(r, float) and math.isnan(r)) else int(r >= threshold))
    return out


def form_pairs(labels: Sequence[int | None], group_size: int, max_prompts_per_problem: int = 4,
               order: str = "random", rng: random.Random | None = None) -> list[VerifyPair]:
    """Verify prompts from one step's generations, in groups of ``group_size`` consecutive solutions per problem.

    Rules (ALGORITHMS.md V1): a pair holds two solutions of the same problem, at least one of them correct;
    incorrect-incorrect pairs and unscorable solutions (label None) are excluded. Each problem yields at most
    ``max_prompts_per_problem`` verify prompts (default 4 [check]: the paper's budget of 8 rollouts per problem,
    split 4 generate + 4 verify), drawn uniformly without replacement from its eligible pairs.
    ``order="random"`` shows each drawn pair once, A/B swapped with probability ½; ``order="both"`` shows each
    drawn pair in both orders, so a problem yields at most ``max_prompts_per_problem // 2`` pairs.
    """
    if order not in PAIR_ORDERS:
        raise ValueError(f"order must be one of {PAIR_ORDERS}; got {order!r}")
    if group_size < 2:
        raise ValueError(f"pairs need groups of at least 2 solutions; got group_size={group_size}")
    if len(labels) % group_size:
        raise ValueError(f"{len(labels)} solutions do not split into groups of {group_size}")
    per_pair = 2 if order == "both" else 1
    if max_prompts_per_problem < per_pair:
        raise ValueError(f"order={order!r} needs max_prompts_per_problem >= {per_pair}; got {max_prompts_per_problem}")
    rng = rng or random.Random(0)
    pairs: list[VerifyPair] = []
    for g in range(len(labels) // group_size):
        base = g * group_size
        idx = [base + k for k in range(group_size) if labels[base + k] is not None]
        eligible = [(i, j) for x, i in enumerate(idx) for j in idx[x + 1:] if labels[i] or labels[j]]
        drawn = rng.sample(eligible, min(len(eligible), max_prompts_per_problem // per_pair))
        for i, j in drawn:
            shown = [(i, j), (j, i)] if order == "both" else [(j, i) if rng.random() < 0.5 else (i, j)]
            pairs += [VerifyPair(g, a, b, int(labels[a]), int(labels[b])) for a, b in shown]
    return pairs


def verify_rewards(ratings: Sequence[tuple[int, int] | None], pairs: Sequence[VerifyPair],
                   band: float = BAND) -> list[float]:
    """The 0.2-band reward r = ½ Σ_{i∈{A,B}} 1(|v_i - y_i| ≤ band)·(1 - |v_i - y_i|) of each verify prompt,
    v = (s - 1) / 9; unparseable ratings (None) score 0."""
    if len(ratings) != len(pairs):
        raise ValueError(f"{len(ratings)} ratings for {len(pairs)} pairs")
    return [verifier_reward(r, (p.label_a, p.label_b), band) for r, p in zip(ratings, pairs)]


def mean_baseline_advantages(rewards: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """REINFORCE advantages A = r - mean(r), the mean taken over every verify prompt of the step (all processes).
    ``weights`` 0 marks padding slots: they are left out of the mean and get advantage 0."""
    weights = [1.0] * len(rewards) if weights is None else list(weights)
    if len(weights) != len(rewards):
        raise ValueError(f"{len(weights)} weights for {len(rewards)} rewards")
    real = [r for r, w in zip(rewards, weights) if w > 0]
    if not real:
        return [0.0] * len(rewards)
    mean = sum(real) / len(real)
    return [(r - mean) if w > 0 else 0.0 for r, w in zip(rewards, weights)]


def scatter_slots(n_items: int, world_size: int, multiple: int = 1) -> list[list[int | None]]:
    """Which of ``n_items`` globally formed verify prompts each process takes: contiguous slices of equal length
    (rounded up to ``multiple``, e.g. TRL's steps_per_generation), padded with None slots. Equal lengths keep
    collective generation (vLLM server mode, ZeRO-3 parameter gathering) in step on every rank."""
    if world_size < 1 or multiple < 1:
        raise ValueError("world_size and multiple must be >= 1")
    if n_items == 0:
        return [[] for _ in range(world_size)]
    per_rank = math.ceil(n_items / world_size)
    per_rank = math.ceil(per_rank / multiple) * multiple
    return [[k if k < n_items else None for k in range(r * per_rank, (r + 1) * per_rank)] for r in range(world_size)]


def pairwise_accuracy(ratings: Sequence[tuple[int, int] | None], pairs: Sequence[VerifyPair]) -> float | None:
    """Share of mixed pairs whose correct solution the verifier rated higher (ties and unparseable count ½);
    None without mixed pairs."""
    scores = []
    for r, p in zip(ratings, pairs):
        if not p.mixed:
            continue
        if r is None or r[0] == r[1]:
            scores.append(0.5)
        else:
            scores.append(float((r[0] > r[1]) == bool(p.label_a)))
    return sum(scores) / len(scores) if scores else None


def cross_rank_fraction(pairs: Sequence[VerifyPair], per_rank: int) -> float:
    """Share of pairs whose two solutions were generated on different processes (``per_rank`` solutions each)."""
    if not pairs:
        return 0.0
    return sum(p.a // per_rank != p.b // per_rank for p in pairs) / len(pairs)


def combined_loss(per_token: torch.Tensor, mask: torch.Tensor, is_verify: torch.Tensor,
                  gen_tokens: torch.Tensor | float, verify_tokens: torch.Tensor | float,
                  verify_coef: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of J = J_gen + λ·J_verify (λ = ``verify_coef``, 1 in the paper): each role's per-token surrogate loss
    (B, T) is token-meaned over its own tokens (``gen_tokens`` / ``verify_tokens``: the global counts), then summed.
    ``is_verify`` (B,) marks verify-role rows. Returns (total, gen part, verify part)."""
    role = is_verify.to(mask.dtype).unsqueeze(1)
    gen = token_mean(per_token, mask * (1 - role), gen_tokens)
    verify = token_mean(per_token, mask * role, verify_tokens)
    return gen + verify_coef * verify, gen, verify


IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_ratio(old_logps: torch.Tensor, sampling_logps: torch.Tensor, mask: torch.Tensor, mode: str,
                     clip_min: float | None, clip_max: float | None) -> torch.Tensor:
    """TRL's vLLM importance-sampling correction π_trainer / π_vLLM for rows it did not build (the verify role):
    per token (B, T) or per sequence (B, 1); ``*_truncate`` clamps into [clip_min, clip_max], ``*_mask`` zeroes
    ratios outside it. Tokens without a vLLM logprob (NaN) get ratio 1."""
    if mode not in IS_MODES:
        raise ValueError(f"unknown importance sampling mode {mode!r}; choose from {IS_MODES}")
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    lo = -math.inf if clip_min is None else clip_min
    hi = math.inf if clip_max is None else clip_max
    return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)


def split_budget(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """How many leading tokens of solutions A and B a verify prompt keeps when only ``budget`` fit: the shorter
    one stays whole if it fits in half, the longer one gets the rest; otherwise both get half."""
    budget = max(0, budget)
    if len_a + len_b <= budget:
        return len_a, len_b
    half = budget // 2
    if len_a <= half:
        return len_a, budget - len_a
    if len_b <= half:
        return budget - len_b, len_b
    return half, budget - half
