"""Particle filtering over reasoning steps, shared by PF (arXiv 2502.01618) and ePF (arXiv 2510.05825).

Per problem, N particles:
1. extend each live (unfinished) particle by one step (all particles of all problems in one engine call);
2. logw = logit(PRM(prefix)) clipped at 1e-7 (optionally modulated by a one-step look-ahead);
3. resample the live particles among themselves from softmax(logw / T), multinomial or systematic.
   Finished particles keep their slot and weight and take no part: they are never copied, dropped or
   revived (the rule of the PF paper's implementation), so the live population shrinks as particles finish;
4. stop when every particle has finished, without resampling again; answer with the untempered argmax
   over all N, so the best finished particle is always seen.
The trace is the genealogy: per round, each slot's ancestor index (a finished slot is its own ancestor),
the live slots, the weights and T.
"""
from __future__ import annotations

import random
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
from twinloop.infer.search._resampling import (
    epf_temperature,
    logit_weight,
    multinomial_resample,
    softmax,
    systematic_resample,
)


@dataclass
class ParticleConfig(SearchConfig):
    resampling: str = "multinomial"  # multinomial / systematic
    resample_temperature: float = 1.0  # base T of softmax(logw / T)
    anneal: str = "none"  # ePF annealing rule on top of the base T: none / ess / entropy
    lookahead: str = "none"  # ePF look-ahead modulation: none / replace / mean  ([check], see modulate)
    select: str = "best"  # final selection over the last population: best / majority / weighted_majority
    final_aggregation: str = "last"


def modulate(logw_now: float, logw_ahead: float, how: str) -> float:
    """Weight of a particle given its look-ahead successor's weight. The exact formula is [check]:
    ``replace`` uses the successor's logit; ``mean`` averages the two logits; ``none`` ignores it."""
    if how == "none":
        return logw_now
    if how == "replace":
        return logw_ahead
    if how == "mean":
        return 0.5 * (logw_now + logw_ahead)
    raise ValueError(f"unknown look-ahead modulation {how!r}; choose from none, replace, mean")


def resample(weights: Sequence[float], n: int, how: str, rng: random.Random) -> list[int]:
    if how == "multinomial":
        return multinomial_resample(weights, [rng.random() for _ in range(n)])
    if how == "systematic":
        return systematic_resample(weights, n, rng.random())
    raise ValueError(f"unknown resampling {how!r}; choose from multinomial, systematic")


def _lookahead_logw(tracker: Tracker, engine: Engine, prm: Any, config: ParticleConfig,
                    particles: Sequence[P.SearchPath]) -> dict[int, float]:
    """logit(PRM) of one sampled successor step per active particle (one engine and one PRM call)."""
    live = [p for p in particles if p.active]
    pairs = [(p, kids[0]) for p, kids in zip(live, P.extend(tracker, engine, config, live, 1)) if kids]
    P.score(prm, tracker, engine, [q for _, q in pairs])
    return {id(p): logit_weight(q.value(config.aggregation)) for p, q in pairs if q.step_scores}


def _resample_live(pop: list[P.SearchPath], ahead: dict[int, float], t: int, config: ParticleConfig,
                   rng: random.Random) -> tuple[list[P.SearchPath], dict[str, Any]]:
    """One resampling of the live particles among themselves; finished slots stay as they are."""
    logw = [logit_weight(p.value(config.aggregation)) for p in pop]
    logw = [modulate(w, ahead[id(p)], config.lookahead) if id(p) in ahead else w for w, p in zip(logw, pop)]
    slots = [i for i, p in enumerate(pop) if p.active]
    live_logw = [logw[i] for i in slots]
    temp = config.resample_temperature * epf_temperature(live_logw, t, config.max_steps, config.anneal)
    picked = resample(softmax(live_logw, temp), len(slots), config.resampling, rng)
    ancestors = list(range(len(pop)))
    for slot, j in zip(slots, picked):
        ancestors[slot] = slots[j]
    new = [P.clone(pop[a]) if pop[i].active else pop[i] for i, a in enumerate(ancestors)]
    return new, {"t": t, "ancestors": ancestors, "live": slots, "logw": logw, "temperature": temp,
                 "nodes": [pop[a].node for a in ancestors]}


def search(problems: Sequence[Problem], engine: Engine, prm: Any, budget: Budget, config: ParticleConfig,
           method: str) -> list[SearchResult]:
    if prm is None or not hasattr(prm, "step_scores"):
        raise ValueError(f"{method} needs a process reward (an object with step_scores)")
    n = budget.n
    rng = random.Random(config.seed if config.seed is not None else 0)
    tracker, forest = Tracker(problems, budget), P.Forest(len(problems))
    first = P.extend(tracker, engine, config, [P.root(i) for i in range(len(problems))], n, forest=forest)
    pops = [list(kids) for kids in first]
    P.score(prm, tracker, engine, [p for pop in pops for p in pop], config.aggregation, forest)
    genealogy: list[list[dict[str, Any]]] = [[] for _ in problems]
    live = [True] * len(problems)
    exhausted = [False] * len(problems)
    t = 0
    while True:
        for pi in range(len(problems)):
            if live[pi] and not any(p.active for p in pops[pi]):
                live[pi] = False  # every particle finished: no resampling, the final pick sees them all
            elif live[pi] and tracker.exhausted(pi):
                live[pi], exhausted[pi] = False, True
        todo = [pi for pi in range(len(problems)) if live[pi]]
        if not todo:
            break
        ahead = (_lookahead_logw(tracker, engine, prm, config, [p for pi in todo for p in pops[pi]])
                 if config.lookahead != "none" else {})
        for pi in todo:
            pops[pi], record = _resample_live(pops[pi], ahead, t, config, rng)
            genealogy[pi].append(record)
        movers = [p for pi in todo for p in pops[pi] if p.active]
        kids = iter(P.extend(tracker, engine, config, movers, 1, forest=forest))
        for pi in todo:  # a particle the caps left without a child this round stays where it is
            pops[pi] = [(next(kids) or [p])[0] if p.active else p for p in pops[pi]]
        P.score(prm, tracker, engine, [p for pi in todo for p in pops[pi] if p.steps], config.aggregation, forest)
        t += 1

    usage = tracker.finish()
    out = []
    for pi, p in enumerate(problems):
        exhausted[pi] = exhausted[pi] or tracker.capped[pi]
        final = [q for q in pops[pi] if not q.active] or pops[pi]
        cands = [q.candidate(config, config.final_aggregation) for q in final]
        sel, answer = select_final(cands, config.select)
        out.append(make_result(method, p, cands, sel, usage[pi], "budget" if exhausted[pi] else "all_finished",
                               exhausted[pi], trace=[{"tree": forest.nodes[pi], "genealogy": genealogy[pi]}],
                               answer=answer))
    return out
