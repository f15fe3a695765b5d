"""Fitting compute-optimal allocation for `twinloop eval` and `twinloop quickstart`: run the menu of
procedures on the dev split at the run's budgets, predict each dev problem's difficulty from the model's own
samples (1 - the mean reward of ``probe_n`` samples, the same estimate ``compute_optimal`` makes on test),
fit the per-bin choice and cache it beside the results as ``compute_optimal_policy.json``.

The cache is reused only when it was fitted on the same dev problems, menu, budgets, bins and probe size
(the settings guard of the results folder covers the rest: checkpoint, reward, temperature, seed, ...).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twinloop.infer.search._common import Problem

DEFAULT_MENU = ["greedy", "majority", "best_of_n", "beam_search", "particle_filter"]
POLICY_FILE = "compute_optimal_policy.json"


def menu_for(config: Any, methods: Sequence[str]) -> list[str]:
    """The procedures compute_optimal chooses among: its ``menu`` setting, else the run's other methods,
    else DEFAULT_MENU."""
    if config.menu:
        return list(config.menu)
    return [m for m in methods if m != "compute_optimal"] or list(DEFAULT_MENU)


def fit_on_dev(dev: Sequence[Problem], engines: Sequence[Any], methods: Sequence[str], budgets: Sequence[int],
               out: Path, judge: Callable[[Problem, str | None], bool], reward_for: Callable[[Any], Any],
               config_for: Callable[[Any], Any], batch: int = 32, caps: dict[str, Any] | None = None,
               progress: bool = True) -> Path:
    """The fitted policy's path (``out/compute_optimal_policy.json``), fitted now unless a matching one is
    cached. Dev rows go to ``out/dev/results.jsonl`` (resumable like the test rows)."""
    from twinloop.infer.evaluate import evaluate, load_procedure
    from twinloop.infer.report import read_rows
    from twinloop.infer.search import compute_optimal as co

    config = config_for(load_procedure("compute_optimal"))
    menu = menu_for(config, methods)
    for m in menu:
        if m == "compute_optimal":
            raise ValueError("compute_optimal cannot choose itself: remove it from its menu")
        load_procedure(m)
    key = {"dev": [p.id for p in dev], "menu": menu, "budgets": sorted(int(b) for b in budgets),
           "n_bins": config.n_bins, "probe_n": config.probe_n}
    path = out / POLICY_FILE
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("fit") == key:
            return path
    dev_rows_path = out / "dev" / "results.jsonl"
    evaluate(dev, engines, menu, budgets, dev_rows_path, judge, reward_for, config_for, batch=batch, caps=caps,
             progress=progress)
    reward = reward_for(engines[0])
    if reward is None:
        raise ValueError("compute_optimal predicts difficulty with the run's reward: give --reward")
    diffs, _ = co.estimate_difficulty(dev, engines[0], reward, config.probe_n, config)
    difficulty = {p.id: d for p, d in zip(dev, diffs)}
    ids = set(difficulty)
    rows = [r for r in read_rows(dev_rows_path) if r["method"] in menu and str(r["problem_id"]) in ids]
    policy = co.fit_policy(rows, difficulty, config.n_bins, source="predicted")
    policy["fit"] = key
    out.mkdir(parents=True, exist_ok=True)
    (out / "dev" / "difficulty.json").write_text(json.dumps(difficulty, indent=1))
    path.write_text(json.dumps(policy, indent=1))
    return path


def settings_for_menu(per_method: dict[str, dict[str, Any]], menu: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The run's per-method settings of the menu's procedures, so test-time choices run as they did on dev."""
    return {m: dict(per_method.get(m, {})) for m in menu}
