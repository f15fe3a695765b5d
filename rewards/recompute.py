"""A process reward that needs no oracle: a model re-derives each step's claim by another route.

The *route* belongs to the task: for every step it says which claims the step makes and how a model
should re-derive each one (a few short generations whose prompts may use earlier stages' values, e.g.
arithmetic's tens first: ``47 + 30 =`` -> a, then ``47 + 30 = a + 8 =`` -> v). This module runs routes
generically: all stages of all claims of all steps, candidates and problems go to the engine in one call
per stage, every prompt is the problem's prompt ids + the candidate's earlier steps + the stage text (so
the prefix cache hits), and identical prompts are sent once.

A claim scores its agreement with the route's value (1.0 / 0.0), or with ``expected=True`` the expected
agreement: the probability the route's generation gave that value (the mass the greedy route did not see
counts as disagreement, so this is a lower bound). A step scores the minimum over its claims; a response the
aggregation of its steps (``min`` by default [check]). A step whose claim the route cannot parse, and a
route generation whose value cannot be read, score ``unparseable_score`` (0.0 [check]) and are counted in
``usage.unparseable``. Usage: ``output_tokens`` are the tokens the engine generated for the verifier,
``input_tokens`` its prompt tokens the prefix cache did not serve; so search accounts them as RM tokens.
A step scored before (same problem, same steps so far) is not recomputed, but is charged what it cost the
first time, so a method's RM tokens do not depend on what ran earlier on the same reward object (``twinloop
eval`` reuses one across methods and budgets). Within a step-level search this charges re-scored prefixes
again, as the token-classification PRMs are charged (they re-read the whole prefix at every call).
"""
from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from twinloop.rewards.base import RewardBase, message_text
from twinloop.rewards.process import AGGREGATIONS, call_by_steps, encode_prompt

from twinloop.contracts import Request, SamplingConfig

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

Value = Any  # what a route reads out of a generation: an int for arithmetic, any comparable value elsewhere


@dataclass(frozen=True)
class Stage:
    """One generation of a derivation: ``prompt(values of the earlier stages) -> text`` appended to the
    context, and ``read(generated text) -> value or None``."""

    prompt: Callable[[list[Value]], str]
    read: Callable[[str], Value | None]


@dataclass(frozen=True)
class Derivation:
    """One claim of a step (``claimed``) and the stages that re-derive it; the last stage's value is compared."""

    claimed: Value
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class StepPlan:
    """What a route makes of one step: derivations to run, or a fixed score (a check needing no model, or a
    step with nothing to check); ``derivations=None`` with ``score=None`` means the step did not parse."""

    derivations: tuple[Derivation, ...] | None = None
    score: float | None = None

    @property
    def unparseable(self) -> bool:
        return self.derivations is None and self.score is None


@runtime_checkable
class Route(Protocol):
    """A task's way of re-deriving steps. ``plan`` sees the problem text, the candidate's steps so far and
    the index of the step to plan; its stage prompts are appended to ``context(steps[:index])``."""

    def plan(self, problem: str, steps: Sequence[str], index: int) -> StepPlan: ...

    def context(self, earlier_steps: Sequence[str]) -> str: ...


# ------------------------------------------------------------------------------------------ pure helpers
def first_number(text: str) -> float | int | None:
    """The first number in ``text`` (int when integral), else None."""
    m = _NUMBER.search(text)
    return None if m is None else _as_number(m.group(0))


def chain_value(text: str, delimiter: str = "\n\n") -> float | int | None:
    """The value a generated equation chain ends on: the first number of the last ``=`` segment of its
    first step (`` 77 + 8 = 85`` -> 85; `` 85`` -> 85), else None."""
    step = text.split(delimiter)[0]
    return first_number(step.split("=")[-1])


def _as_number(s: str) -> float | int:
    v = float(s)
    return int(v) if v.is_integer() and "." not in s else v


