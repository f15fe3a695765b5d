"""Compute-optimal allocation (arXiv 2408.03314): bin prompts by difficulty, and per bin use the
procedure and budget that did best on held-out data.

Fitting (pure, on held-out rows written by ``twinloop eval``): ``fit_policy(rows, difficulty, n_bins)``
cuts the difficulty values into quantile bins and keeps, per bin, the accuracy and mean generated
tokens of every (method, budget). Difficulty is either the oracle one (1 - the problem's mean
correctness over all rows, ``oracle_difficulty``) or the predicted one (1 - the mean reward score of a
few samples, ``estimate_difficulty``); both are [check] choices of the paper's two options.

Running: each problem's difficulty is estimated the same way (or read from a ``difficulty`` column),
binned, and the problem is handed to the chosen procedure with the chosen budget, where the choice is
the most accurate (method, budget) of its bin among budgets ≤ N (ties: fewer tokens; an empty bin uses the
nearest fitted one). ``twinloop eval --methods compute_optimal`` fits the policy on the dev split with
difficulty predicted from the model's own samples (``twinloop.infer.co_fit``). Problems that
chose the same (method, budget) run together in one call. Usage adds the probe's and the procedure's;
the budget caps apply to the chosen procedure (the probe's spend is accounted, not charged to them).
"""
from __future__ import annotations

import bisect
import importlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchConfig, SearchResult, SearchUsage
from twinloop.infer.search._sampling import draw, score

NEEDS_REWARD = "process"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class ComputeOptimalConfig(SearchConfig):
    policy: Any = None  # a fitted policy dict, or the path of its JSON file
    probe_n: int = 4  # samples used to predict difficulty
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method config overrides
    menu: list[str] | None = None  # procedures `twinloop eval` fits on dev (None: the run's other methods)
    n_bins: int = 4  # difficulty bins of the fitted policy ([check]: the paper uses 5 on MATH)


Config = ComputeOptimalConfig  # the config class twinloop eval builds for this procedure


