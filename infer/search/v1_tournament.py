"""V1-Infer tournament (arXiv 2603.04304): N candidates, a pairwise verifier judges pairs, μ scores rank.

1. Coverage: random disjoint couples; then, while some candidate has degree < d_min, pair it with the
   unseen peer closest in μ.
2. Swiss refinement: sort by μ and pair neighbours within window h, preferring unseen pairs and
   near-ties, until the comparison budget B·N is spent (coverage comparisons count towards it).
Answer: argmax μ, with μ_i = Σ_j w_ij·v_ij / Σ_j w_ij (``twinloop.rewards.pairwise.mu_scores``).

Every round judges the pairs of all problems in one verifier call; pairs never cross problems. An
unparseable verdict spends its comparison but adds no information to μ. Pairs go through the verifier's
``rate_pairs``: with its ``both_orders`` each pair is judged as (A, B) and (B, A) (two verifier calls,
one comparison); otherwise the shown order is drawn at random (seeded by ``seed``) per pair.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import (
    Budget,
    Problem,
    SearchConfig,
    SearchResult,
    argbest,
    make_result,
    reward_prompt,
)
from twinloop.infer.search._sampling import draw
from twinloop.rewards.base import message_text
from twinloop.rewards.pairwise import mu_scores

NEEDS_REWARD = "pairwise"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class TournamentConfig(SearchConfig):
    comparisons_per_candidate: float = 2.0  # B: the budget is B·N comparisons (paper: 1, 2 or 3)
    d_min: int = 2
    window: int = 8  # h
    tau: float = 0.1
    temperature: float = 1.0  # V1 samples math at 1.0 (0.6 for code)


Config = TournamentConfig  # the config class twinloop eval builds for this procedure

Pair = tuple[int, int]


def coverage_pairs(n: int, rng: random.Random) -> list[Pair]:
    """Random disjoint couples covering all but (for odd n) one candidate."""
    order = list(range(n))
    rng.shuffle(order)
    return [(min(order[i], order[i + 1]), max(order[i], order[i + 1])) for i in range(0, n - 1, 2)]


def deficit_pairs(n: int, degree: Sequence[int], seen: set[Pair], mu: Sequence[float], d_min: int) -> list[Pair]:
    """One round: each candidate below ``d_min`` comparisons (fewest first, then lowest index) is paired with
    the unseen peer closest in μ that is still free this round, a peer itself below ``d_min`` first. Two
    candidates left over (their only free peer already seen) swap into a pair of the round. So B = 1, exactly
    N comparisons, brings every candidate to d_min = 2 instead of spending comparisons on covered peers."""
    def unseen(i: int, j: int) -> bool:
        return i != j and (min(i, j), max(i, j)) not in seen

    busy: set[int] = set()
    out: list[Pair] = []
    for i in sorted(range(n), key=lambda i: (degree[i], i)):
        if degree[i] >= d_min or i in busy:
            continue
        peers = [j for j in range(n) if j not in busy and unseen(i, j)]
        if not peers:
            continue
        j = min(peers, key=lambda j: (degree[j] >= d_min, abs(mu[i] - mu[j]), j))
        out.append((min(i, j), max(i, j)))
        busy |= {i, j}
    left = [i for i in range(n) if degree[i] < d_min and i not in busy]
    while len(left) >= 2:
        u, v = left[0], left[1]
        swap = next(((k, a, b) for k, (x, y) in enumerate(out) for a, b in ((x, y), (y, x))
                     if unseen(u, a) and unseen(v, b)), None)
        if swap is None:
            break
        k, a, b = swap
        out[k:k + 1] = [(min(u, a), max(u, a)), (min(v, b), max(v, b))]
        left = left[2:]
    return out


def swiss_pairs(mu: Sequence[float], seen: set[Pair], window: int, limit: int) -> list[Pair]:
    """One Swiss round: walk candidates by μ (high first) and pair each free one with a free neighbour
    within ``window`` places, preferring unseen pairs, then the nearest tie. At most ``limit`` pairs."""
    order = sorted(range(len(mu)), key=lambda i: (-mu[i], i))
    busy: set[int] = set()
    out = []
    for pos, i in enumerate(order):
        if len(out) >= limit:
            break
        if i in busy:
            continue
        near = [j for j in order[pos + 1: pos + 1 + window] if j not in busy]
        if not near:
            continue
        j = min(near, key=lambda j: ((min(i, j), max(i, j)) in seen, abs(mu[i] - mu[j]), order.index(j)))
        out.append((min(i, j), max(i, j)))
        busy |= {i, j}
    return out


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: TournamentConfig | None = None) -> list[SearchResult]:
    """``reward`` is a pairwise verifier with ``rate_pairs(items, swap)`` and ``presentations``
    (``twinloop.rewards.pairwise.PairwiseVerifier``); ``budget.n`` is N."""
    budget, config = budget or Budget(), config or TournamentConfig()
    if reward is None or not hasattr(reward, "rate_pairs"):
        raise ValueError("v1_tournament needs a pairwise verifier (an object with rate_pairs, e.g. PairwiseVerifier)")
    per_pair = int(getattr(reward, "presentations", 1))  # verifier calls per comparison
    rng = random.Random(config.seed if config.seed is not None else 0)
    tracker, drawn = draw(problems, engine, budget, config, n=budget.n)
    sizes = [len(d.candidates) for d in drawn]
    allowance = [round(config.comparisons_per_candidate * k) for k in sizes]
    comps: list[list[tuple[int, int, float, float]]] = [[] for _ in problems]
    seen: list[set[Pair]] = [set() for _ in problems]
    degree = [[0] * k for k in sizes]
    spent = [0] * len(problems)
    rm_bit = [False] * len(problems)  # the RM-call cap cut a round short
    rounds: list[list[dict[str, Any]]] = [[] for _ in problems]
    phase = ["coverage" if k >= 2 else "done" for k in sizes]
    texts = [[c.text for c in d.candidates] for d in drawn]
    prompts = [message_text(reward_prompt(p, engine)) for p in problems]

    while True:
        planned: list[tuple[int, Pair]] = []
        for pi, k in enumerate(sizes):
            left = allowance[pi] - spent[pi]
            if phase[pi] == "done" or left <= 0 or tracker.exhausted(pi):
                phase[pi] = "done"
                continue
            mu = mu_scores(k, comps[pi], config.tau)
            if phase[pi] == "coverage":
                pairs = coverage_pairs(k, rng)
                phase[pi] = "deficit"
            elif phase[pi] == "deficit":
                pairs = deficit_pairs(k, degree[pi], seen[pi], mu, config.d_min)
                if not pairs:
                    phase[pi] = "swiss"
                    pairs = swiss_pairs(mu, seen[pi], config.window, left)
            else:
                pairs = swiss_pairs(mu, seen[pi], config.window, left)
            rm_left = tracker.rm_calls_left(pi)
            room = min(left, rm_left // per_pair if rm_left is not None else left)
            rm_bit[pi] = rm_bit[pi] or room < min(left, len(pairs))
            pairs = pairs[:room]
            if not pairs:
                phase[pi] = "done"
            planned += [(pi, pr) for pr in pairs]
        if not planned:
            break
        items = [(prompts[pi], texts[pi][i], texts[pi][j]) for pi, (i, j) in planned]
        swap = [rng.random() < 0.5 for _ in planned] if per_pair == 1 else None
        owners = [pi for pi, _ in planned for _ in range(per_pair)]
        rated = tracker.charge_reward(reward, owners, lambda items=items, swap=swap: reward.rate_pairs(items, swap))
        for x, ((pi, (i, j)), ratings) in enumerate(zip(planned, rated)):
            spent[pi] += 1
            seen[pi].add((i, j))
            degree[pi][i] += 1
            degree[pi][j] += 1
            rounds[pi].append({"pair": [i, j], "ratings": [list(r) if r else None for r in ratings],
                               "swapped": bool(swap[x]) if swap is not None else None})
            comps[pi] += [(i, j, float(r[0]), float(r[1])) for r in ratings if r is not None]

    usage = tracker.finish()
    out = []
    for pi, (p, d) in enumerate(zip(problems, drawn)):
        mu = mu_scores(sizes[pi], comps[pi], config.tau)
        for c, m in zip(d.candidates, mu):
            c.score = m
        exhausted = d.budget_exhausted or ((tracker.exhausted(pi) or rm_bit[pi]) and spent[pi] < allowance[pi])
        out.append(make_result("v1_tournament", p, d.candidates, argbest(mu) if mu else None, usage[pi],
                               "budget" if exhausted else "done", exhausted,
                               trace=[{"comparisons": rounds[pi], "mu": mu}]))
    return out
