"""Greedy decoding: the single-sample baseline every procedure is compared with."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchConfig, SearchResult, make_result
from twinloop.infer.search._sampling import draw, score

Config = SearchConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = None  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = True  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any = None, budget: Budget | None = None,
        config: SearchConfig | None = None) -> list[SearchResult]:
    """One temperature-0 response per problem; the reward (optional) only records its score."""
    budget, config = budget or Budget(n=1), config or SearchConfig()
    tracker, drawn = draw(problems, engine, budget, config, n=1, temperature=0.0)
    if reward is not None and config.score_candidates:
        score(reward, tracker, engine, drawn)
    usage = tracker.finish()
    return [make_result("greedy", p, d.candidates, 0 if d.candidates else None, usage[i],
                        "budget" if d.budget_exhausted else "done", d.budget_exhausted)
            for i, (p, d) in enumerate(zip(problems, drawn))]
