"""A*-decoding (arXiv 2505.13672): a global priority queue per problem over partial trajectories with
f = g + h, h = 1 - PRM(prefix). Each round pops the ``pops_per_round`` lowest-f active nodes of every
problem (one engine call for all problems), samples k next steps from each, scores them (one PRM call)
and pushes them. ``pops_per_round=None`` pops as many nodes as solutions are still sought (N // k at
first), one batched engine call over problems and pops per round; the default 1 keeps the strict A* order,
which on the tiny arithmetic policy reached higher accuracy with fewer tokens (0.69 vs 0.655 at N = 4,
0.76 vs 0.705 at N = 8; recipes/eval/arith-gains.yaml), at more rounds ([check]). A popped finished trajectory is
a solution; the search stops after ``max(1, N // k)`` solutions (the nominal-N mapping is [check]) and
answers with ``select`` over them. A popped prefix goes back into the queue with f +
``reinsert_penalty``·(times expanded), so a promising prefix whose samples all failed is sampled again
before worse ones ([check]); expansions per problem are capped at ``expansions_per_n``·N (reaching the
cap counts as running out of budget).

The exact g is [check] in ALGORITHMS.md; ``g`` picks it: ``mean_cost`` (default: mean of 1 - step
score over the path, so depth itself costs nothing), ``sum_cost``, ``depth`` (``g_weight`` per step) or
``zero`` (greedy best-first). Ties in f go to the deeper node, then to the earlier one.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
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

NEEDS_REWARD = "process"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class AStarConfig(SearchConfig):
    k: int = 2  # next steps sampled per popped node [check]
    g: str = "mean_cost"  # [check]: mean_cost / sum_cost / depth / zero
    g_weight: float = 1.0
    pops_per_round: int | None = 1  # active nodes expanded per problem per engine call; None: as many as solutions
    # are still sought (N // k at first). 1 measured better on the tiny arith policy (see the gains recipe)
    reinsert_penalty: float | None = 0.05  # [check] a popped prefix returns with f + penalty·expansions (None: never)
    expansions_per_n: int = 4  # cap on expansions per problem: expansions_per_n · N (the nominal budget)
    select: str = "best"
    final_aggregation: str = "last"


def path_cost(step_scores: Sequence[float], how: str, weight: float = 1.0) -> float:
    """g of a path from its step scores."""
    if how == "zero" or not step_scores:
        return 0.0
    costs = [1.0 - s for s in step_scores]
    if how == "mean_cost":
        return weight * sum(costs) / len(costs)
    if how == "sum_cost":
        return weight * sum(costs)
    if how == "depth":
        return weight * len(step_scores)
    raise ValueError(f"unknown A* cost g {how!r}; choose from mean_cost, sum_cost, depth, zero")


def priority(path: P.SearchPath, config: AStarConfig) -> float:
    """f = g + h with h = 1 - PRM(prefix) (the prefix's aggregated step score)."""
    return path_cost(path.step_scores, config.g, config.g_weight) + (1.0 - path.value(config.aggregation))


Config = AStarConfig  # the config class twinloop eval builds for this procedure


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: AStarConfig | None = None) -> list[SearchResult]:
    """``reward`` is a process reward; children per pop k = min(config.k, N)."""
    budget, config = budget or Budget(), config or AStarConfig()
    if reward is None or not hasattr(reward, "step_scores"):
        raise ValueError("astar needs a process reward (an object with step_scores)")
    k = max(1, min(config.k, budget.n))
    wanted = max(1, budget.n // k)
    tracker, forest = Tracker(problems, budget), P.Forest(len(problems))
    order = itertools.count()
    heaps: list[list[tuple[float, int, int, P.SearchPath]]] = [[(0.0, 0, next(order), P.root(i))]
                                                         for i in range(len(problems))]
    solutions: list[list[P.SearchPath]] = [[] for _ in problems]
    pops: list[list[dict[str, Any]]] = [[] for _ in problems]
    expanded: dict[int, int] = {}  # id(node) -> times expanded
    spent = [0] * len(problems)
    cap = max(1, config.expansions_per_n * budget.n)
    live, exhausted = [True] * len(problems), [False] * len(problems)

    while any(live):
        to_expand: list[P.SearchPath] = []
        for pi in range(len(problems)):
            taken = 0
            limit = config.pops_per_round or wanted - len(solutions[pi])  # default: as many as still sought
            while live[pi] and taken < limit:
                if not heaps[pi]:
                    live[pi] = taken > 0  # nodes taken this round may still push children
                    break
                f, _, _, node = heapq.heappop(heaps[pi])
                pops[pi].append({"node": node.node, "f": f})
                if node.active and spent[pi] >= cap:  # the nominal budget is spent: stop before expanding
                    heapq.heappush(heaps[pi], (f, -len(node.steps), next(order), node))
                    live[pi], exhausted[pi] = False, True
                    break
                if node.active:
                    to_expand.append(node)
                    taken += 1
                    spent[pi] += 1
                    continue
                solutions[pi].append(node)
                if len(solutions[pi]) >= wanted:
                    live[pi] = False
        kids = P.extend(tracker, engine, config, to_expand, k, forest=forest)
        flat = [c for cs in kids for c in cs]
        P.score(reward, tracker, engine, flat, config.aggregation, forest)
        for c in flat:
            heapq.heappush(heaps[c.problem], (priority(c, config), -len(c.steps), next(order), c))
        if config.reinsert_penalty is not None:  # a prefix may be sampled again later, at a growing cost
            for node in to_expand:
                times = expanded[id(node)] = expanded.get(id(node), 0) + 1
                f = priority(node, config) + config.reinsert_penalty * times
                heapq.heappush(heaps[node.problem], (f, -len(node.steps), next(order), node))
        for pi in range(len(problems)):
            if live[pi] and tracker.exhausted(pi):
                live[pi], exhausted[pi] = False, True

    usage = tracker.finish()
    out = []
    for pi, p in enumerate(problems):
        final = list(solutions[pi])
        if exhausted[pi]:  # best so far: solutions, then finished nodes still queued, then the best partial
            final += [n for _, _, _, n in sorted(heaps[pi], key=lambda e: e[:3]) if n.status == P.FINISHED]
            if not final and heaps[pi]:
                final = [min(heaps[pi], key=lambda e: e[:3])[3]]
        cands = [n.candidate(config, config.final_aggregation) for n in final]
        sel, answer = select_final(cands, config.select)
        out.append(make_result("astar", p, cands, sel, usage[pi], "budget" if exhausted[pi] else "done",
                               exhausted[pi], trace=[{"tree": forest.nodes[pi], "pops": pops[pi]}], answer=answer))
    return out
