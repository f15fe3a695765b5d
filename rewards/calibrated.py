"""CTRL / InfAlign (arXiv 2412.19792): calibrate any scalar reward against reference samples, then transform.

Ĉ(x, y) = (1/m) Σ_i [1{r(y) > r(z_i)} + ½·1{r(y) = r(z_i)}] over m reference samples z_i ~ π_ref(x).
Transforms: best-of-N Φ(u) = exp(t·u); worst-of-N (jailbreak) Φ(u) = -exp(-t·u). The analytical tool picks
t with no model in the loop, because C ~ U[0, 1] under π_ref (closed forms in ALGORITHMS.md).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
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

    Only Φ/β matters, so β is searched over 1e-200 … 1e6 times the spread of Φ on [0, 1]: the worst-of-N
    transform at large t needs β far below its spread (about 1e-6 of it at t = 34 for KL 0.5, which an earlier
    bracket of 1e-6 cut off, so the budget was silently missed).
    """
    if kl_budget <= 0:
        raise ValueError(f"KL budget must be > 0, got {kl_budget}")
    spread = _phi_spread(kind, t)
    log_lo, log_hi = math.log(1e-200 * spread), math.log(1e6 * spread)
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
    ``ts`` is the search grid. By default it is 0.25 … 30 in steps of 0.25, extended by the same steps (up to
    ``DEFAULT_T_MAX``) while the best t sits on its top edge: large N at a loose budget wants t beyond 30 (best-of-8
    at KL 0.5 peaks near 35). An explicit ``ts`` is searched as given. Returns
    ``{"t", "rl_beta", "kl", "win_rate", "objective"}``.
    """
    if procedure not in ("bon", "won"):
        raise ValueError(f"procedure must be 'bon' or 'won', got {procedure!r}")
    if (beta is None) == (kl_budget is None):
        raise ValueError("give exactly one of beta or kl_budget")
    if ts is not None:
        return _best_over(list(ts), n, procedure, beta, kl_budget, grid)
    low, high = 0.25, 30.0
    best = _best_over(list(np.arange(low, high + 1e-9, T_STEP)), n, procedure, beta, kl_budget, grid)
    while best["t"] >= high - 1e-9 and high < DEFAULT_T_MAX:
        low, high = high + T_STEP, min(2 * high, DEFAULT_T_MAX)
        wider = _best_over(list(np.arange(low, high + 1e-9, T_STEP)), n, procedure, beta, kl_budget, grid)
        if wider["objective"] <= best["objective"]:
            break
        best = wider
    return best


T_STEP = 0.25  # spacing of best_t's default grid of t
DEFAULT_T_MAX = 240.0  # the default grid's widest reach (e^240 is still finite in float64)


def _best_over(ts: list[float], n: int, procedure: str, beta: float | None, kl_budget: float | None,
               grid: int) -> dict[str, float]:
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


def t_curve(n: int, procedure: str, kl_budget: float, ts: Sequence[float], grid: int = 4000) -> list[dict[str, float]]:
    """The analytical win rate W_BoN (or W_WoN) of the aligned policy at ``kl_budget`` for each t: the curve
    whose argmax ``best_t`` returns, for checking against an empirical sweep."""
    key = "w_bon" if procedure == "bon" else "w_won"
    out = []
    for t in ts:
        rl_beta = beta_for_kl(procedure, float(t), kl_budget, n, grid=grid)
        out.append({"t": float(t), "rl_beta": rl_beta, "win_rate": transform_oracles(procedure, float(t), rl_beta,
                                                                                      n, grid)[key]})
    return out


# ------------------------------------------------------------------------------- transform from the decoding
# The decoding the policy will meet (``twinloop eval`` method names) -> the transform that is optimal for it.
DECODING_TRANSFORMS = {"best_of_n": "bon", "worst_of_n": "won", "sampling": "none"}
DEFAULT_KL_BUDGET = 0.5  # nats of KL(π‖π_ref) the analytical t is tuned for when none is given [check]


def transform_for_decoding(decoding: str, n: int = 1, kl_budget: float | None = None, t: float | None = None,
                           ts: Sequence[float] | None = None) -> dict[str, Any]:
    """The CTRL transform for a decoding spec: best-of-N -> exp(t·u), worst-of-N -> -exp(-t·u), plain sampling
    (or N = 1, which is plain sampling) -> the identity. t is ``best_t`` for that N at ``kl_budget`` (default
    ``DEFAULT_KL_BUDGET`` [check]); an explicit ``t`` overrides it. ``rl_beta`` is the KL coefficient on Φ itself
    that lands the aligned policy on the budget. Returns ``{"transform", "t", "rl_beta", "kl_budget", "n"}``."""
    if decoding not in DECODING_TRANSFORMS:
        raise ValueError(f"no CTRL transform for decoding {decoding!r}: use one of {', '.join(DECODING_TRANSFORMS)}")
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    budget = DEFAULT_KL_BUDGET if kl_budget is None else float(kl_budget)
    kind = DECODING_TRANSFORMS[decoding] if n > 1 else "none"
    if kind == "none":
        return {"transform": "none", "t": 0.0, "rl_beta": beta_for_kl("none", 0.0, budget), "kl_budget": budget,
                "n": n}
    if t is None:
        chosen = best_t(n, kind, kl_budget=budget, ts=ts)
        t, rl_beta = chosen["t"], chosen["rl_beta"]
    else:
        rl_beta = beta_for_kl(kind, float(t), budget, n)
    return {"transform": kind, "t": float(t), "rl_beta": float(rl_beta), "kl_budget": budget, "n": n}


def unit_transform(u: float, kind: str, t: float) -> float:
    """Φ affinely mapped onto [0, 1]: (Φ(u) - Φ(0)) / (Φ(1) - Φ(0)). The aligned policy ∝ π_ref·e^{Φ/β} is
    unchanged when β is divided by the same spread (``unit_beta``), and the trainer's rewards stay O(1)."""
    low = transform(0.0, kind, t)
    return (transform(u, kind, t) - low) / (transform(1.0, kind, t) - low)


