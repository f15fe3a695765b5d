"""CTRL's t checked against the reward's real tie structure, with no training: the exact aligned policy on each
validation prompt's empirical reference law.

``best_t`` assumes a continuous reward, so that C ~ U[0, 1] under π_ref. A coarse reward (arith_process: a few
values k/L per prompt) ties often: Ĉ takes a few values and the best outcome's Ĉ is 1 - P(tie at the top)/2, well
below 1. Here, per prompt, the reference law q over the distinct reward values comes from m reference samples,
Ĉ is computed against them (ties ½), and the policy that KL-regularised RL on Φ_t(Ĉ) converges to,
p ∝ q·exp(Φ_t(Ĉ)/β), is formed exactly. One β per t (as in training) puts the mean KL over prompts on the budget;
the best-of-N win rate of p against q is then exact per prompt (``law_win_rate``), averaged over prompts with a 95%
interval. This is what each t could reach at that KL if RL converged; it is not a trained sweep.

    python -m twinloop.train.ctrl_ties --out runs/ctrl-ties --split dev --n_problems 64 --m 16
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


# ---------------------------------------------------------------------------------------------- pure maths
def reference_law(scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, their probabilities q, Ĉ of each value against the same samples, ties ½)."""
    values, counts = np.unique(np.asarray(scores, dtype=np.float64), return_counts=True)
    q = counts / counts.sum()
    c_hat = np.cumsum(q) - q + 0.5 * q
    return values, q, c_hat


