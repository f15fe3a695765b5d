"""Best-of-N: sample N responses and answer with the one the reward scores highest."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchConfig, SearchResult, argbest, make_result
from twinloop.infer.search._sampling import draw, score

Config = SearchConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "outcome"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def select(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None,
           config: SearchConfig | None, lowest: bool, method: str) -> list[SearchResult]:
    if reward is None:
        raise ValueError(f"{method} needs a reward to rank the candidates")
    budget, config = budget or Budget(), config or SearchConfig()
    tracker, drawn = draw(problems, engine, budget, config, n=budget.n)
    score(reward, tracker, engine, drawn)
    usage = tracker.finish()
    return [make_result(method, p, d.candidates, argbest([c.score for c in d.candidates], lowest=lowest), usage[i],
                        "budget" if d.budget_exhausted else "done", d.budget_exhausted)
            for i, (p, d) in enumerate(zip(problems, drawn))]


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: SearchConfig | None = None) -> list[SearchResult]:
    """argmax of the reward; unscored candidates are skipped, ties go to the earliest sample."""
    return select(problems, engine, reward, budget, config, lowest=False, method="best_of_n")
