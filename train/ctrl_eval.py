"""Inference-time win rates of T(π) against T(π_ref) and KL(π‖π_ref), estimated by sampling (CTRL's evaluation).

For each test prompt, K completions are sampled from the policy and K from the reference (same temperature and
length) and scored with the base reward. T is plain sampling, best-of-N or worst-of-N under that reward; the
per-prompt win rate P(T(π) ≻ T(π_ref)) + ½·P(tie) is computed exactly for N i.i.d. draws from the two empirical
reward distributions (plug-in: draws with replacement from the K samples), then averaged over prompts, with a
95% confidence interval from the prompt-level standard error (prompts are the independent units). KL is the
mean over the policy's samples of log π(y|x) - log π_ref(y|x) (sequence log-probabilities at temperature 1 on the
sampled tokens), with its standard error.

    python -m twinloop.train.ctrl_eval --policy runs/ctrl-tiny-arith/checkpoint-20 runs/ctrl-tiny-arith \
        --reference checkpoints/tiny-arith-policy --n_problems 64 --k 32 --out runs/ctrl-eval/ctrl.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROCEDURES = ("plain", "bon", "won")


# ---------------------------------------------------------------------------------------------- pure maths
def _pmf(values: Sequence[float], support: np.ndarray) -> np.ndarray:
    counts = np.array([np.sum(np.asarray(values) == v) for v in support], dtype=np.float64)
    return counts / counts.sum()


def procedure_win_rate(policy: Sequence[float], reference: Sequence[float], n: int, procedure: str) -> float:
    """P(T(π) ≻ T(π_ref)) + ½·P(T(π) = T(π_ref)) for one prompt, where T keeps one draw (``plain``), the best
    (``bon``) or the worst (``won``) of n i.i.d. draws from each empirical reward distribution."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {PROCEDURES}, got {procedure!r}")
    if not len(policy) or not len(reference):
        raise ValueError("win rates need at least one policy and one reference reward")
    support = np.unique(np.concatenate([np.asarray(policy, float), np.asarray(reference, float)]))
    return law_win_rate(_pmf(policy, support), _pmf(reference, support), n, procedure)


def law_win_rate(p: np.ndarray, q: np.ndarray, n: int, procedure: str) -> float:
    """P(T(π) ≻ T(π_ref)) + ½·P(tie) for two reward laws given as pmfs ``p`` (policy) and ``q`` (reference) on
    one sorted support of distinct reward values."""
    n = 1 if procedure == "plain" else n

    def law(pmf: np.ndarray) -> np.ndarray:  # pmf of the kept draw, on the support
        if procedure == "won":
            survival = np.concatenate([np.cumsum(pmf[::-1])[::-1], [0.0]])  # P(X >= v), then 0 past the top
            return survival[:-1] ** n - survival[1:] ** n
        cdf = np.concatenate([[0.0], np.cumsum(pmf)])  # P(X < v) ... P(X <= v)
        return cdf[1:] ** n - cdf[:-1] ** n

    kept_p, kept_q = law(p), law(q)
    below_q = np.concatenate([[0.0], np.cumsum(kept_q)[:-1]])
    return float(np.sum(kept_p * (below_q + 0.5 * kept_q)))


def mean_ci(values: Sequence[float], z: float = 1.96) -> dict[str, float]:
    """Mean, standard error and the normal z-interval of per-unit values."""
    x = np.asarray(values, dtype=np.float64)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return {"mean": float(x.mean()), "se": se, "lo": float(x.mean() - z * se), "hi": float(x.mean() + z * se)}


