"""Weighted majority: sample N responses and sum the reward per canonical answer; the largest sum wins."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import (
    Budget,
    Problem,
    SearchConfig,
    SearchResult,
    first_with_answer,
    make_result,
    vote,
)
from twinloop.infer.search._sampling import draw, score

Config = SearchConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "outcome"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: SearchConfig | None = None) -> list[SearchResult]:
    """Responses without an answer or without a score (unparseable, or beyond the RM-call cap) do not vote."""
    if reward is None:
        raise ValueError("weighted_majority needs a reward to weight the votes")
    budget, config = budget or Budget(), config or SearchConfig()
    tracker, drawn = draw(problems, engine, budget, config, n=budget.n)
    score(reward, tracker, engine, drawn)
    usage = tracker.finish()
    out = []
    for i, (p, d) in enumerate(zip(problems, drawn)):
        winner, tally = vote([c.answer for c in d.candidates], [c.score for c in d.candidates])
        out.append(make_result("weighted_majority", p, d.candidates, first_with_answer(d.candidates, winner),
                               usage[i], "budget" if d.budget_exhausted else "done", d.budget_exhausted,
                               trace=[{"tally": tally}], answer=winner))
    return out