def unit_beta(rl_beta: float, kind: str, t: float) -> float:
    """The KL coefficient for ``unit_transform`` rewards that gives the same aligned policy as ``rl_beta`` on Φ."""
    return rl_beta / _phi_spread(kind, t)


# ---------------------------------------------------------------------------------------- reference samples
def prompt_key(prompt: Any) -> str:
    """A stable hash of a text or chat-format prompt."""
    blob = json.dumps(prompt, sort_keys=True, ensure_ascii=False) if not isinstance(prompt, str) else prompt
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


SEEDING = "per-prompt: sha256(seed, prompt hash), plus the samples already drawn"  # in the cache key's fields


def prompt_seed(seed: int, key: str) -> int:
    """The sampling seed of one prompt's reference requests: derived from the run's seed and the prompt's hash, so
    prompts draw from their own random streams (one shared seed would make every prompt reuse the same stream)."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 2  # < 2**30: room for top-ups within a 32-bit seed


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
FULL_HASH_BYTES = 256 << 20  # weight files up to this size are hashed whole; larger ones by size + head + tail


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 over a model or adapter folder's JSON configs and weight files (names, sizes, contents), so a
    retrained or re-merged model gets a new cache. Files over 256 MiB are hashed by size and their first and last
    16 MiB (cheap for multi-GB checkpoints; a change elsewhere with the same size is not seen)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if not f.is_file() or not (f.suffix == ".json" or f.name.endswith(WEIGHT_SUFFIXES)):
            continue
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= FULL_HASH_BYTES:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(fh.read(16 << 20))
                fh.seek(size - (16 << 20))
                h.update(fh.read())
    return h.hexdigest()


def engine_model_id(engine: Any) -> str | None:
    """The model an engine serves: a vLLM engine's model string, a transformers model's ``_name_or_path``, an
    OpenAI-style engine's served name; None when the engine does not say."""
    model = getattr(engine, "model", None)
    if isinstance(model, str):
        return model
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    return name or getattr(engine, "model_name", None)