def quantile_edges(values: Sequence[float], n_bins: int) -> list[float]:
    """n_bins - 1 interior edges at the empirical quantiles (lower value of each cut)."""
    xs = sorted(values)
    if not xs or n_bins < 1:
        raise ValueError("quantile_edges needs values and n_bins >= 1")
    return [xs[min(len(xs) - 1, (len(xs) * b) // n_bins)] for b in range(1, n_bins)]


def bin_of(value: float, edges: Sequence[float]) -> int:
    """Bin index: values below the first edge are bin 0; a value equal to an edge goes to the upper bin."""
    return bisect.bisect_right(list(edges), value)


def oracle_difficulty(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """1 - the problem's mean correctness over every (method, budget) row."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        hits[str(r["problem_id"])].append(bool(r["correct"]))
    return {pid: 1.0 - sum(h) / len(h) for pid, h in hits.items()}


def fit_policy(rows: Sequence[dict[str, Any]], difficulty: dict[str, float], n_bins: int = 4,
               source: str = "predicted") -> dict[str, Any]:
    """Per difficulty bin: accuracy and mean generated tokens of every (method, budget) in ``rows``."""
    pids = sorted({str(r["problem_id"]) for r in rows if str(r["problem_id"]) in difficulty})
    if not pids:
        raise ValueError("fit_policy: no row has a difficulty value")
    edges = quantile_edges([difficulty[p] for p in pids], n_bins)
    cells: dict[int, dict[tuple[str, int], list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        pid = str(r["problem_id"])
        if pid in difficulty:
            cells[bin_of(difficulty[pid], edges)][(r["method"], int(r["budget"]))].append(r)
    table = []
    for b in range(n_bins):
        entries = []
        for (method, n), rs in sorted(cells[b].items()):
            entries.append({"method": method, "budget": n, "problems": len(rs),
                            "accuracy": sum(bool(r["correct"]) for r in rs) / len(rs),
                            "generated_tokens": sum(r["generated_tokens"] for r in rs) / len(rs)})
        table.append(entries)
    return {"difficulty": source, "edges": edges, "bins": table}


def choose(policy: dict[str, Any], bin_index: int, max_budget: int) -> tuple[str, int]:
    """The most accurate (method, budget) of the bin with budget <= max_budget (ties: fewer tokens, then name).
    A bin with no such entry (no dev problem fell in it) falls back to the nearest bin that has one (the
    easier one on a tie)."""
    bins = policy["bins"]
    for b in sorted(range(len(bins)), key=lambda b: (abs(b - bin_index), b)):
        entries = [e for e in bins[b] if e["budget"] <= max_budget]
        if entries:
            best = min(entries, key=lambda e: (-e["accuracy"], e["generated_tokens"], e["method"], e["budget"]))
            return best["method"], int(best["budget"])
    raise ValueError(f"the compute-optimal policy has no entry with budget <= {max_budget} in any bin")


def estimate_difficulty(problems: Sequence[Problem], engine: Engine, reward: Any, probe_n: int,
                        config: SearchConfig) -> tuple[list[float], list[SearchUsage]]:
    """1 - the mean reward of ``probe_n`` samples per problem (unscored samples count 0), with the usage."""
    tracker, drawn = draw(problems, engine, Budget(n=probe_n), config, n=probe_n)
    score(reward, tracker, engine, drawn)
    diffs = [1.0 - (sum(c.score or 0.0 for c in d.candidates) / len(d.candidates) if d.candidates else 0.0)
             for d in drawn]
    return diffs, tracker.finish()


def load_policy(policy: Any) -> dict[str, Any]:
    if isinstance(policy, dict):
        return policy
    if policy is None:
        raise ValueError("compute_optimal needs config.policy: a fitted policy (fit_policy) or its JSON path")
    path = Path(policy)
    if not path.is_file():
        raise FileNotFoundError(f"compute-optimal policy file {path} not found")
    return json.loads(path.read_text())


def _add(total: SearchUsage, part: SearchUsage) -> None:
    for f in fields(SearchUsage):
        setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: ComputeOptimalConfig | None = None) -> list[SearchResult]:
    """``reward`` predicts difficulty and is handed to the chosen procedures; ``budget.n`` caps the budgets."""
    budget, config = budget or Budget(), config or ComputeOptimalConfig()
    policy = load_policy(config.policy)
    given = [p.columns.get("difficulty") for p in problems]
    usage = [SearchUsage() for _ in problems]
    if all(d is not None for d in given):
        diffs = [float(d) for d in given]
    elif policy.get("difficulty") == "oracle":
        raise ValueError("an oracle-difficulty policy needs a 'difficulty' column on every problem")
    else:
        if reward is None:
            raise ValueError("compute_optimal needs a reward to predict difficulty")
        diffs, probe_usage = estimate_difficulty(problems, engine, reward, config.probe_n, config)
        for u, pu in zip(usage, probe_usage):
            _add(u, pu)
    choices = [choose(policy, bin_of(d, policy["edges"]), budget.n) for d in diffs]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for pi, c in enumerate(choices):
        groups[c].append(pi)
    out: list[SearchResult | None] = [None] * len(problems)
    for (method, n), idx in sorted(groups.items()):
        module = importlib.import_module(f"twinloop.infer.search.{method}")
        shared = {f.name: getattr(config, f.name) for f in fields(SearchConfig)}
        sub = module.Config(**shared | config.method_settings.get(method, {}))
        caps = Budget(n=n, generated_tokens=budget.generated_tokens, rm_calls=budget.rm_calls)
        for pi, res in zip(idx, module.run([problems[i] for i in idx], engine, reward, caps, sub)):
            _add(usage[pi], res.usage)
            res.usage, res.method = usage[pi], "compute_optimal"
            res.trace = [{"difficulty": diffs[pi], "bin": bin_of(diffs[pi], policy["edges"]),
                          "chose": [method, n]}] + list(res.trace)
            out[pi] = res
    return out  # type: ignore[return-value]
