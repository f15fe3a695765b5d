"""CTRL / InfAlign (arXiv 2412.19792): calibrate any scalar reward against reference samples, then transform.

Ĉ(x, y) = (1/m) Σ_i [1{r(y) > r(z_i)} + ½·1{r(y) = r(z_i)}] over m reference samples z_i ~ π_ref(x).
Transforms: best-of-N Φ(u) = exp(t·u); worst-of-N (jailbreak) Φ(u) = -exp(-t·u). The analytical tool picks
t with no model in the loop, because C ~ U[0, 1] under π_ref (closed forms in ALGORITHMS.md).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from twinloop.rewards.base import RewardBase

TRANSFORMS = ("none", "bon", "won")


# ---------------------------------------------------------------------------------------------- pure maths
def calibrate(r_y: float, reference_rewards: Sequence[float]) -> float:
    """Ĉ: the fraction of reference rewards below r(y), ties counting ½."""
    if not reference_rewards:
        raise ValueError("calibration needs at least one reference reward")
    below = sum(r_y > z for z in reference_rewards)
    ties = sum(r_y == z for z in reference_rewards)
    return (below + 0.5 * ties) / len(reference_rewards)


def bon_transform(u: float, t: float) -> float:
    """Best-of-N transform Φ(u) = exp(t·u)."""
    return math.exp(t * u)


def won_transform(u: float, t: float) -> float:
    """Worst-of-N transform Φ(u) = -exp(-t·u) (still increasing in u)."""
    return -math.exp(-t * u)


def transform(u: float, kind: str, t: float) -> float:
    if kind == "none":
        return u
    if kind == "bon":
        return bon_transform(u, t)
    if kind == "won":
        return won_transform(u, t)
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {kind!r}")


def _phi_array(kind: str, t: float) -> Callable[[np.ndarray], np.ndarray]:
    if kind == "none":
        return lambda u: u
    if kind == "bon":
        return lambda u: np.exp(t * u)
    if kind == "won":
        return lambda u: -np.exp(-t * u)
    raise ValueError(f"transform must be one of {TRANSFORMS}, got {kind!r}")


def aligned_policy_oracles(phi: Callable[[np.ndarray], np.ndarray], beta: float, n: int,
                           grid: int = 20000) -> dict[str, float]:
    """KL, W_std, W_BoN and W_WoN of the aligned policy p(u) = e^{Φ(u)/β}/Z on [0, 1].

    ``phi`` maps a numpy array of calibrated rewards u to Φ(u); ``n`` is the best/worst-of-N size. The
    integrals are taken cell by cell in log space (midpoint masses), written as Stieltjes sums against F^N
    and (1-F)^N, so a sharply peaked p neither overflows nor yields a win rate above 1.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    edges = np.linspace(0.0, 1.0, grid + 1)
    mid, du = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    log_mass = np.asarray(phi(mid), dtype=np.float64) / beta * np.ones_like(mid) + np.log(du)
    top = log_mass.max()
    log_mass = log_mass - (top + math.log(np.exp(log_mass - top).sum()))
    mass = np.exp(log_mass)
    cdf = np.clip(np.concatenate([[0.0], np.cumsum(mass)]), 0.0, 1.0)
    cdf = cdf / cdf[-1]
    return {
        "kl": float(np.sum(mass * (log_mass - np.log(du)))),
        "w_std": float(np.sum(mass * mid)),
        "w_bon": float(np.sum(np.diff(cdf ** n) * mid ** n)),
        "w_won": float(np.sum(((1.0 - cdf[:-1]) ** n - (1.0 - cdf[1:]) ** n) * (1.0 - (1.0 - mid) ** n))),
    }


def transform_oracles(kind: str, t: float, beta: float, n: int, grid: int = 20000) -> dict[str, float]:
    """``aligned_policy_oracles`` for the named transform with exponent t."""
    return aligned_policy_oracles(_phi_array(kind, t), beta, n, grid)


