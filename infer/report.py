"""Reporting for `twinloop eval`: per (method, budget) summaries of the JSONL rows, the text table, the
tokens-to-reach comparison and the accuracy-vs-compute plot.

Compute is counted two ways: ``generated_tokens`` (the policy's own samples) and ``model_tokens``, the
policy's generated tokens plus the reward model's ``rm_tokens``. When the judge is a language model run
on the policy's own model (pairwise V1 verifier, SPCT GRM, self-evaluation probe), a method's real compute
is ``model_tokens``: the table always shows it, and the plot and tokens-to-reach use it (``x="model_tokens"``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

X_LABELS = {"generated_tokens": "generated tokens per problem (mean)",
            "model_tokens": "model tokens per problem, policy + judge (mean)"}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a results JSONL; torn or foreign lines are skipped."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, budget): problems, accuracy, mean generated / judge / total model tokens, mean RM calls,
    wall seconds, and the fraction of problems that ran out of budget."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], int(r["budget"]))].append(r)
    out = []
    for (method, n), rs in sorted(groups.items()):
        k = len(rs)
        gen = sum(r["generated_tokens"] for r in rs) / k
        rm_tokens = sum(r.get("rm_tokens", 0) for r in rs) / k
        out.append({"method": method, "budget": n, "problems": k, "accuracy": sum(r["correct"] for r in rs) / k,
                    "generated_tokens": gen, "rm_tokens": rm_tokens, "model_tokens": gen + rm_tokens,
                    "rm_calls": sum(r["rm_calls"] for r in rs) / k,
                    "wall_seconds": sum(r["wall_seconds"] for r in rs),
                    "exhausted": sum(bool(r["budget_exhausted"]) for r in rs) / k})
    return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a text table (generated tokens, judge tokens and their sum, the total model tokens);
    with greedy in the run, a column of accuracy gained over it."""
    greedy = next((s["accuracy"] for s in summary if s["method"] == "greedy"), None)
    head = (f"{'method':<18} {'N':>4} {'probs':>5} {'accuracy':>8} {'gen tok':>9} {'RM tok':>9} {'model tok':>9} "
            f"{'RM calls':>8} {'wall s':>8}")
    head += f" {'vs greedy':>9}" if greedy is not None else ""
    lines = [head, "-" * len(head)]
    for s in summary:
        rm_tokens = s.get("rm_tokens", 0.0)
        model = s.get("model_tokens", s["generated_tokens"] + rm_tokens)
        line = (f"{s['method']:<18} {s['budget']:>4} {s['problems']:>5} {s['accuracy']:>8.3f} "
                f"{s['generated_tokens']:>9.1f} {rm_tokens:>9.1f} {model:>9.1f} {s['rm_calls']:>8.1f} "
                f"{s['wall_seconds']:>8.1f}")
        lines.append(line + (f" {s['accuracy'] - greedy:>+9.3f}" if greedy is not None else ""))
    return "\n".join(lines)


def tokens_to_reach(summary: Sequence[dict[str, Any]], method: str = "best_of_n", budget: int = 32,
                    x: str = "generated_tokens") -> dict[str, Any]:
    """Per method, the fewest mean tokens (``x``: generated_tokens or model_tokens) at which its accuracy
    reaches ``method@budget``'s (None when no budget of it does), and that as a fraction of the reference's."""
    ref = next((s for s in summary if s["method"] == method and s["budget"] == budget), None)
    if ref is None:
        return {}
    out: dict[str, Any] = {"reference": f"{method}@{budget}", "accuracy": ref["accuracy"], "x": x,
                           "generated_tokens": ref[x], "methods": {}}
    for name in sorted({s["method"] for s in summary}):
        hits = [s for s in summary if s["method"] == name and s["accuracy"] >= ref["accuracy"] - 1e-12]
        best = min(hits, key=lambda s: s[x]) if hits else None
        out["methods"][name] = None if best is None else {
            "budget": best["budget"], "generated_tokens": best[x],
            "fraction": best[x] / ref[x] if ref[x] else None}
    return out


def format_reach(reach: dict[str, Any]) -> str:
    if not reach:
        return ""
    unit = "model tokens" if reach.get("x") == "model_tokens" else "tokens"
    title = (f"{unit} to reach {reach['reference']} accuracy {reach['accuracy']:.3f} "
             f"({reach['generated_tokens']:.1f} {unit}):")
    lines = [title]
    for name, hit in reach["methods"].items():
        lines.append(f"  {name:<18} " + ("never" if hit is None else
                                         f"N={hit['budget']:<4} {hit['generated_tokens']:>9.1f} {unit} "
                                         f"({hit['fraction']:.2f}x)"))
    return "\n".join(lines)


def plot(summary: Sequence[dict[str, Any]], path: Path, title: str = "", x: str = "generated_tokens") -> Path:
    """Accuracy against mean tokens per problem (``x``: generated_tokens, or model_tokens when a judge runs
    on the policy's model), one line per method, points labelled by N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_LABELS:
        raise ValueError(f"plot x must be one of {sorted(X_LABELS)}, got {x!r}")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by_method[s["method"]].append(s)
    for method, pts in sorted(by_method.items()):
        pts = sorted(pts, key=lambda s: s[x])
        xs, ys = [p[x] for p in pts], [p["accuracy"] for p in pts]
        ax.plot(xs, ys, marker="o", label=method)
        for p in pts:
            ax.annotate(str(p["budget"]), (p[x], p["accuracy"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"accuracy vs {X_LABELS[x].split(' per ')[0]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(rows: Sequence[dict[str, Any]], out: Path, title: str, lm_judge: bool, reference: tuple[str, int],
           draw: bool = True) -> list[dict[str, Any]]:
    """Print the table (and tokens-to-reach ``reference``), write summary.json and the plot; the compute
    axis is model tokens when ``lm_judge`` (a judge on the policy's model), else generated tokens."""
    summary = summarize(rows)
    x = "model_tokens" if lm_judge else "generated_tokens"
    print(format_table(summary))
    reach = tokens_to_reach(summary, reference[0], reference[1], x=x)
    if reach:
        print(format_reach(reach))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if draw and summary:
        print(f"plot: {plot(summary, out / 'accuracy_vs_tokens.png', title=title, x=x)}")
    return summary
