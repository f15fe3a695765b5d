"""Pure maths of particle filtering and ePF: weights, resampling schemes, ESS and the annealing rules.

Resampling functions take their uniform draws as arguments, so tests can call them with numbers.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

LOGIT_CLIP = 1e-7


def logit_weight(p: float, clip: float = LOGIT_CLIP) -> float:
    """logw = logit(PRM score), the score clipped to [clip, 1 - clip] (PF, arXiv 2502.01618)."""
    q = min(1.0 - clip, max(clip, float(p)))
    return math.log(q) - math.log1p(-q)


def softmax(logw: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(logw / T); T = inf gives the uniform distribution."""
    if not logw:
        return []
    if math.isinf(temperature):
        return [1.0 / len(logw)] * len(logw)
    z = [x / temperature for x in logw]
    m = max(z)
    e = [math.exp(x - m) for x in z]
    s = sum(e)
    return [x / s for x in e]


def _cumulative(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if not total > 0:
        raise ValueError("resampling needs weights with a positive sum")
    out, acc = [], 0.0
    for w in weights:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def multinomial_resample(weights: Sequence[float], uniforms: Sequence[float]) -> list[int]:
    """One index per uniform u in [0, 1): the first i with cumsum(w)_i > u (independent draws)."""
    cdf = _cumulative(weights)
    return [min(bisect.bisect_right(cdf, u), len(cdf) - 1) for u in uniforms]


def systematic_resample(weights: Sequence[float], n: int, u: float) -> list[int]:
    """n indices from one uniform u in [0, 1): positions (u + i) / n, i = 0..n-1, read off cumsum(w)."""
    cdf = _cumulative(weights)
    return [min(bisect.bisect_right(cdf, (u + i) / n), len(cdf) - 1) for i in range(n)]


def effective_sample_size(p: Sequence[float]) -> float:
    """ESS = 1 / Σ p² for normalised weights p."""
    return 1.0 / sum(x * x for x in p)


def normalized_entropy(p: Sequence[float]) -> float:
    """H(p) / log N in [0, 1] (1 for uniform weights); 0 when N = 1."""
    if len(p) <= 1:
        return 0.0
    return -sum(x * math.log(x) for x in p if x > 0) / math.log(len(p))


def epf_temperature(logw: Sequence[float], t: int, t_max: int, rule: str = "ess") -> float:
    """ePF resampling temperature T (arXiv 2510.05825).

    With p = softmax(logw), ρ = ESS/N and τ = t/T_max, anneal only when ρ < 0.5 and τ < 0.5:
    ``ess``: T = max(1, (1 - τ)/ρ); ``entropy``: β = H̃ + (1 - H̃)·τ, T = max(1, 1/β) (β = 0 gives T = inf).
    Otherwise T = 1. ``none`` always gives 1.
    """
    if rule == "none" or not logw:
        return 1.0
    p = softmax(logw)
    rho = effective_sample_size(p) / len(p)
    tau = t / max(1, t_max)
    if not (rho < 0.5 and tau < 0.5):
        return 1.0
    if rule == "ess":
        return max(1.0, (1.0 - tau) / rho)
    if rule == "entropy":
        h = normalized_entropy(p)
        beta = h + (1.0 - h) * tau
        return math.inf if beta <= 0 else max(1.0, 1.0 / beta)
    raise ValueError(f"unknown ePF annealing rule {rule!r}; choose from ess, entropy, none")