def aligned_law(q: np.ndarray, phi: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    """p ∝ q·exp(Φ/β) on the reference's support, and KL(p‖q)."""
    logits = np.log(q) + phi / beta
    logits -= logits.max()
    p = np.exp(logits)
    p /= p.sum()
    keep = p > 0
    return p, float(np.sum(p[keep] * (np.log(p[keep]) - np.log(q[keep]))))


def tie_aware_point(laws: Sequence[tuple[np.ndarray, np.ndarray]], phis: Sequence[np.ndarray], kl_budget: float,
                    n: int, procedure: str = "bon", iters: int = 80) -> dict[str, Any]:
    """One β for all prompts such that their mean KL(p‖q) is ``kl_budget`` (bisection in log β; capped at the
    largest mean KL the supports allow), then each prompt's exact ``procedure``@n win rate of p against q.
    ``laws`` holds (q, Ĉ) per prompt and ``phis`` Φ(Ĉ) per prompt."""
    from twinloop.train.ctrl_eval import law_win_rate, mean_ci

    spread = max(float(np.max(np.abs(np.concatenate(phis)))), 1e-12)

    def mean_kl(beta: float) -> float:
        return float(np.mean([aligned_law(q, phi, beta)[1] for (q, _), phi in zip(laws, phis)]))

    lo, hi = math.log(1e-8 * spread), math.log(1e8 * spread)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_kl(math.exp(mid)) > kl_budget else (lo, mid)
    beta = math.exp(hi)
    wins, kls = [], []
    for (q, _), phi in zip(laws, phis):
        p, kl = aligned_law(q, phi, beta)
        wins.append(law_win_rate(p, q, n, procedure))
        kls.append(kl)
    return {"beta": beta, "kl": float(np.mean(kls)), "win": mean_ci(wins), "per_prompt": wins}


def tie_aware_curve(scores: Sequence[Sequence[float]], ts: Sequence[float], kl_budget: float, n: int,
                    procedure: str = "bon", calibrate_m: int | None = None) -> dict[str, Any]:
    """Per t, ``tie_aware_point`` of the Φ_t transform (unit range), plus the identity of Ĉ (the calibrated
    baseline), from each prompt's reference rewards. With ``calibrate_m``, Ĉ is taken against each prompt's first
    ``calibrate_m`` rewards only (what a trainer with that m sees) while the law uses them all."""
    from twinloop.rewards.calibrated import calibrate, unit_transform
    from twinloop.train.ctrl_eval import paired_margin

    laws = []
    for s in scores:
        values, q, c_hat = reference_law(s)
        if calibrate_m is not None:
            c_hat = np.array([calibrate(float(v), list(s[:calibrate_m])) for v in values])
        laws.append((q, c_hat))
    points = []
    for t in ts:
        phis = [np.array([unit_transform(float(c), procedure, float(t)) for c in c_hat]) for _, c_hat in laws]
        points.append({"t": float(t), **tie_aware_point(laws, phis, kl_budget, n, procedure)})
    identity = tie_aware_point(laws, [c_hat for _, c_hat in laws], kl_budget, n, procedure)
    for point in points:  # paired over the same prompts
        point["over_identity"] = paired_margin(point["per_prompt"], identity["per_prompt"])
    return {"points": points, "identity": identity}


# ---------------------------------------------------------------------------------------------- the run
def reference_scores(reference: str, split: str, n_problems: int, m: int, max_tokens: int, cache_dir: str,
                     seed: int, reward_spec: str = "arith_process(aggregation='mean')") -> list[list[float]]:
    """m reference samples per prompt of the split (cached by ``ReferenceSamples``), scored with the base reward
    ``reward_spec`` (None counts 0.0, as in ``ctrl_eval.score``)."""
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.rewards.calibrated import ReferenceSamples
    from twinloop.train.common import load_tokenizer

    from twinloop.build import build_reward
    from twinloop.tasks import build_task

    rows = build_task("arith").load(split, n=n_problems, seed=None)
    engine = HFEngine(reference, tokenizer=load_tokenizer(reference))
    refs = ReferenceSamples(engine, cache_dir, m=m, temperature=1.0, max_tokens=max_tokens,
                            model_id=str(Path(reference).resolve()), seed=seed)
    samples = refs.get([r["prompt"] for r in rows])
    reward = build_reward(reward_spec, task="arith")
    out = []
    for row, texts in zip(rows, samples):
        cols = {k: [v] * len(texts) for k, v in row.items() if k != "prompt"}
        out.append([0.0 if s is None else float(s) for s in reward([row["prompt"]] * len(texts), texts, **cols)])
    return out


def plot(curves: dict[str, Any], analytical: dict[str, Any], path: Path, kl_budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.8 * len(curves), 4.2), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        ts = [p["t"] for p in curve["points"]]
        mean = np.array([p["win"]["mean"] for p in curve["points"]])
        half = np.array([1.96 * p["win"]["se"] for p in curve["points"]])
        best = max(curve["points"], key=lambda p: p["win"]["mean"])
        ax.plot(ts, mean, marker="o", label=f"tie-aware (best t {best['t']:g})")
        ax.fill_between(ts, mean - half, mean + half, alpha=0.2)
        rows = analytical[name]
        top = max(rows, key=lambda r: r["win_rate"])
        ax.plot([r["t"] for r in rows], [r["win_rate"] for r in rows], "k--", lw=1,
                label=f"continuous closed form (best t {top['t']:.1f})")
        ax.axhline(curve["identity"]["win"]["mean"], color="grey", lw=1, ls=":", label="identity of Ĉ (tie-aware)")
        ax.axvline(top["t"], color="red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("t (BoN transform exp(t·u))")
        ax.set_ylabel(f"{name} win rate of the aligned policy at KL {kl_budget}")
        ax.set_title(f"{name}: exact on the reference laws (95% over prompts)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    from twinloop.rewards.calibrated import t_curve

    parser = argparse.ArgumentParser(prog="python -m twinloop.train.ctrl_ties", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ctrl-ties")
    parser.add_argument("--reference", default="checkpoints/tiny-arith-policy")
    parser.add_argument("--split", default="dev", help="dev is the validation split")
    parser.add_argument("--n_problems", type=int, default=64)
    parser.add_argument("--m", type=int, default=16, help="reference samples per prompt (the recipe's reference_m)")
    parser.add_argument("--reward", default="arith_process(aggregation='mean')",
                        help="base reward spec, e.g. runs/rm/orm/rm(sigmoid=True) (the learned ORM)")
    parser.add_argument("--calibrate_m", type=int, default=None,
                        help="Ĉ against the first this many references only (the trainer's m); the law uses all m")
    parser.add_argument("--max_tokens", type=int, default=96)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--kl_budget", type=float, default=0.5)
    parser.add_argument("--ts", type=float, nargs="+", default=[0.5, 1, 2, 3, 4.5, 6, 9, 12.75, 18, 25, 35, 50])
    parser.add_argument("--cache_dir", default="runs/ctrl-references")
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    if not Path(a.reference).is_dir():
        raise SystemExit(f"ctrl_ties: error: model folder {a.reference} not found")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    scores = reference_scores(a.reference, a.split, a.n_problems, a.m, a.max_tokens, a.cache_dir, a.seed, a.reward)
    curves = {f"bon@{n}": tie_aware_curve(scores, a.ts, a.kl_budget, n, calibrate_m=a.calibrate_m)
              for n in a.budgets}
    grid = list(np.geomspace(min(a.ts), max(a.ts), 60))
    analytical = {f"bon@{n}": t_curve(n, "bon", a.kl_budget, grid) for n in a.budgets}
    distinct = [len(set(s)) for s in scores]
    top_c = [float(reference_law(s)[2][-1]) for s in scores]
    result = {"reward": a.reward, "split": a.split, "n_problems": len(scores), "m": a.m, "calibrate_m": a.calibrate_m,
              "kl_budget": a.kl_budget,
              "distinct_values_per_prompt": float(np.mean(distinct)), "c_hat_of_best_outcome": float(np.mean(top_c)),
              "curves": {k: {"points": [{x: v for x, v in p.items() if x != "per_prompt"} for p in c["points"]],
                             "identity": {x: v for x, v in c["identity"].items() if x != "per_prompt"}}
                         for k, c in curves.items()},
              "analytical": analytical, "scores": scores}
    (out / "ties.json").write_text(json.dumps(result))
    plot(curves, analytical, out / "ties.png", a.kl_budget)
    print(f"{len(scores)} {a.split} prompts, m = {a.m}: {result['distinct_values_per_prompt']:.2f} distinct "
          f"rewards per prompt; Ĉ of the best outcome {result['c_hat_of_best_outcome']:.3f} on average")
    for name, c in curves.items():
        best = max(c["points"], key=lambda p: p["win"]["mean"])
        top = max(analytical[name], key=lambda r: r["win_rate"])
        cells = "  ".join(f"t={p['t']:g}: {p['win']['mean']:.3f}±{1.96 * p['win']['se']:.3f} (KL {p['kl']:.3f}, "
                          f"over identity {p['over_identity']['mean']:+.4f}±{1.96 * p['over_identity']['se']:.4f})"
                          for p in c["points"])
        print(f"{name}: tie-aware best t {best['t']:g} ({best['win']['mean']:.3f}); identity "
              f"{c['identity']['win']['mean']:.3f}; continuous best t {top['t']:.2f} ({top['win_rate']:.3f})")
        print("  " + cells.replace(")  t=", ")\n  t="))
    return 0


if __name__ == "__main__":
    sys.exit(main())
