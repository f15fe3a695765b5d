"""CTRL's win-rate-against-KL study on the tiny arithmetic policy: raw-reward RLHF, calibrated-identity and CTRL,
each trained from recipes/arith/ctrl.yaml with the same seed, batch and steps, evaluated at every checkpoint.

    python -m twinloop.train.ctrl_study --out runs/ctrl-study [--methods raw calibrated ctrl-bon4 ctrl-bon8 ...]

Methods: ``raw`` (standard KL-RLHF on the base reward), ``calibrated`` (the identity of Ĉ), ``ctrl-bonN`` (the
best-of-N transform, t from best_t) and ``ctrl-wonN`` (worst-of-N). All use the same β unless ``--beta`` is left
out, in which case each method takes its analytical β for the recipe's KL budget. Every checkpoint is evaluated
with ``twinloop.train.ctrl_eval`` (win rates of plain / best-of-N / worst-of-N decoding against the reference
decoded the same way, with 95% intervals, and KL from samples). Writes ``study.json``, ``table.md`` and
``win_rate_vs_kl.png`` under ``--out``. Extra flags go to every trainer (e.g. ``--max_steps 40``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

RECIPE = "recipes/arith/ctrl.yaml"


def method_flags(method: str) -> list[str]:
    if method in ("raw", "calibrated"):
        return ["--reward_mode", method]
    match = re.fullmatch(r"ctrl-(bon|won)(\d+)", method)
    if not match:
        raise ValueError(f"unknown method {method!r}: raw, calibrated, ctrl-bonN or ctrl-wonN")
    decoding = "best_of_n" if match.group(1) == "bon" else "worst_of_n"
    return ["--reward_mode", "ctrl", "--decoding", decoding, "--decoding_n", match.group(2)]


def train(method: str, out: Path, extra: list[str], log: Path) -> Path:
    run = out / method
    if (run / "model.safetensors").is_file():
        return run  # a rerun reuses finished trainings
    argv = [sys.executable, "-m", "twinloop.train.ctrl", "--config", RECIPE, "--output_dir", str(run),
            "--disable_tqdm", "true", *method_flags(method), *extra]
    with open(log, "a") as f:
        subprocess.run(argv, check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return run


def checkpoints(run: Path) -> list[tuple[int, str]]:
    steps = sorted((int(p.name.split("-")[1]), str(p)) for p in run.glob("checkpoint-*"))
    return steps or [(-1, str(run))]  # -1: the final model, when no checkpoint was kept


def margins(study: dict[str, Any], a: str, b: str, key: str) -> list[dict[str, Any]]:
    """Per checkpoint step shared by methods a and b: the paired per-prompt margin of ``key`` (a - b)."""
    from twinloop.train.ctrl_eval import paired_margin, procedure_win_rate

    proc, _, n = key.partition("@")
    ref = study["eval"]["reference_scores"]
    out = []
    for step in sorted(set(study["points"][a]) & set(study["points"][b]), key=int):
        pa, pb = study["points"][a][step], study["points"][b][step]
        wa = [procedure_win_rate(s, r, int(n or 1), proc) for s, r in zip(pa["per_prompt"]["scores"], ref)]
        wb = [procedure_win_rate(s, r, int(n or 1), proc) for s, r in zip(pb["per_prompt"]["scores"], ref)]
        out.append({"step": step, "kl_a": pa["kl"]["mean"], "kl_b": pb["kl"]["mean"], **paired_margin(wa, wb)})
    return out


def plot(study: dict[str, Any], path: Path, budgets: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.2), squeeze=False)
    for ax, n in zip(axes[0], budgets):
        for method, points in study["points"].items():
            pts = sorted(points.values(), key=lambda p: p["kl"]["mean"])
            kl = [0.0] + [p["kl"]["mean"] for p in pts]
            w = [0.5] + [p["win"][f"bon@{n}"]["mean"] for p in pts]
            err = [0.0] + [1.96 * p["win"][f"bon@{n}"]["se"] for p in pts]
            ax.errorbar(kl, w, yerr=err, marker="o", capsize=3, label=method)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xlabel("KL(π‖π_ref), nats (from samples)")
        ax.set_ylabel(f"win rate, best-of-{n} vs best-of-{n}")
        ax.set_title(f"N = {n} (95% intervals over prompts)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def analytical_t(out: Path, budgets: list[int], kl_budget: float) -> dict[str, Any]:
    """W_BoN / W_WoN of the aligned policy at ``kl_budget`` against t, per N (closed forms; the curves whose
    argmax best_t returns). Writes ``t_curve.json`` and ``t_curve.png``."""
    import matplotlib
    import numpy as np
    from twinloop.rewards.calibrated import t_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = list(np.linspace(0.25, 30.0, 60))
    curves = {f"{p}@{n}": t_curve(n, p, kl_budget, ts) for n in budgets for p in ("bon", "won")}
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, rows in curves.items():
        best = max(rows, key=lambda r: r["win_rate"])
        ax.plot([r["t"] for r in rows], [r["win_rate"] for r in rows], label=f"{name} (best t {best['t']:.2f})")
    ax.set_xlabel("t")
    ax.set_ylabel(f"analytical win rate at KL = {kl_budget}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "t_curve.png", dpi=120)
    (out / "t_curve.json").write_text(json.dumps({"kl_budget": kl_budget, "curves": curves}))
    return curves


def table(study: dict[str, Any], budgets: list[int]) -> str:
    keys = ["plain"] + [f"{p}@{n}" for n in budgets for p in ("bon", "won")]
    lines = ["| method | step | KL | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for method, points in study["points"].items():
        for step, p in sorted(points.items(), key=lambda kv: p_order(kv[0])):
            cells = [f"{p['win'][k]['mean']:.3f} ± {1.96 * p['win'][k]['se']:.3f}" for k in keys]
            lines.append(f"| {method} | {step} | {p['kl']['mean']:.3f} ± {1.96 * p['kl']['se']:.3f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def p_order(step: str) -> int:
    return 10 ** 9 if step == "final" else int(step)


def main(argv: list[str] | None = None) -> int:
    from twinloop.train.ctrl_eval import evaluate

    parser = argparse.ArgumentParser(prog="python -m twinloop.train.ctrl_study", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)  # unknown flags go to the trainers whole
    parser.add_argument("--out", default="runs/ctrl-study")
    parser.add_argument("--methods", nargs="+", default=["raw", "calibrated", "ctrl-bon4"])
    parser.add_argument("--n_problems", type=int, default=64)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--kl_budget", type=float, default=0.5, help="for the analytical t curves")
    parser.add_argument("--analytical_only", action="store_true", help="only the analytical t curves")
    args, extra = parser.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    analytical_t(out, args.budgets, args.kl_budget)
    if args.analytical_only:
        return 0
    runs = {m: train(m, out, extra, out / "train.log") for m in args.methods}
    policies = {m: [(("final" if s < 0 else str(s)), p) for s, p in checkpoints(r)] for m, r in runs.items()}
    flat = [p for items in policies.values() for _, p in items]
    ev = evaluate(flat, "checkpoints/tiny-arith-policy", n_problems=args.n_problems, k=args.k,
                  budgets=args.budgets, reward_spec="arith_process(aggregation='mean')")
    study = {"eval": {k: v for k, v in ev.items() if k != "policies"}, "extra_flags": extra,
             "plans": {m: json.loads((r / "ctrl_plan.json").read_text()) for m, r in runs.items()},
             "points": {m: {step: ev["policies"][p] for step, p in items} for m, items in policies.items()}}
    pairs = [("calibrated", "raw", "plain")] + [(m, "calibrated", f"bon@{n}") for m in args.methods
                                                 if m.startswith("ctrl-bon") for n in args.budgets]
    study["margins"] = {f"{a} - {b} on {k}": margins(study, a, b, k) for a, b, k in pairs
                        if a in study["points"] and b in study["points"]}
    (out / "study.json").write_text(json.dumps(study))
    text = table(study, args.budgets)
    for name, rows in study["margins"].items():
        text += f"\n\n{name} (paired over prompts, 95% interval):\n" + "\n".join(
            f"  step {r['step']}: {r['mean']:+.3f} ± {1.96 * r['se']:.3f} (KL {r['kl_a']:.3f} vs {r['kl_b']:.3f})"
            for r in rows)
    (out / "table.md").write_text(text + "\n")
    plot(study, out / "win_rate_vs_kl.png", args.budgets)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
