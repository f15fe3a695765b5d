"""Adaptive self-evaluation (arXiv 2410.02725): sample in growing batches and stop as soon as the model's
own probe says a restart would not help.

After each batch, every new response is probed with "Would you do better if you started over?"
(``twinloop.rewards.selfeval.SelfEvalProbe``): P(better) = P("Yes"). Sampling stops once the best
response's P(better) falls below ``threshold``, or N responses have been drawn. The answer is the
response with the highest P("No"). With ``prune_tokens > 0`` every sample is first generated for that
many tokens, partials whose P(better) exceeds ``prune_threshold`` are dropped (at least one survives),
and the survivors continue from their token ids. Batch sizes, threshold and pruning rule are [check]
defaults. All problems still sampling share each engine and probe call.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.infer.engine import Completion, Engine, Request
from twinloop.infer.search._common import (
    Budget,
    Candidate,
    Problem,
    SearchConfig,
    SearchResult,
    Tracker,
    argbest,
    candidate_finish,
    make_result,
    reward_prompt,
)

NEEDS_REWARD = "selfeval"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class AdaptiveConfig(SearchConfig):
    first_batch: int = 1
    growth: float = 2.0  # batch sizes first_batch, ×growth, ... until N
    threshold: float = 0.2  # stop once the best response's P(better) is below this
    prune_tokens: int = 0  # > 0: probe partial responses after this many tokens and prune
    prune_threshold: float = 0.5  # drop partials with P(better) above this


Config = AdaptiveConfig  # the config class twinloop eval builds for this procedure


def batch_sizes(n: int, first: int, growth: float) -> list[int]:
    """Growing batch sizes that sum to n: first, first·growth, ... (rounded, at least 1), last one cut."""
    out, size = [], float(max(1, first))
    while sum(out) < n:
        out.append(min(max(1, round(size)), n - sum(out)))
        size *= growth
    return out


def _probe(probe: Any, tracker: Tracker, engine: Engine, items: Sequence[tuple[int, str]]) -> list[float]:
    if not items:
        return []
    prompts = [reward_prompt(tracker.problems[pi], engine) for pi, _ in items]
    texts = [t for _, t in items]
    return tracker.charge_reward(probe, [pi for pi, _ in items], lambda: probe.p_better(prompts, texts))


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: AdaptiveConfig | None = None) -> list[SearchResult]:
    """``reward`` is the self-evaluation probe (an object with ``p_better``); ``budget.n`` caps the samples."""
    budget, config = budget or Budget(), config or AdaptiveConfig()
    if reward is None or not hasattr(reward, "p_better"):
        raise ValueError("adaptive_selfeval needs a self-evaluation probe (an object with p_better)")
    tracker = Tracker(problems, budget)
    plan = batch_sizes(budget.n, config.first_batch, config.growth)
    cands: list[list[Candidate]] = [[] for _ in problems]
    trace: list[list[dict[str, Any]]] = [[] for _ in problems]
    prompt_ids: list[list[int] | None] = [None] * len(problems)
    stop = ["max_samples"] * len(problems)
    live = list(range(len(problems)))
    for size in plan:
        live = [pi for pi in live if not tracker.exhausted(pi)]
        if not live:
            break
        first_len = config.prune_tokens if config.prune_tokens > 0 else config.max_tokens
        owned = [(pi, problems[pi].request(config.lora) if prompt_ids[pi] is None
                  else Request(prompt_ids=prompt_ids[pi], lora=config.lora)) for pi in live]
        results = tracker.generate(engine, owned, config.sampling(n=size, max_tokens=first_len))
        fresh: list[tuple[int, Any]] = []  # (problem, completion) complete responses of this batch
        partial: list[tuple[int, Any]] = []
        for pi, res in zip(live, results):
            if res.completions:  # a request the token cap left empty carries no prompt ids
                prompt_ids[pi] = list(res.prompt_ids)
            for c in res.completions:
                (partial if config.prune_tokens > 0 and c.finish_reason == "length" else fresh).append((pi, c))
        if partial:
            p_better = _probe(reward, tracker, engine, [(pi, c.text) for pi, c in partial])
            keep = [x for x, p in zip(partial, p_better) if p <= config.prune_threshold]
            for pi in {pi for pi, _ in partial}:  # at least one survivor per problem
                if not any(k[0] == pi for k in keep) and not any(f[0] == pi for f in fresh):
                    best = min((p, i) for i, ((qi, _), p) in enumerate(zip(partial, p_better)) if qi == pi)[1]
                    keep.append(partial[best])
            for pi in {pi for pi, _ in partial}:
                trace[pi].append({"pruned": sum(1 for q, _ in partial if q == pi) - sum(1 for q, _ in keep if q == pi)})
            resumed = [(pi, Request(prompt_ids=prompt_ids[pi] + list(c.token_ids), lora=config.lora)) for pi, c in keep]
            rest = max(1, config.max_tokens - config.prune_tokens)
            more = tracker.generate(engine, resumed, config.sampling(n=1, max_tokens=rest))
            for (pi, c), res in zip(keep, more):
                if not res.completions:  # the token cap left no room: the pruned prefix stays as it is
                    fresh.append((pi, c))
                    continue
                d = res.completions[0]
                fresh.append((pi, Completion(list(c.token_ids) + list(d.token_ids), c.text + d.text, d.finish_reason)))
        p_better = _probe(reward, tracker, engine, [(pi, c.text) for pi, c in fresh])
        for (pi, c), p in zip(fresh, p_better):
            cands[pi].append(Candidate(text=c.text, token_ids=list(c.token_ids),
                                       finish_reason=candidate_finish(c.finish_reason),
                                       answer=config.answer_fn(c.text), score=1.0 - p))
        still = []
        for pi in live:
            best = argbest([c.score for c in cands[pi]])
            p_best = 1.0 - cands[pi][best].score if best is not None else 1.0
            trace[pi].append({"batch": size, "samples": len(cands[pi]), "best_p_better": p_best})
            if best is not None and p_best < config.threshold:
                stop[pi] = "confident"
            else:
                still.append(pi)
        live = still
    usage = tracker.finish()
    out = []
    for pi, p in enumerate(problems):
        exhausted = stop[pi] == "max_samples" and tracker.exhausted(pi) and len(cands[pi]) < budget.n
        out.append(make_result("adaptive_selfeval", p, cands[pi], argbest([c.score for c in cands[pi]]), usage[pi],
                               "budget" if exhausted else stop[pi], exhausted, trace=trace[pi]))
    return out
