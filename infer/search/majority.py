"""Majority vote (self-consistency): sample N responses, extract answers, the most frequent answer wins."""
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


NEEDS_REWARD = None  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def elect(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None,
          config: SearchConfig | None, *, weighted: bool, method: str) -> list[SearchResult]:
    """Sample N, then vote over canonical answers: one vote each, or (``weighted``) each response's reward as its
    vote. Responses without an answer, or without a score when weighted, do not vote; ties go to the answer
    seen first. Unweighted, the reward (if given) only records scores."""
    budget, config = budget or Budget(), config or SearchConfig()
    tracker, drawn = draw(problems, engine, budget, config, n=budget.n)
    if reward is not None and (weighted or config.score_candidates):
        score(reward, tracker, engine, drawn)
    usage = tracker.finish()
    out = []
    for i, (p, d) in enumerate(zip(problems, drawn)):
        weights = [c.score for c in d.candidates] if weighted else None
        winner, tally = vote([c.answer for c in d.candidates], weights)
        out.append(make_result(method, p, d.candidates, first_with_answer(d.candidates, winner), usage[i],
                               "budget" if d.budget_exhausted else "done", d.budget_exhausted,
                               trace=[{"tally": tally}], answer=winner))
    return out


def run(problems: Sequence[Problem], engine: Engine, reward: Any = None, budget: Budget | None = None,
        config: SearchConfig | None = None) -> list[SearchResult]:
    """Mode of the extracted answers (``config.answer_fn``); responses without an answer do not vote and
    ties go to the answer seen first. The reward, if given, only records scores."""
    return elect(problems, engine, reward, budget, config, weighted=False, method="majority")