def model_identity(model_id: str) -> str:
    """A folder's fingerprint (config + weights), or the id itself for a hub name or a served model."""
    return f"sha256:{folder_fingerprint(model_id)}" if Path(model_id).is_dir() else model_id


def sampling_key(model: str, temperature: float, top_p: float, max_tokens: int, stop: Sequence[str] | None,
                 lora: str | None, seed: int | None = None) -> tuple[str, dict[str, Any]]:
    """(hash, fields) of everything that changes the distribution of reference samples: the model's identity
    (a folder's config and weights hash), the sampling settings and the LoRA adapter's identity. m is not part of
    it: the samples are i.i.d., so the first m of a cached list are m reference samples for any m (a larger m tops
    the list up)."""
    fields = {"model": model_identity(model), "lora": None if lora is None else model_identity(lora),
              "temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens),
              "stop": sorted(stop) if stop else None, "seed": seed, "seeding": None if seed is None else SEEDING}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest(), fields


class ReferenceSamples:
    """m reference completions per prompt from π_ref on an Engine, cached on disk.

    One JSON file per sampling key (``sampling_key``: model and LoRA identity, temperature, top_p, max_tokens,
    stop, seed) in ``cache_dir``, holding those fields and the samples by prompt hash, so a cache made with another
    model or other sampling is never reused. A prompt already cached with at least m samples costs nothing; a
    shortfall is topped up and saved (atomically). ``model_id`` names the model when the engine does not
    (``engine_model_id``). With ``seed``, each prompt's requests get their own seed, derived from it and the
    prompt (``prompt_seed``).
    """

    def __init__(self, engine: Any, cache_dir: str | Path, m: int = 100, temperature: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, lora: str | None = None, top_p: float = 1.0,
                 model_id: str | None = None, seed: int | None = None) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        model_id = model_id or engine_model_id(engine)
        if not model_id:
            raise ValueError("reference samples need the model's identity for their cache key: give model_id= "
                             "(the engine does not name its model)")
        self.engine, self.m, self.lora, self.seed = engine, m, lora, seed
        self.temperature, self.top_p, self.max_tokens, self.stop = temperature, top_p, max_tokens, stop
        self.key, self.fields = sampling_key(model_id, temperature, top_p, max_tokens, stop, lora, seed)
        self.path = Path(cache_dir) / f"references-{self.key[:24]}.json"
        self.cache: dict[str, list[str]] = {}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if stored.get("fields") != self.fields:
                raise ValueError(f"{self.path} holds samples for other settings: {stored.get('fields')}")
            self.cache = stored["samples"]
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
            have = len(self.cache.get(k, []))
            req = Request(text=p, lora=self.lora) if isinstance(p, str) else Request(messages=list(p), lora=self.lora)
            # a top-up is shifted by the samples already drawn, so it does not redraw them
            seed = None if self.seed is None else prompt_seed(self.seed, k) + have
            res = self.engine.generate([req], SamplingConfig(n=self.m - have, temperature=self.temperature,
                                                             top_p=self.top_p, max_tokens=self.max_tokens,
                                                             stop=self.stop, seed=seed))[0]
            self.prompt_tokens += res.usage.prompt_tokens or len(res.prompt_ids)
            self.generated_tokens += res.usage.generated_tokens
            self.cache.setdefault(k, []).extend(c.text for c in res.completions)
        if missing:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"fields": self.fields, "samples": self.cache}))
            tmp.replace(self.path)
        return [self.cache[k][: self.m] for k in keys]


def _token_counts(references: Any) -> tuple[int, int]:
    return getattr(references, "prompt_tokens", 0), getattr(references, "generated_tokens", 0)