def beta_for_kl(kind: str, t: float, kl_budget: float, n: int = 1, iters: int = 60, grid: int = 4000) -> float:
    """β at which the aligned policy's KL equals ``kl_budget`` (bisection in log β; KL falls as β grows).

    Only Φ/β matters, so β is searched over 1e-6 … 1e6 times the spread of Φ on [0, 1].
    """
    if kl_budget <= 0:
        raise ValueError(f"KL budget must be > 0, got {kl_budget}")
    spread = _phi_spread(kind, t)
    log_lo, log_hi = math.log(1e-6 * spread), math.log(1e6 * spread)
    for _ in range(iters):
        mid = 0.5 * (log_lo + log_hi)
        if transform_oracles(kind, t, math.exp(mid), n, grid)["kl"] > kl_budget:
            log_lo = mid
        else:
            log_hi = mid
    return math.exp(0.5 * (log_lo + log_hi))


def _phi_spread(kind: str, t: float) -> float:
    values = _phi_array(kind, t)(np.array([0.0, 1.0]))
    return max(float(abs(values[1] - values[0])), 1e-12)


def best_t(n: int, procedure: str = "bon", beta: float | None = None, kl_budget: float | None = None,
           ts: Sequence[float] | None = None, grid: int = 4000) -> dict[str, float]:
    """The analytical t chooser: the exponent t of the ``procedure`` transform whose aligned policy wins most
    under best-of-N (``"bon"``) or worst-of-N (``"won"``) decoding against π_ref decoded the same way.

    Give exactly one of:
    - ``kl_budget``: per t, the RL coefficient β_RL is solved so that KL = budget; maximise W at that KL;
    - ``beta``: maximise the InfAlign objective W - β·KL; per t the RL coefficient β_RL applied to Φ_t(C) is
      picked from a log grid (only Φ/β_RL shapes the policy, so β_RL is not β).
    ``ts`` is the search grid (default 0.25 … 30). Returns ``{"t", "rl_beta", "kl", "win_rate", "objective"}``.
    """
    if procedure not in ("bon", "won"):
        raise ValueError(f"procedure must be 'bon' or 'won', got {procedure!r}")
    if (beta is None) == (kl_budget is None):
        raise ValueError("give exactly one of beta or kl_budget")
    ts = list(np.linspace(0.25, 30.0, 120)) if ts is None else list(ts)
    key = "w_bon" if procedure == "bon" else "w_won"
    best: dict[str, float] | None = None
    for t in ts:
        if kl_budget is not None:
            rl_betas = [beta_for_kl(procedure, t, kl_budget, n, grid=grid)]
        else:
            rl_betas = list(_phi_spread(procedure, t) * np.logspace(-3, 3, 61))
        for rl_beta in rl_betas:
            o = transform_oracles(procedure, t, rl_beta, n, grid)
            objective = o[key] if beta is None else o[key] - beta * o["kl"]
            if best is None or objective > best["objective"]:
                best = {"t": float(t), "rl_beta": float(rl_beta), "kl": o["kl"], "win_rate": o[key],
                        "objective": objective}
    return best


# ---------------------------------------------------------------------------------------- reference samples
def prompt_key(prompt: Any) -> str:
    """A stable hash of a text or chat-format prompt (the on-disk cache key)."""
    blob = json.dumps(prompt, sort_keys=True, ensure_ascii=False) if not isinstance(prompt, str) else prompt
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ReferenceSamples:
    """m reference completions per prompt from π_ref on an Engine, cached on disk as JSON keyed by prompt hash.

    A prompt already cached with at least m samples costs nothing; a shortfall is topped up and saved.
    """

    def __init__(self, engine: Any, cache_path: str | Path, m: int = 100, temperature: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, lora: str | None = None) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.engine, self.m, self.lora = engine, m, lora
        self.temperature, self.max_tokens, self.stop = temperature, max_tokens, stop
        self.path = Path(cache_path)
        self.cache: dict[str, list[str]] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.generated_tokens = 0
        self.prompt_tokens = 0

    def get(self, prompts: Sequence[Any]) -> list[list[str]]:
        from twinloop.contracts import Request, SamplingConfig

        keys = [prompt_key(p) for p in prompts]
        missing: dict[str, Any] = {}
        for k, p in zip(keys, prompts):
            if len(self.cache.get(k, [])) < self.m:
                missing.setdefault(k, p)
        for k, p in missing.items():
            need = self.m - len(self.cache.get(k, []))
            req = Request(text=p, lora=self.lora) if isinstance(p, str) else Request(messages=list(p), lora=self.lora)
            res = self.engine.generate([req], SamplingConfig(n=need, temperature=self.temperature,
                                                             max_tokens=self.max_tokens, stop=self.stop))[0]
            self.prompt_tokens += res.usage.prompt_tokens or len(res.prompt_ids)
            self.generated_tokens += res.usage.generated_tokens
            self.cache.setdefault(k, []).extend(c.text for c in res.completions)
        if missing:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.cache))
            tmp.replace(self.path)
        return [self.cache[k][: self.m] for k in keys]


