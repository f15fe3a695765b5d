"""Step-level tree search with a PRM, shared by beam search and DVTS.

Both start from N first steps per problem. Each group of a problem keeps its ``keep`` best active
children and expands each M ways; the PRM scores every new prefix. Beam search is one group keeping
N/M; DVTS is N/M groups (independent subtrees) keeping one. Optional k-step lookahead ranks a child by
the PRM score of a greedy k-step rollout (its tokens and PRM calls are accounted; the rollout is
discarded). Ranking uses ``aggregation``; the final pick uses ``select`` over ``final_aggregation``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search import _paths as P
from twinloop.infer.search._common import (
    Budget,
    Problem,
    SearchConfig,
    SearchResult,
    Tracker,
    make_result,
    select_final,
)


@dataclass
class TreeConfig(SearchConfig):
    width: int = 4  # M: children per kept node
    lookahead: int = 0  # k greedy rollout steps used for ranking (0: rank by the child's own score)
    select: str = "best"  # final selection: best / majority / weighted_majority
    final_aggregation: str = "last"  # step aggregation for the final pick; "last" is [check] (HF search-and-learn)


@dataclass
class Group:
    keep: int
    parents: list[P.SearchPath] = field(default_factory=list)
    done: list[P.SearchPath] = field(default_factory=list)
    closed: bool = False
    last_children: list[P.SearchPath] = field(default_factory=list)


def _rank(tracker: Tracker, engine: Engine, prm: Any, config: TreeConfig,
          kids: Sequence[P.SearchPath]) -> dict[int, float]:
    """Ranking score per child (keyed by id): own aggregated score, or a k-step greedy rollout's."""
    rank = {id(k): k.value(config.aggregation) for k in kids}
    if config.lookahead <= 0:
        return rank
    live = [k for k in kids if k.active]
    tips = {id(k): k for k in live}
    for _ in range(config.lookahead):
        moving = [k for k in live if tips[id(k)].active]
        if not moving:
            break
        moved = []
        for k, nxt in zip(moving, P.extend(tracker, engine, config, [tips[id(k)] for k in moving], 1, 0.0)):
            if nxt:  # the caps may leave a rollout without its next step: it is ranked where it stands
                tips[id(k)] = nxt[0]
                moved.append(k)
        P.score(prm, tracker, engine, [tips[id(k)] for k in moved])
    for k in live:
        rank[id(k)] = tips[id(k)].value(config.aggregation)
    return rank


def search(problems: Sequence[Problem], engine: Engine, prm: Any, budget: Budget, config: TreeConfig,
           method: str, subtrees: bool) -> list[SearchResult]:
    if prm is None or not hasattr(prm, "step_scores"):
        raise ValueError(f"{method} needs a process reward (an object with step_scores)")
    n = budget.n
    m = max(1, min(config.width, n))
    n_groups = max(1, n // m) if subtrees else 1
    keep = 1 if subtrees else max(1, n // m)
    tracker, forest = Tracker(problems, budget), P.Forest(len(problems))
    groups = [[Group(keep) for _ in range(n_groups)] for _ in problems]
    exhausted = [False] * len(problems)

    first = P.extend(tracker, engine, config, [P.root(i) for i in range(len(problems))], n, forest=forest)
    P.score(prm, tracker, engine, [k for kids in first for k in kids], config.aggregation, forest)
    pending: list[tuple[Group, list[P.SearchPath]]] = []
    for pi, kids in enumerate(first):
        for j, k in enumerate(kids):
            g = groups[pi][min(j // m, n_groups - 1)] if subtrees else groups[pi][0]
            g.last_children.append(k)
        pending += [(g, g.last_children) for g in groups[pi]]

    while pending:
        rank = _rank(tracker, engine, prm, config, [k for _, kids in pending for k in kids])
        for g, kids in pending:
            if not kids and g.parents:  # the caps gave this group no child this round: it stops as it stands
                g.closed = True
                continue
            ordered = sorted(kids, key=lambda k: -rank[id(k)])  # stable: ties keep sampling order
            if subtrees:
                best = ordered[0] if ordered else None
                if best is None or not best.active:
                    g.done += [best] if best else []
                    g.closed, g.parents = True, []
                else:
                    g.parents = [best]
            else:
                g.done += [k for k in kids if not k.active]
                g.parents = [k for k in ordered if k.active][: g.keep]
                g.closed = not g.parents or len(g.done) >= n
        for pi in range(len(problems)):
            if tracker.exhausted(pi) and any(not g.closed for g in groups[pi]):
                exhausted[pi] = True
                for g in groups[pi]:
                    g.closed = True
        live = [g for gs in groups for g in gs if not g.closed]
        parents = [p for g in live for p in g.parents]
        kids = P.extend(tracker, engine, config, parents, m, forest=forest)
        P.score(prm, tracker, engine, [k for ks in kids for k in ks], config.aggregation, forest)
        pending, it = [], iter(kids)
        for g in live:
            g.last_children = [k for _ in g.parents for k in next(it)]
            pending.append((g, g.last_children))

    usage = tracker.finish()
    out = []
    for pi, p in enumerate(problems):
        exhausted[pi] = exhausted[pi] or tracker.capped[pi]
        finals = [k for g in groups[pi] for k in g.done]
        if exhausted[pi] and not finals:  # out of budget before any finished: best partial so far
            finals = [k for g in groups[pi] for k in g.parents]
        cands = [k.candidate(config, config.final_aggregation) for k in finals]
        sel, answer = select_final(cands, config.select)
        out.append(make_result(method, p, cands, sel, usage[pi], "budget" if exhausted[pi] else "done",
                               exhausted[pi], trace=forest.nodes[pi], answer=answer))
    return out