def value_probability(token_texts: Sequence[str], logprobs: Sequence[float] | None, value: Value) -> float | None:
    """P(the generation wrote ``value``): the product of the probabilities of the tokens that overlap the
    first occurrence of ``str(value)`` in the joined text; None without logprobs or when not found."""
    if logprobs is None or value is None:
        return None
    text = "".join(token_texts)
    start = text.find(str(value))
    if start < 0:
        return None
    end, pos, total = start + len(str(value)), 0, 0.0
    for piece, lp in zip(token_texts, logprobs):
        if pos < end and pos + len(piece) > start:
            total += lp
        pos += len(piece)
    return math.exp(total)


def agreement(claimed: Value, value: Value | None, probability: float | None = None,
              expected: bool = False) -> float | None:
    """1.0 / 0.0 agreement of a route's value with the claim; with ``expected`` and a probability, the
    probability-weighted agreement (``p`` when equal, 0.0 otherwise). None when the value is unreadable."""
    if value is None:
        return None
    same = _same(claimed, value)
    if expected and probability is not None:
        return probability if same else 0.0
    return 1.0 if same else 0.0


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


# --------------------------------------------------------------------------------------------- reward
class RecomputeProcessReward(RewardBase):
    """Process reward from re-derivation by the task's ``route`` (see the module docstring).

    ``engine`` is any Engine (the policy itself works); ``route`` a ``Route`` (e.g. built by
    ``twinloop.tasks.arith.recompute_reward``). Settings [check]: ``aggregation`` (min), ``expected``
    (False: plain agreement), ``unparseable_score`` (0.0), ``max_tokens`` per stage (24), ``delimiter``
    between steps ("\\n\\n", also the stage's stop string), ``cache_size`` (step scores remembered by
    problem + steps so far, so step-level search pays once per new step).
    """

    name = "recompute"
    context_args = ("engine", "model", "tokenizer", "route")  # objects, not settings

    def __init__(self, engine: Any, route: Route, aggregation: str = "min", expected: bool = False,
                 unparseable_score: float = 0.0, max_tokens: int = 24, delimiter: str = "\n\n",
                 cache_size: int = 200_000, lora: str | None = None) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if not isinstance(route, Route):
            raise ValueError(f"route must have plan() and context(); got {type(route).__name__}")
        self.engine, self.route = engine, route
        self.aggregation, self.expected, self.unparseable_score = aggregation, expected, unparseable_score
        self.max_tokens, self.delimiter, self.cache_size, self.lora = max_tokens, delimiter, cache_size, lora
        self._memo: OrderedDict[tuple, tuple[float, float, float]] = OrderedDict()  # score, out, in tokens
        self._owed = [0.0, 0.0]  # fractional tokens of memo hits not yet charged (output, input)

    def _sampling(self) -> SamplingConfig:
        return SamplingConfig(n=1, temperature=0.0, max_tokens=self.max_tokens, stop=[self.delimiter],
                              logprobs=0 if self.expected else None).validate()

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
                    ) -> list[list[float]]:
        tok = self.engine.tokenizer
        out: list[list[float | None]] = [[None] * len(s) for s in steps]
        todo: list[tuple[int, int, StepPlan, list[int]]] = []  # (item, step, plan, context ids)
        prompt_ids: dict[int, list[int]] = {}
        for i, (prompt, item_steps) in enumerate(zip(prompts, steps)):
            problem = message_text(prompt)
            for k in range(len(item_steps)):
                key = (problem, tuple(item_steps[: k + 1]))
                if key in self._memo:
                    self._memo.move_to_end(key)
                    out[i][k] = self._charge_again(self._memo[key])
                    continue
                plan = self.route.plan(problem, item_steps, k)
                if plan.unparseable:
                    self.usage.unparseable += 1
                    out[i][k] = self._remember(key, self.unparseable_score)
                elif plan.derivations is None or not plan.derivations:
                    out[i][k] = self._remember(key, 1.0 if plan.score is None else float(plan.score))
                else:
                    if i not in prompt_ids:
                        prompt_ids[i] = encode_prompt(tok, prompt)
                    todo.append((i, k, plan, prompt_ids[i]))
        if todo:
            costs = self._run(todo, steps, out)
            for i, k, _, _ in todo:
                self._remember((message_text(prompts[i]), tuple(steps[i][: k + 1])), out[i][k], *costs[(i, k)])
        return [[float(x) for x in row] for row in out]

    def _remember(self, key: tuple, score: float, out_tokens: float = 0.0, in_tokens: float = 0.0) -> float:
        if self.cache_size > 0:
            self._memo[key] = (score, out_tokens, in_tokens)
            while len(self._memo) > self.cache_size:
                self._memo.popitem(last=False)
        return score

    def _charge_again(self, entry: tuple[float, float, float]) -> float:
        """A remembered step's score, charging its first cost again (whole tokens; fractions carried over)."""
        score, out_tokens, in_tokens = entry
        self._owed[0] += out_tokens
        self._owed[1] += in_tokens
        whole_out, whole_in = int(self._owed[0] + 1e-9), int(self._owed[1] + 1e-9)
        self.usage.output_tokens += whole_out
        self.usage.input_tokens += whole_in
        self._owed[0] -= whole_out
        self._owed[1] -= whole_in
        return score

    def _run(self, todo: list[tuple[int, int, StepPlan, list[int]]], steps: Sequence[Sequence[str]],
             out: list[list[float | None]]) -> dict[tuple[int, int], tuple[float, float]]:
        """All derivations stage by stage; each stage is one engine call with identical prompts merged.
        Returns each step's share of the tokens (output, uncached input): a merged prompt's tokens are split
        evenly over the derivations that sent it."""
        jobs = []  # [item, step, derivation, context text, base ids, values so far, failed, [out, in] tokens]
        for i, k, plan, base in todo:
            ctx = self.route.context(steps[i][:k])
            jobs += [[i, k, d, ctx, base, [], False, [0.0, 0.0]] for d in plan.derivations]
        depth = max(len(j[2].stages) for j in jobs)
        for s in range(depth):
            live = [j for j in jobs if not j[6] and s < len(j[2].stages)]
            self._stage(live, s)
        scores: dict[tuple[int, int], list[float]] = {}
        costs: dict[tuple[int, int], tuple[float, float]] = {}
        for i, k, d, _, _, values, failed, cost in jobs:
            before = costs.get((i, k), (0.0, 0.0))
            costs[(i, k)] = (before[0] + cost[0], before[1] + cost[1])
            got = None if failed else agreement(d.claimed, values[-1][0], values[-1][1], self.expected)
            if got is None:
                self.usage.unparseable += 1
                got = self.unparseable_score
            scores.setdefault((i, k), []).append(got)
        for (i, k), row in scores.items():
            out[i][k] = min(row)
        return costs

    def _stage(self, live: list[list[Any]], s: int) -> None:
        tok = self.engine.tokenizer
        unique: dict[tuple[int, ...], int] = {}
        where = []
        for j in live:
            text = j[3] + j[2].stages[s].prompt([v for v, _ in j[5]])
            ids = tuple(j[4] + [int(t) for t in tok.encode(text, add_special_tokens=False)])
            where.append(unique.setdefault(ids, len(unique)))
        if not unique:
            return
        results = self.engine.generate([Request(prompt_ids=list(ids), lora=self.lora) for ids in unique],
                                       self._sampling())
        self.usage.model_calls += len(results)
        spent = [(res.usage.generated_tokens, max(0, res.usage.prompt_tokens - res.usage.cached_prompt_tokens))
                 for res in results]
        for gen, unc in spent:
            self.usage.output_tokens += gen
            self.usage.input_tokens += unc
        senders = Counter(where)
        for j, u in zip(live, where):
            j[7][0] += spent[u][0] / senders[u]
            j[7][1] += spent[u][1] / senders[u]
            comp = results[u].completions[0]
            value = j[2].stages[s].read(comp.text)
            if value is None:
                j[6] = True
                continue
            prob = None
            if self.expected and comp.logprobs is not None:
                pieces = [tok.decode([t]) for t in comp.token_ids]
                prob = value_probability(pieces, comp.logprobs, value)
            j[5].append((value, prob))

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return call_by_steps(self, prompts, completions, columns)
