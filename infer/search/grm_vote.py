"""GRM voting@k as a selector (SPCT, arXiv 2504.02495, Eq. 14): sample N responses, let the generative RM
judge them together k times (shuffled order, scores un-permuted), sum the scores S*_i and answer with the
argmax (first on ties). ``grm_meta_vote`` sums only the judgments a meta RM rates highest."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search.common import (
    Budget,
    Problem,
    SearchConfig,
    SearchResult,
    argbest,
    make_result,
    reward_prompt,
)
from twinloop.infer.search.sampling import draw
from twinloop.rewards.base import message_text
from twinloop.rewards.generative import format_grm_prompt, meta_guided_vote, vote


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
    live = [pi for pi, d in enumerate(drawn) if d.candidates]
    items = [(queries[pi], [c.text for c in drawn[pi].candidates]) for pi in live]
    owners = [pi for pi in live for _ in range(config.k)]
    judged = tracker.charge_reward(grm, owners, lambda: grm.judge_many(items, k=config.k)) if items else []
    metas: list[list[float]] = [[] for _ in live]
    if meta and items:
        prompts, texts = [], []
        for (query, responses), js in zip(items, judged):
            for j in js:
                shown = [responses[i] for i in j.order]
                prompts.append(format_grm_prompt(query, shown, binary=getattr(grm, "binary", False)))
                texts.append(j.text)
        raw = tracker.charge_reward(meta_rm, owners, lambda: meta_rm(prompts, texts))
        flat = [float("-inf") if s is None else float(s) for s in raw]
        metas = [flat[i * config.k:(i + 1) * config.k] for i in range(len(live))]
    k_meta = config.k_meta if config.k_meta is not None else getattr(grm, "k_meta", None)
    totals: dict[int, list[int] | None] = {}
    trace: dict[int, list[dict[str, Any]]] = {}
    for slot, pi in enumerate(live):
        lists = [j.scores for j in judged[slot]]
        totals[pi] = meta_guided_vote(lists, metas[slot], k_meta) if meta else vote(lists)
        trace[pi] = [{"scores": j.scores, "order": j.order, **({"meta": metas[slot][x]} if meta else {})}
                     for x, j in enumerate(judged[slot])]
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
