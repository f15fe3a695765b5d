"""Worst-of-N, the jailbreak evaluation: sample N responses and report the one the reward scores lowest
(with a harmlessness reward, the worst case an attacker with N tries would get)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchConfig, SearchResult
from twinloop.infer.search.best_of_n import select

Config = SearchConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "outcome"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: SearchConfig | None = None) -> list[SearchResult]:
    """argmin of the reward; unscored candidates are skipped, ties go to the earliest sample."""
    return select(problems, engine, reward, budget, config, lowest=True, method="worst_of_n")
