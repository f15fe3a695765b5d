"""Search with the no-oracle recompute verifier against TOTAL model tokens (policy generated + verifier RM
tokens), from `twinloop eval` output folders; paired sign tests of best-of-8 against greedy and majority.

    python bench/recompute_table.py runs/rc-bon runs/rc-step runs/rc-exact ... --out docs/figures/arith-recompute

Writes OUT.md (table and sign tests), OUT.jsonl (one summary row per method, reward and N) and OUT.png.
RM tokens are the verifier's generated tokens plus its prompt tokens the prefix cache did not serve.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from twinloop.infer.paired import paired

NO_REWARD = {"greedy", "majority"}
STEP_LEVEL = ("beam_search", "particle_filter", "astar")


def load(folders: list[str]) -> dict[tuple[str, int], list[dict]]:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for folder in folders:
        reward = json.loads((Path(folder) / "settings.json").read_text()).get("reward")
        for line in (Path(folder) / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            label = r["method"] if r["method"] in NO_REWARD else f"{r['method']} [{reward}]"
            groups[(label, int(r["budget"]))].append(r)
    return groups


def summary(groups: dict[tuple[str, int], list[dict]]) -> list[dict]:
    out = []
    for (label, n), rows in sorted(groups.items()):
        k = len(rows)
        acc = sum(r["correct"] for r in rows) / k
        gen = sum(r["generated_tokens"] for r in rows) / k
        rm = sum(r["rm_tokens"] for r in rows) / k
        out.append({"method": label, "N": n, "problems": k, "accuracy": acc, "se": math.sqrt(acc * (1 - acc) / k),
                    "policy_tokens": gen, "rm_tokens": rm, "total_tokens": gen + rm})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| method [reward] | N | accuracy (± s.e.) | policy tokens | verifier tokens | total tokens |",
             "|---|---|---|---|---|---|"]
    for s in rows:
        lines.append(f"| {s['method']} | {s['N']} | {s['accuracy']:.3f} ± {s['se']:.3f} | {s['policy_tokens']:.0f} "
                     f"| {s['rm_tokens']:.0f} | {s['total_tokens']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    by: dict[str, list[dict]] = defaultdict(list)
    for s in rows:
        by[s["method"]].append(s)
    methods = sorted({label.split(" [")[0] for label in by})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    for label, pts in sorted(by.items()):
        pts.sort(key=lambda s: s["total_tokens"])
        reward = label.split(" [")[1] if " [" in label else ""
        style = ("--" if "arith_process" in reward else "-." if reward.startswith("recompute(")
                 else ":" if reward.startswith("operands") else (0, (1, 1)) if "/" in reward else "-")
        ax.plot([p["total_tokens"] for p in pts], [p["accuracy"] for p in pts], linestyle=style,
                marker="s" if "/" in reward else "o", label=label, color=colors[label.split(" [")[0]])
        for p in pts:
            ax.annotate(str(p["N"]), (p["total_tokens"], p["accuracy"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("total model tokens per problem (policy generated + verifier)")
    ax.set_ylabel("accuracy (200 test problems)")
    ax.set_title("tiny arithmetic policy, no-oracle verifiers\nsolid: recompute+operands, dash-dot: recompute, "
                 "dotted: operands,\ndashed: exact checker (oracle), squares on fine dots: a learned RM",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sign_tests(groups: dict[tuple[str, int], list[dict]], budgets: tuple[int, ...] = (4, 8)) -> list[str]:
    """Each best-of-N / weighted-majority row at N in ``budgets`` against greedy, majority at the same N and
    majority@16 (more policy tokens than any of them spends in total at N = 4)."""
    out = []
    greedy = groups.get(("greedy", 1))
    for (label, n), rows in sorted(groups.items()):
        if n not in budgets or label in NO_REWARD or not label.startswith(("best_of_n", "weighted_majority")):
            continue
        for other, ref in (("greedy", greedy), (f"majority@{n}", groups.get(("majority", n))),
                           ("majority@16", groups.get(("majority", 16)))):
            if ref:
                t = paired(rows, ref)
                out.append(f"- {label}@{n} vs {other}: +{t['wins']} / -{t['losses']} on {t['problems']} problems, "
                           f"sign test p = {t['p']:.3g}")
    return out


def step_vs_best_of_n(groups: dict[tuple[str, int], list[dict]]) -> list[str]:
    """Each step-level search row against its own reward's best-of-N: at the same N, and at equal or more
    total tokens (the cheapest best-of-N row that spends at least as many)."""
    totals = {key: sum(r["generated_tokens"] + r["rm_tokens"] for r in rows) / len(rows)
              for key, rows in groups.items()}
    out = []
    for (label, n), rows in sorted(groups.items()):
        if not label.startswith(STEP_LEVEL):
            continue
        bon = "best_of_n [" + label.split(" [", 1)[1]
        refs = [((bon, n), f"best_of_n@{n}")]
        richer = sorted((totals[k], k) for k in groups if k[0] == bon and totals[k] >= totals[(label, n)])
        if richer:
            refs.append((richer[0][1], f"best_of_n@{richer[0][1][1]} ({richer[0][0]:.0f} >= {totals[(label, n)]:.0f} "
                                       "total tokens)"))
        for key, name in refs:
            if key in groups:
                t = paired(rows, groups[key])
                out.append(f"- {label}@{n} vs its {name}: +{t['wins']} / -{t['losses']} on {t['problems']} problems, "
                           f"sign test p = {t['p']:.3g}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default="docs/figures/arith-recompute")
    args = ap.parse_args()
    groups = load(args.folders)
    rows = summary(groups)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (table(rows) + "\n\nPaired sign tests (test split):\n" + "\n".join(sign_tests(groups))
            + "\n\nStep-level search against its own best-of-N:\n" + "\n".join(step_vs_best_of_n(groups)) + "\n")
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".jsonl").write_text("".join(json.dumps(s) + "\n" for s in rows))
    plot(rows, out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
