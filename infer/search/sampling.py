"""Shared part of the one-shot procedures (greedy, majority, weighted majority, best/worst-of-N):
draw N whole responses per problem in one engine call for all problems, cut them to the budget, and
score them with the outcome reward."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search.common import Budget, Candidate, Problem, SearchConfig, Tracker, score_outcomes


@dataclass
class Drawn:
    """The candidates of one problem, and whether the budget cut some of them."""

    candidates: list[Candidate] = field(default_factory=list)
    budget_exhausted: bool = False


def draw(problems: Sequence[Problem], engine: Engine, budget: Budget, config: SearchConfig, n: int,
         temperature: float | None = None) -> tuple[Tracker, list[Drawn]]:
    """N samples per problem. With a generated-token cap, candidates are kept in order while their
    running token total fits; later ones are dropped (their tokens are still accounted)."""
    tracker = Tracker(problems, budget)
    owned = [(i, p.request(config.lora)) for i, p in enumerate(problems)]
    results = tracker.generate(engine, owned, config.sampling(n=n, temperature=temperature))
    drawn = []
    for res in results:
        d, spent = Drawn(), 0
        for c in res.completions:
            spent += len(c.token_ids)
            if budget.generated_tokens is not None and spent > budget.generated_tokens:
                d.budget_exhausted = True
                break
            d.candidates.append(Candidate(text=c.text, token_ids=list(c.token_ids),
                                          finish_reason="length" if c.finish_reason == "length" else "stop",
                                          answer=config.answer_fn(c.text)))
        drawn.append(d)
    return tracker, drawn


def score(reward: Any, tracker: Tracker, engine: Engine, drawn: list[Drawn]) -> None:
    """Outcome scores for all problems in one reward call. With an RM-call cap, only the first
    ``rm_calls`` candidates of a problem are scored; the rest keep ``score=None`` and the problem is
    marked budget-exhausted."""
    items, where = [], []
    for pi, d in enumerate(drawn):
        left = tracker.rm_calls_left(pi)
        for ci, c in enumerate(d.candidates):
            if left is not None and ci >= left:
                d.budget_exhausted = True
                break
            items.append((pi, c.text))
            where.append((pi, ci))
    for (pi, ci), s in zip(where, score_outcomes(reward, tracker, engine, items)):
        drawn[pi].candidates[ci].score = s
