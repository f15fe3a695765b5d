"""Learning curves of several runs on one plot: greedy held-out accuracy against step, from the ``curve.jsonl``
files ``python -m twinloop.train.learning_curve`` writes (one variant per file or per variant name).

    python bench/curve_compare.py "exact process reward=runs/gppo-exact/curve.jsonl" \
        "distilled PRM=runs/gppo-prm-distilled/curve.jsonl" --out docs/figures/gppo-distilled-prm-tiny-arith

Writes OUT.png, OUT.md (a step-by-run table) and OUT.jsonl (the points, labelled).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_runs(specs: list[str]) -> dict[str, list[dict]]:
    """``LABEL=PATH`` -> that file's rows, in step order (a variant's repeated step keeps its last row)."""
    runs = {}
    for spec in specs:
        label, eq, path = spec.partition("=")
        if not eq or not label:
            raise ValueError(f"expected LABEL=PATH/curve.jsonl, got {spec!r}")
        by_step = {}
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                by_step[row["step"]] = row
        runs[label] = [by_step[s] for s in sorted(by_step)]
    return runs


def markdown(runs: dict[str, list[dict]]) -> str:
    steps = sorted({r["step"] for rows in runs.values() for r in rows})
    lines = ["| run | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for label, rows in runs.items():
        acc = {r["step"]: r["greedy_acc"] for r in rows}
        lines.append(f"| {label} | " + " | ".join(f"{acc[s]:.3f}" if s in acc else "-" for s in steps) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (label, rows), style in zip(runs.items(), ("o-", "s--", "^-.", "d:")):
        ax.plot([r["step"] for r in rows], [r["greedy_acc"] for r in rows], style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("greedy accuracy, held-out test (200)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=PATH/curve.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="GPPO on the tiny arithmetic policy (recipes/arith/process.yaml)")
    args = ap.parse_args()
    runs = read_runs(args.runs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(runs)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".jsonl").write_text("".join(json.dumps({"run": k, **r}) + "\n" for k, rows in runs.items()
                                                 for r in rows))
    plot(runs, out.with_suffix(".png"), args.title)
    print(text)


if __name__ == "__main__":
    main()
