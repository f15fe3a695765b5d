"""CTRL's win-rate-against-KL study on the tiny arithmetic policy: raw-reward RLHF, calibrated-identity and CTRL,
each trained from recipes/arith/ctrl.yaml with the same seed, batch and steps, evaluated at every checkpoint.

    python -m twinloop.train.ctrl_study --out runs/ctrl-study [--methods raw calibrated ctrl-bon4 ctrl-bon8 ...]

Methods: ``raw`` (standard KL-RLHF on the base reward), ``calibrated`` (the identity of Ĉ), ``ctrl-bonN`` (the
best-of-N transform, t from best_t) and ``ctrl-wonN`` (worst-of-N). All use the same β unless ``--beta`` is left
out, in which case each method takes its analytical β for the recipe's KL budget. Every checkpoint is evaluated
with ``twinloop.train.ctrl_eval`` (win rates of plain / best-of-N / worst-of-N decoding against the reference
decoded the same way, with 95% intervals, and KL from samples). Writes ``study.json``, ``table.md`` and
``win_rate_vs_kl.png`` (best-of-N and worst-of-N rows) under ``--out``. Extra flags go to every trainer (e.g.
``--max_steps 40``). A rerun reuses finished trainings, and the evaluations of an earlier ``study.json`` in the same
folder made with the same settings and the same reference draws.

The empirical t sweep (the analytical ``best_t`` checked on a validation split):

    python -m twinloop.train.ctrl_study --out runs/ctrl-t-sweep --t_sweep 3 6 12.75 25 --split dev --max_steps 40

trains ``ctrl-bon4-tT`` for each T and writes ``t_sweep.png``: the measured best-of-4 win rate and KL against t,
next to the analytical W_BoN(t) at ``--kl_budget`` with the analytical best t marked.
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


METHOD = re.compile(r"ctrl-(bon|won)(\d+)(?:-t(\d+(?:\.\d+)?))?")


def method_flags(method: str) -> list[str]:
    """Trainer flags of a method: ``raw``, ``calibrated``, ``ctrl-bonN`` / ``ctrl-wonN`` (t from best_t) or
    ``ctrl-bonN-tT`` (an explicit t, for the empirical t sweep; β still puts the aligned policy on the budget)."""
    if method in ("raw", "calibrated"):
        return ["--reward_mode", method]
    match = METHOD.fullmatch(method)
    if not match:
        raise ValueError(f"unknown method {method!r}: raw, calibrated, ctrl-bonN, ctrl-wonN or ctrl-bonN-tT")
    decoding = "best_of_n" if match.group(1) == "bon" else "worst_of_n"
    flags = ["--reward_mode", "ctrl", "--decoding", decoding, "--decoding_n", match.group(2)]
    return flags + (["--ctrl_t", match.group(3)] if match.group(3) else [])


def train(method: str, out: Path, extra: list[str], log: Path, recipe: str = RECIPE) -> tuple[Path, bool]:
    """(the run folder, whether it was trained now): a rerun reuses finished trainings."""
    run = out / method
    if (run / "model.safetensors").is_file():
        return run, False
    argv = [sys.executable, "-m", "twinloop.train.ctrl", "--config", recipe, "--output_dir", str(run),
            "--disable_tqdm", "true", *method_flags(method), *extra]
    with open(log, "a") as f:
        subprocess.run(argv, check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return run, True


def checkpoints(run: Path) -> list[tuple[int, str]]:
    steps = sorted((int(p.name.split("-")[1]), str(p)) for p in run.glob("checkpoint-*"))
    return steps or [(-1, str(run))]  # -1: the final model, when no checkpoint was kept


def margins(study: dict[str, Any], a: str, b: str, key: str) -> list[dict[str, Any]]:
    """Per checkpoint step shared by methods a and b: the paired per-prompt margin of ``key`` (a - b)."""
    from twinloop.train.ctrl_eval import paired_margin, procedure_win_rate

    proc, _, n = key.partition("@")
    ref = study["eval"]["reference_scores"]
    out = []
    for step in sorted(set(study["points"][a]) & set(study["points"][b]), key=p_order):
        pa, pb = study["points"][a][step], study["points"][b][step]
        wa = [procedure_win_rate(s, r, int(n or 1), proc) for s, r in zip(pa["per_prompt"]["scores"], ref)]
        wb = [procedure_win_rate(s, r, int(n or 1), proc) for s, r in zip(pb["per_prompt"]["scores"], ref)]
        out.append({"step": step, "kl_a": pa["kl"]["mean"], "kl_b": pb["kl"]["mean"], **paired_margin(wa, wb)})
    return out


def plot(study: dict[str, Any], path: Path, budgets: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    procs = [("bon", "best"), ("won", "worst")]
    fig, axes = plt.subplots(len(procs), len(budgets), figsize=(5.5 * len(budgets), 4.2 * len(procs)),
                             squeeze=False)
    for row, (proc, word) in zip(axes, procs):
        for ax, n in zip(row, budgets):
            for method, points in study["points"].items():
                pts = sorted(points.values(), key=lambda p: p["kl"]["mean"])
                kl = [0.0] + [p["kl"]["mean"] for p in pts]
                w = [0.5] + [p["win"][f"{proc}@{n}"]["mean"] for p in pts]
                err = [0.0] + [1.96 * p["win"][f"{proc}@{n}"]["se"] for p in pts]
                ax.errorbar(kl, w, yerr=err, marker="o", capsize=3, label=method)
            ax.axhline(0.5, color="grey", lw=0.5)
            ax.set_xlabel("KL(π‖π_ref), nats (from samples)")
            ax.set_ylabel(f"win rate, {word}-of-{n} vs {word}-of-{n}")
            ax.set_title(f"{word}-of-{n} (95% intervals over prompts)")
            ax.legend(fontsize=8)
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

    ts = list(np.linspace(0.25, 60.0, 120))  # past 30: best-of-8 at KL 0.5 peaks near 35
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


EVAL_SETTINGS = ("reference", "task", "reward", "split", "n_problems", "k", "temperature", "max_tokens", "budgets")


def reusable_points(path: Path, settings: dict[str, Any], policies: dict[str, list[tuple[str, str]]],
                    fresh: set[str]) -> tuple[dict[str, Any], list[list[float]] | None]:
    """Per-policy results of an earlier study in the same folder, evaluated with the same settings, for methods not
    retrained now: ({policy path: result}, the reference scores they were measured against)."""
    if not path.is_file():
        return {}, None
    old = json.loads(path.read_text())
    if any(old["eval"].get(k) != settings[k] for k in EVAL_SETTINGS):
        return {}, None
    found = {p: old["points"][m][step] for m, items in policies.items() if m not in fresh
             for step, p in items if step in old["points"].get(m, {})}
    return found, old["eval"]["reference_scores"]


def sweep_points(study: dict[str, Any], n: int) -> list[tuple[float, dict[str, Any]]]:
    """(t, last evaluated point) of every ``ctrl-bonN-tT`` method of the study, by t."""
    out = []
    for method, points in study["points"].items():
        match = METHOD.fullmatch(method)
        if match and match.group(1) == "bon" and int(match.group(2)) == n and match.group(3):
            out.append((float(match.group(3)), points[max(points, key=p_order)]))
    return sorted(out, key=lambda tp: tp[0])


def plot_t_sweep(study: dict[str, Any], path: Path, n: int, kl_budget: float) -> dict[str, Any]:
    """The measured best-of-N win rate and KL of CTRL-BoN@N trained at each t (validation split), next to the
    analytical W_BoN(t) at ``kl_budget`` with the analytical best t marked."""
    import matplotlib
    import numpy as np
    from twinloop.rewards.calibrated import best_t, t_curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sweep_points(study, n)
    if not pts:
        raise ValueError(f"no ctrl-bon{n}-tT methods in the study to plot against t")
    chosen = best_t(n, "bon", kl_budget=kl_budget)
    ts = [t for t, _ in pts]
    grid = list(np.linspace(min(ts + [chosen["t"]]) * 0.8, max(ts + [chosen["t"]]) * 1.1, 60))
    curve = t_curve(n, "bon", kl_budget, grid)
    fig, (ax, ax_kl) = plt.subplots(1, 2, figsize=(11, 4.2))
    key = f"bon@{n}"
    ax.errorbar(ts, [p["win"][key]["mean"] for _, p in pts], yerr=[1.96 * p["win"][key]["se"] for _, p in pts],
                marker="o", capsize=3, label=f"measured best-of-{n} win rate (validation)")
    ax.set_xscale("log")
    ax.set_xlabel("t (BoN transform exp(t·u))")
    ax.set_ylabel(f"measured win rate, best-of-{n} vs best-of-{n}")
    twin = ax.twinx()
    twin.plot(grid, [r["win_rate"] for r in curve], "k--", lw=1, label=f"analytical W at KL {kl_budget}")
    twin.set_ylabel(f"analytical W_BoN at KL = {kl_budget}")
    for a in (ax, ax_kl):
        a.axvline(chosen["t"], color="red", lw=1, ls=":", label=f"analytical best t = {chosen['t']:.2f}")
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    ax_kl.errorbar(ts, [p["kl"]["mean"] for _, p in pts], yerr=[1.96 * p["kl"]["se"] for _, p in pts], marker="o",
                   capsize=3, label="KL from samples")
    ax_kl.axhline(kl_budget, color="grey", lw=0.5, label="the budget β is set for")
    ax_kl.set_xscale("log")
    for a in (ax, ax_kl):
        a.set_xticks(ts, [f"{t:g}" for t in ts])
        a.minorticks_off()
    ax.axhline(0.5, color="grey", lw=0.5)
    ax_kl.set_xlabel("t")
    ax_kl.set_ylabel("KL(π‖π_ref), nats")
    ax_kl.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return {"analytical_t": chosen["t"], "analytical_win_rate": chosen["win_rate"],
            "measured": [{"t": t, "kl": p["kl"], key: p["win"][key]} for t, p in pts]}


def main(argv: list[str] | None = None) -> int:
    from twinloop.train.ctrl_eval import evaluate

    parser = argparse.ArgumentParser(prog="python -m twinloop.train.ctrl_study", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)  # unknown flags go to the trainers whole
    parser.add_argument("--out", default="runs/ctrl-study")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="default: raw calibrated ctrl-bon4 (none when --t_sweep is given)")
    parser.add_argument("--t_sweep", type=float, nargs="+", default=[],
                        help="also train ctrl-bon{N}-t{T} for each T (N = --sweep_n) and plot win rate and KL "
                             "against t with the analytical t (t_sweep.png); evaluate it on --split dev")
    parser.add_argument("--sweep_n", type=int, default=4)
    parser.add_argument("--split", default="test", help="evaluation split (dev is the validation split)")
    parser.add_argument("--recipe", default=RECIPE, help="co-design recipe: trains every method and names the "
                        "base reward the win rates are judged by (recipes/arith/ctrl-orm.yaml: the learned ORM)")
    parser.add_argument("--reference", default="checkpoints/tiny-arith-policy")
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
    methods = (args.methods if args.methods is not None else [] if args.t_sweep else
               ["raw", "calibrated", "ctrl-bon4"])
    methods = methods + [f"ctrl-bon{args.sweep_n}-t{t:g}" for t in args.t_sweep]
    trained = {m: train(m, out, extra, out / "train.log", args.recipe) for m in methods}
    runs = {m: run for m, (run, _) in trained.items()}
    fresh = {m for m, (_, new) in trained.items() if new}
    policies = {m: [(("final" if s < 0 else str(s)), p) for s, p in checkpoints(r)] for m, r in runs.items()}
    from twinloop.recipe import read

    reward_spec = read(args.recipe)["reward"]
    from twinloop.build import build_reward

    settings = {"reference": args.reference, "task": "arith", "split": args.split,
                "reward": build_reward(reward_spec, task="arith").spec(),  # as evaluate() records it
                "n_problems": args.n_problems, "k": args.k, "temperature": 1.0, "max_tokens": 96,
                "budgets": args.budgets}
    reused, old_reference = reusable_points(out / "study.json", settings, policies, fresh)
    todo = [p for items in policies.values() for _, p in items if p not in reused]
    ev = evaluate(todo, args.reference, split=args.split, n_problems=args.n_problems, k=args.k,
                  budgets=args.budgets, reward_spec=reward_spec)
    if reused and ev["reference_scores"] != old_reference:  # not the same reference draws: measure all again
        print("ctrl_study: the reference samples differ from the earlier study's; evaluating every policy")
        ev, reused = evaluate([p for items in policies.values() for _, p in items], args.reference,
                              split=args.split, n_problems=args.n_problems, k=args.k, budgets=args.budgets,
                              reward_spec=reward_spec), {}
    ev["policies"].update(reused)
    study = {"eval": {k: v for k, v in ev.items() if k != "policies"}, "extra_flags": extra,
             "plans": {m: json.loads((r / "ctrl_plan.json").read_text()) for m, r in runs.items()},
             "reused": sorted(reused),
             "points": {m: {step: ev["policies"][p] for step, p in items} for m, items in policies.items()}}
    pairs = [("calibrated", "raw", "plain")]
    for m in methods:
        match = METHOD.fullmatch(m)
        if match and not match.group(3):
            pairs += [(m, "calibrated", f"{match.group(1)}@{n}") for n in args.budgets]
    study["margins"] = {f"{a} - {b} on {k}": margins(study, a, b, k) for a, b, k in pairs
                        if a in study["points"] and b in study["points"]}
    if args.t_sweep:
        study["t_sweep"] = plot_t_sweep(study, out / "t_sweep.png", args.sweep_n, args.kl_budget)
        anchor = min(sweep_points(study, args.sweep_n), key=lambda tp: abs(tp[0] - study["t_sweep"]["analytical_t"]))
        names = {t: f"ctrl-bon{args.sweep_n}-t{t:g}" for t in args.t_sweep}
        study["margins"].update({f"{names[t]} - {names[anchor[0]]} on bon@{args.sweep_n}": margins(
            study, names[t], names[anchor[0]], f"bon@{args.sweep_n}") for t in args.t_sweep if t != anchor[0]})
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
