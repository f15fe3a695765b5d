"""Weighted majority: sample N responses and sum the reward per canonical answer; the largest sum wins."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchConfig, SearchResult
from twinloop.infer.search.majority import elect

Config = SearchConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "outcome"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: SearchConfig | None = None) -> list[SearchResult]:
    """Responses without an answer or without a score (unparseable, or beyond the RM-call cap) do not vote."""
    if reward is None:
        raise ValueError("weighted_majority needs a reward to weight the votes")
    return elect(problems, engine, reward, budget, config, weighted=True, method="weighted_majority")
