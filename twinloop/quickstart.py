"""`twinloop quickstart` (`make quickstart`): search on the shipped tiny arithmetic policy through vLLM.

Greedy, majority@16 and best-of-16 with the verifiable reward on 200 held-out arithmetic problems, with
the majority-vote temperature tuned on the dev split (never on test). Prints a table and writes the
per-problem JSONL, a summary and a PNG of accuracy against generated tokens under ``runs/<timestamp>/``.
``--methods`` takes any procedure under ``twinloop.infer.search``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from twinloop.build import build_engine, build_reward
from twinloop.infer import evaluate as ev
from twinloop.infer import report

POLICY = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-arith-policy"
SEEDED = {"sampling_seed": 0}  # per-request engine seeds: the same command prints the same table


def reward_for(method: str) -> str:
    """The arithmetic reward a procedure searches with, from what the procedure declares it needs: the task's
    outcome or exact process reward, or a judge run on the policy (its alias)."""
    need = ev.load_procedure(method).NEEDS_REWARD
    return {"outcome": "arith_outcome", "process": "arith_process"}.get(need, need or "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=str(POLICY), help="policy folder (default: the shipped tiny policy)")
    p.add_argument("--methods", default="greedy,majority,best_of_n",
                   help="comma list of search procedures (twinloop.infer.search; all of them run here)")
    p.add_argument("--n", type=int, default=16, help="nominal N for every sampling/search method")
    p.add_argument("--n-problems", type=int, default=200, help="held-out test problems")
    p.add_argument("--n-dev", type=int, default=200, help="dev problems used to tune the voting temperature")
    p.add_argument("--temperatures", default="0.1,0.2,0.3,0.5,0.7", help="candidates for the voting temperature")
    p.add_argument("--bon-temperature", type=float, default=1.0, help="sampling temperature for best-of-N")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--out", default=None, help="output folder (default runs/<timestamp>)")


def tune_temperature(problems, engine, temperatures, n, max_tokens, out: Path, judge) -> tuple[float, dict]:
    """Majority@n accuracy on the dev split for each temperature; the best wins (ties: the lower one)."""
    scores = {}
    for t in temperatures:
        path = out / f"dev_majority_T{t}.jsonl"
        ev.evaluate(problems, [engine], ["majority"], [n], path, judge, lambda e: None,
                    lambda m, t=t: ev.build_config(m, t, max_tokens, 0, SEEDED), progress=True)
        rows = report.read_rows(path)
        scores[t] = sum(r["correct"] for r in rows) / max(1, len(rows))
        print(f"dev majority@{n} at T={t}: {scores[t]:.3f}")
    best = max(temperatures, key=lambda t: (scores[t], -t))
    return best, scores


def fit_compute_optimal(dev, engine, methods, args, out: Path, judge, t_vote: float) -> dict:
    """compute_optimal's settings: the policy fitted on dev (cached in ``out``) over the run's other
    methods (else co_fit's default menu), each at the temperature it runs at here."""
    from twinloop.infer import co_fit

    def temperature(name: str) -> float:
        return args.bon_temperature if name in ("best_of_n", "worst_of_n") else t_vote

    def config_for(module):
        name = ev.method_of(module)
        return ev.build_config(module, temperature(name), args.max_tokens, 0, SEEDED)

    menu = co_fit.menu_for(config_for(ev.load_procedure("compute_optimal")), methods)
    policy = co_fit.fit_on_dev(dev, [engine], menu, [args.n], out / "compute_optimal", judge,
                               lambda e: build_reward(reward_for("compute_optimal"), task="arith", engine=e),
                               config_for)
    return {"policy": str(policy), "method_settings": {m: {"temperature": temperature(m)} for m in menu}}


def run(args: argparse.Namespace) -> int:


    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        ev.load_procedure(m)  # an unknown name fails in one line, listing the procedures
    temps = [float(t) for t in args.temperatures.split(",")]
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    judge = ev.make_judge("arith")
    dev = ev.to_problems(ev.load_rows("arith", "dev", args.n_dev))
    test = ev.to_problems(ev.load_rows("arith", "test", args.n_problems))
    engine = build_engine(f"vllm:{args.checkpoint}", dtype="float32", max_model_len=1024, seed=0)
    try:
        t_vote, dev_scores = (tune_temperature(dev, engine, temps, args.n, args.max_tokens, out, judge)
                              if "majority" in methods or "weighted_majority" in methods else (temps[0], {}))
        print(f"voting temperature chosen on dev: T={t_vote}")
        results = out / "results.jsonl"
        for method in methods:
            temperature = args.bon_temperature if method in ("best_of_n", "worst_of_n") else t_vote
            spec = reward_for(method)
            settings = dict(SEEDED)
            if method == "compute_optimal":  # its per-bin choice is fitted on dev, with the same reward
                settings |= fit_compute_optimal(dev, engine, methods, args, out, judge, t_vote)
            ev.evaluate(test, [engine], [method], [args.n], results, judge,
                        lambda e, spec=spec: build_reward(spec, task="arith", engine=e),
                        lambda m, t=temperature, s=settings: ev.build_config(m, t, args.max_tokens, 0, s))
    finally:
        engine.close()
    summary = report.summarize(report.read_rows(results))
    order = {m: i for i, m in enumerate(methods)}
    summary.sort(key=lambda s: (order.get(s["method"], 99), s["budget"]))
    print()
    print(report.format_table(summary))
    meta = {"checkpoint": args.checkpoint, "n": args.n, "voting_temperature": t_vote, "dev_majority": dev_scores,
            "bon_temperature": args.bon_temperature, "test_problems": len(test), "summary": summary,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(meta, indent=1))
    png = report.plot(summary, out / "accuracy_vs_tokens.png",
                      title=f"tiny arithmetic policy, {len(test)} test problems")
    print(f"\nresults: {results}\nplot: {png}\ntotal wall time: {meta['wall_seconds']} s")
    return 0
