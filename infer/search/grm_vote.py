"""GRM voting@k as a selector (SPCT, arXiv 2504.02495, Eq. 14): sample N responses, let the generative RM
judge them together k times (shuffled order, scores un-permuted), sum the scores S*_i and answer with the
argmax (first on ties). ``grm_meta_vote`` sums only the judgments a meta RM rates highest. Under an
RM-call cap a problem gets only the judgments the cap allows (each costs one call, two when meta-guided)."""
from __future__ import annotations

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
from twinloop.rewards.generative import format_grm_prompt, meta_guided_vote, vote

NEEDS_REWARD = "grm"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class GRMVoteConfig(SearchConfig):
    k: int = 4  # judgments per problem
    k_meta: int | None = None  # meta-guided: judgments kept (None: the GRM's k_meta, else k/2 [check])


Config = GRMVoteConfig  # the config class twinloop eval builds for this procedure


def select(problems: Sequence[Problem], engine: Engine, grm: Any, budget: Budget | None, config: GRMVoteConfig | None,
           meta: bool, method: str) -> list[SearchResult]:
    budget, config = budget or Budget(), config or GRMVoteConfig()
    if grm is None or not hasattr(grm, "judge_many"):
        raise ValueError(f"{method} needs a generative RM (an object with judge_many, e.g. GenerativeReward)")
    meta_rm = getattr(grm, "meta_rm", None)
    if meta and meta_rm is None:
        raise ValueError(f"{method} needs a GenerativeReward built with meta_rm=...")
    tracker, drawn = draw(problems, engine, budget, config, n=budget.n)
    queries = [message_text(reward_prompt(p, engine)) for p in problems]
    per_judgment = 2 if meta else 1  # one GRM call, and one meta-RM call when meta-guided
    ks = {}  # judgments per problem, as many as its RM-call cap allows (a cap is never exceeded)
    for pi, d in enumerate(drawn):
        left = tracker.rm_calls_left(pi)
        ks[pi] = config.k if left is None else min(config.k, left // per_judgment)
        if ks[pi] < config.k and d.candidates:
            d.budget_exhausted = True
    live = [pi for pi, d in enumerate(drawn) if d.candidates and ks[pi] > 0]
    judged = {}
    for k in sorted({ks[pi] for pi in live}):  # one GRM call per distinct k (one call when no cap bites)
        group = [pi for pi in live if ks[pi] == k]
        items = [(queries[pi], [c.text for c in drawn[pi].candidates]) for pi in group]
        owners = [pi for pi in group for _ in range(k)]
        got = tracker.charge_reward(grm, owners, lambda items=items, k=k: grm.judge_many(items, k=k))
        judged.update(zip(group, got))
    metas: dict[int, list[float]] = {pi: [] for pi in live}
    if meta and live:
        prompts, texts, owners = [], [], []
        for pi in live:
            responses = [c.text for c in drawn[pi].candidates]
            for j in judged[pi]:
                prompts.append(format_grm_prompt(queries[pi], [responses[i] for i in j.order],
                                                 binary=getattr(grm, "binary", False)))
                texts.append(j.text)
                owners.append(pi)
        raw = tracker.charge_reward(meta_rm, owners, lambda: meta_rm(prompts, texts))
        for pi, s in zip(owners, raw):
            metas[pi].append(float("-inf") if s is None else float(s))
    k_meta = config.k_meta if config.k_meta is not None else getattr(grm, "k_meta", None)
    totals: dict[int, list[int] | None] = {}
    trace: dict[int, list[dict[str, Any]]] = {}
    for pi in live:
        lists = [j.scores for j in judged[pi]]
        totals[pi] = meta_guided_vote(lists, metas[pi], k_meta) if meta else vote(lists)
        trace[pi] = [{"scores": j.scores, "order": j.order, **({"meta": metas[pi][x]} if meta else {})}
                     for x, j in enumerate(judged[pi])]
    usage = tracker.finish()
    out = []
    for pi, (p, d) in enumerate(zip(problems, drawn)):
        t = totals.get(pi)
        if t is not None:
            for c, s in zip(d.candidates, t):
                c.score = float(s)
        sel = argbest(t) if t is not None else None
        out.append(make_result(method, p, d.candidates, sel, usage[pi], "budget" if d.budget_exhausted else "done",
                               d.budget_exhausted, trace=trace.get(pi, [])))
    return out


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: GRMVoteConfig | None = None) -> list[SearchResult]:
    """``reward`` is a ``GenerativeReward``; ``budget.n`` is N, ``config.k`` the number of judgments."""
    return select(problems, engine, reward, budget, config, meta=False, method="grm_vote")
