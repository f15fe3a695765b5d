"""Shared part of the one-shot procedures (greedy, majority, weighted majority, best/worst-of-N):
draw N whole responses per problem (one engine call for all problems; in chunks under a token cap) and
score them with the outcome reward."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import (
    Budget,
    Candidate,
    Problem,
    SearchConfig,
    Tracker,
    candidate_finish,
    score_outcomes,
)


@dataclass
class Drawn:
    """The candidates of one problem, and whether the budget cut some of them."""

    candidates: list[Candidate] = field(default_factory=list)
    budget_exhausted: bool = False


def draw(problems: Sequence[Problem], engine: Engine, budget: Budget, config: SearchConfig, n: int,
         temperature: float | None = None) -> tuple[Tracker, list[Drawn]]:
    """N samples per problem, all problems in one engine call. Under a generated-token cap the samples come
    in chunks of as many as the tokens left allow at full ``max_tokens`` (once fewer than that are left,
    one sample with the room left), so the cap is never exceeded and no sample is drawn to be dropped; a
    problem that gets fewer than N, or a sample cut short by the cap, is marked budget-exhausted. Without
    a cap it is one call. Engine seeds move on by one per chunk."""
    tracker = Tracker(problems, budget)
    base = config.sampling(n=n, temperature=temperature)
    drawn = [Drawn() for _ in problems]
    need = [n] * len(problems)
    for chunk in range(n):  # every chunk draws at least one sample per problem still in it
        owned, sizes = [], []
        for pi, p in enumerate(problems):
            left = tracker.tokens_left(pi)
            if need[pi] == 0:
                continue
            if left == 0:
                continue
            owned.append((pi, p.request(config.lora)))
            sizes.append(need[pi] if left is None else min(need[pi], max(1, left // base.max_tokens)))
        if not owned:
            break
        sampling = base if base.seed is None else replace(base, seed=base.seed + chunk)
        for (pi, _), res in zip(owned, tracker.generate(engine, owned, sampling, n_each=sizes)):
            need[pi] -= len(res.completions)
            for c in res.completions:
                drawn[pi].candidates.append(Candidate(text=c.text, token_ids=list(c.token_ids), answer=config.answer_fn(
                    c.text), finish_reason=candidate_finish(c.finish_reason)))
    for pi, d in enumerate(drawn):
        d.budget_exhausted = d.budget_exhausted or tracker.capped[pi] or len(d.candidates) < n
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