def _token_counts(references: Any) -> tuple[int, int]:
    return getattr(references, "prompt_tokens", 0), getattr(references, "generated_tokens", 0)


class CalibratedReward(RewardBase):
    """Any scalar Reward turned into Φ(Ĉ): calibrated against m reference samples per prompt.

    ``references`` is a ReferenceSamples (engine + disk cache) or a callable ``prompts -> list[list[str]]``.
    The base reward scores the references with the row's columns (e.g. the gold answer); those reference
    rewards are memoised per prompt, so columns must be per-prompt data. ``transform`` is ``"none"`` (the
    calibrated baseline), ``"bon"`` (exp(t·u)) or ``"won"`` (-exp(-t·u)); t is tuned per N and KL budget
    with ``best_t`` (the paper's t values are [check]). A completion whose base reward is None stays None;
    references whose reward is None are skipped; a prompt with no scored reference gives None (counted).
    With GRPO, turn off per-group std scaling (``scale_rewards="none"``): it would undo Φ's scale.
    """

    name = "ctrl_calibrated"
    context_args = ("engine", "model", "tokenizer", "references")  # reference samples: built by the caller
    reward_args = ("base",)

    def __init__(self, base: Callable[..., list[float | None]], references: Any, transform: str = "none",
                 t: float = 1.0) -> None:
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.base, self.references, self.transform, self.t = base, references, transform, t
        self._ref_rewards: dict[str, list[float]] = {}

    def _reference_rewards(self, prompts: Sequence[Any], rows: Sequence[dict[str, Any]]) -> list[list[float]]:
        keys = [prompt_key(p) for p in prompts]
        todo = {k: i for i, k in reversed(list(enumerate(keys))) if k not in self._ref_rewards}
        if todo:
            before = _token_counts(self.references)
            getter = self.references.get if hasattr(self.references, "get") else self.references
            samples = getter([prompts[i] for i in todo.values()])
            after = _token_counts(self.references)
            self.usage.input_tokens += after[0] - before[0]
            self.usage.output_tokens += after[1] - before[1]
            for (k, i), refs in zip(todo.items(), samples):
                cols = {name: [v] * len(refs) for name, v in rows[i].items()}
                scored = self.base([prompts[i]] * len(refs), list(refs), **cols)
                self._ref_rewards[k] = [float(s) for s in scored if s is not None]
        return [self._ref_rewards[k] for k in keys]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        n = len(completions)
        self.usage.items += n
        # per-prompt data columns (TRL's completion_ids belong to the completions, not the references)
        per_item = {k: list(v) for k, v in columns.items()
                    if isinstance(v, (list, tuple)) and len(v) == n and k != "completion_ids"}
        rows = [{k: v[i] for k, v in per_item.items()} for i in range(n)]
        rewards = self.base(list(prompts), list(completions), **columns)
        refs = self._reference_rewards(list(prompts), rows)
        out: list[float | None] = []
        for r, ref in zip(rewards, refs):
            if r is None or not ref:
                self.usage.unparseable += 1
                out.append(None)
            else:
                out.append(transform(calibrate(float(r), ref), self.transform, self.t))
        return out