class CalibratedReward(RewardBase):
    """Any scalar Reward turned into Φ(Ĉ): calibrated against m reference samples per prompt.

    References: ``references`` is a ReferenceSamples or a callable ``prompts -> list[list[str]]``; or, the
    recipe-friendly form, give the reference settings as literals (``m``, ``temperature``, ``top_p``,
    ``max_tokens``, ``stop``, ``cache_dir``, ``model_id``, ``reference_lora``, ``seed``) and the reference policy's
    ``engine`` as context, and a disk-cached ``ReferenceSamples`` is built. m is ~100 in the paper [check].

    Transform: ``decoding`` (``best_of_n``, ``worst_of_n``, ``sampling``) with ``n`` and ``kl_budget`` picks it
    (``transform_for_decoding``: t from ``best_t``, an explicit ``t`` overrides); or name ``transform`` (``"none"``:
    the calibrated baseline, ``"bon"``: exp(t·u), ``"won"``: -exp(-t·u)) with ``t``. ``unit_range`` maps Φ onto
    [0, 1] (``unit_transform``; divide the KL coefficient by the same spread: ``unit_beta``).

    The base reward scores the references with the row's columns (e.g. the gold answer); those reference rewards
    are memoised per prompt, so columns must be per-prompt data. A completion whose base reward is None stays None;
    references whose reward is None are skipped; a prompt with no scored reference gives None (counted).
    With GRPO, turn off per-group std scaling (``scale_rewards="none"``): it would undo Φ's scale.
    """

    name = "ctrl_calibrated"
    context_args = ("engine", "model", "tokenizer", "references")
    reward_args = ("base",)

    def __init__(self, base: Callable[..., list[float | None]], references: Any = None,
                 transform: str | None = None, t: float | None = None, decoding: str | None = None, n: int = 1,
                 kl_budget: float | None = None, unit_range: bool = False, engine: Any = None, m: int = 100,
                 temperature: float = 1.0, top_p: float = 1.0, max_tokens: int = 256, stop: list[str] | None = None,
                 cache_dir: str = "runs/ctrl-references", model_id: str | None = None,
                 reference_lora: str | None = None, seed: int | None = None) -> None:
        super().__init__()
        if transform is not None and transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.base, self.transform, self.t, self.decoding, self.n = base, transform, t, decoding, n
        self.kl_budget, self.unit_range = kl_budget, unit_range
        self.m, self.temperature, self.top_p, self.max_tokens, self.stop = m, temperature, top_p, max_tokens, stop
        self.cache_dir, self.model_id, self.reference_lora, self.seed = cache_dir, model_id, reference_lora, seed
        self.rl_beta: float | None = None  # KL coefficient on Φ for the budget, when derived from the decoding
        if decoding is not None:
            plan = transform_for_decoding(decoding, n, kl_budget, t)
            if transform is not None and transform != plan["transform"]:
                raise ValueError(f"transform {transform!r} contradicts decoding {decoding!r} with N={n} "
                                 f"(which needs {plan['transform']!r}); give one of them")
            self.kind, self.exponent, self.rl_beta = plan["transform"], plan["t"], plan["rl_beta"]
        else:
            self.kind = transform or "none"
            if self.kind != "none" and t is None:
                raise ValueError(f"transform {self.kind!r} needs t, or a decoding spec to take t from best_t")
            self.exponent = 0.0 if t is None else float(t)
        if references is None:
            if engine is None:
                raise ValueError("CalibratedReward needs references, or an engine to sample them from")
            references = ReferenceSamples(engine, cache_dir, m=m, temperature=temperature, top_p=top_p,
                                          max_tokens=max_tokens, stop=stop, lora=reference_lora,
                                          model_id=model_id, seed=seed)
        self.references = references
        self._ref_rewards: dict[str, list[float]] = {}

    def phi(self, u: float) -> float:
        """Φ(u) of this reward's transform (on [0, 1] with ``unit_range``)."""
        if self.unit_range and self.kind != "none":
            return unit_transform(u, self.kind, self.exponent)
        return transform(u, self.kind, self.exponent)

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
                out.append(self.phi(calibrate(float(r), ref)))
        return out