def win_rates(policy: Sequence[Sequence[float]], reference: Sequence[Sequence[float]],
              budgets: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per procedure and N (``plain``, ``bon@N``, ``won@N``): mean over prompts with its 95% interval."""
    out = {"plain": mean_ci([procedure_win_rate(p, r, 1, "plain") for p, r in zip(policy, reference)])}
    for n in budgets:
        for proc in ("bon", "won"):
            out[f"{proc}@{n}"] = mean_ci([procedure_win_rate(p, r, n, proc) for p, r in zip(policy, reference)])
    return out


def paired_margin(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """The per-prompt difference a - b (same prompts) with its 95% interval."""
    return mean_ci([x - y for x, y in zip(a, b)])


# ---------------------------------------------------------------------------------------------- sampling
def sample(engine: Any, prompts: Sequence[Any], k: int, temperature: float, max_tokens: int,
           seed: int) -> list[list[Any]]:
    """K completions (``Completion`` objects) per prompt."""
    from twinloop.contracts import SamplingConfig, as_requests

    out = []
    for i, req in enumerate(as_requests(prompts)):
        res = engine.generate([req], SamplingConfig(n=k, temperature=temperature, max_tokens=max_tokens,
                                                    seed=seed + i))[0]
        out.append([(res.prompt_ids, c) for c in res.completions])
    return out


def sequence_kl(policy_engine: Any, reference_engine: Any, samples: Sequence[Sequence[Any]]) -> list[float]:
    """Per prompt, the mean of log π(y|x) - log π_ref(y|x) over the policy's samples."""
    out = []
    for items in samples:
        prefixes = [list(pids) for pids, _ in items]
        conts = [list(c.token_ids) for _, c in items]
        lp = policy_engine.continuation_logprobs(prefixes, conts)
        lr = reference_engine.continuation_logprobs(prefixes, conts)
        out.append(float(np.mean([sum(a) - sum(b) for a, b in zip(lp, lr)])))
    return out


def score(reward: Any, rows: Sequence[dict[str, Any]], samples: Sequence[Sequence[Any]]) -> list[list[float]]:
    """Base-reward scores of each prompt's samples (None counts as 0.0, as the trainer's checked reward would
    refuse it)."""
    out = []
    for row, items in zip(rows, samples):
        cols = {k: [v] * len(items) for k, v in row.items() if k != "prompt"}
        scores = reward([row["prompt"]] * len(items), [c.text for _, c in items], **cols)
        out.append([0.0 if s is None else float(s) for s in scores])
    return out


def evaluate(policies: Sequence[str], reference: str, task: str = "arith", reward_spec: str | None = None,
             split: str = "test", n_problems: int = 64, k: int = 32, temperature: float = 1.0,
             max_tokens: int = 96, budgets: Sequence[int] = (4, 8), seed: int = 0,
             task_seed: int | None = None) -> dict[str, Any]:
    """Win rates and KL of each policy against ``reference`` on the first ``n_problems`` of ``split`` (a train
    split drawn with ``task_seed`` is the one a trainer with that ``task_seed`` saw)."""
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.train.common import load_tokenizer

    from twinloop.build import build_reward
    from twinloop.tasks import build_task

    rows = build_task(task).load(split, n=n_problems, seed=task_seed)
    prompts = [r["prompt"] for r in rows]
    reward = build_reward(reward_spec or "task", task=task)
    ref_engine = HFEngine(reference, tokenizer=load_tokenizer(reference))
    ref_samples = sample(ref_engine, prompts, k, temperature, max_tokens, seed + 1_000_000)
    ref_scores = score(reward, rows, ref_samples)
    results: dict[str, Any] = {"reference": reference, "task": task, "reward": reward.spec(), "split": split,
                               "n_problems": len(rows), "k": k, "temperature": temperature,
                               "max_tokens": max_tokens, "budgets": list(budgets), "policies": {}}
    for policy in policies:
        engine = HFEngine(policy, tokenizer=load_tokenizer(policy))
        pol_samples = sample(engine, prompts, k, temperature, max_tokens, seed)
        pol_scores = score(reward, rows, pol_samples)
        kl = sequence_kl(engine, ref_engine, pol_samples)
        results["policies"][policy] = {
            "kl": mean_ci(kl), "win": win_rates(pol_scores, ref_scores, budgets),
            "mean_reward": float(np.mean(pol_scores)),
            "per_prompt": {"scores": pol_scores, "kl": kl},
        }
    results["reference_mean_reward"] = float(np.mean(ref_scores))
    results["reference_scores"] = ref_scores
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinloop.train.ctrl_eval", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", nargs="+", required=True, help="policy folders (checkpoints)")
    parser.add_argument("--reference", default="checkpoints/tiny-arith-policy")
    parser.add_argument("--task", default="arith")
    parser.add_argument("--reward", default="arith_process(aggregation='mean')", help="base reward spec")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n_problems", type=int, default=64)
    parser.add_argument("--k", type=int, default=32, help="samples per prompt from each policy")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max_tokens", type=int, default=96)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task_seed", type=int, default=None, help="seed of a train split (the trainer's)")
    parser.add_argument("--out", required=True, help="JSON file")
    a = parser.parse_args(argv)
    for p in [*a.policy, a.reference]:
        if not Path(p).is_dir():
            raise SystemExit(f"ctrl_eval: error: model folder {p} not found")
    res = evaluate(a.policy, a.reference, a.task, a.reward, a.split, a.n_problems, a.k, a.temperature,
                   a.max_tokens, a.budgets, a.seed, a.task_seed)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res))
    for policy, r in res["policies"].items():
        cells = "  ".join(f"{name} {w['mean']:.3f}±{1.96 * w['se']:.3f}" for name, w in r["win"].items())
        print(f"{policy}: KL {r['kl']['mean']:.3f}±{1.96 * r['kl']['se']:.3f}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
