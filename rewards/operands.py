"""Operand consistency, a process reward needing no model and no gold answer; and combining step rewards.

``OperandConsistencyReward``: each operand of a step must be a number of the problem or a result of an
earlier step. Re-deriving a step's arithmetic cannot see a wrongly copied operand (``78 - 27`` where the
problem has 76): on the tiny arithmetic policy 30% of wrong responses are of that kind (STACK.md).
``CombinedProcessReward`` combines the step scores of several process rewards (min / prod / mean).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from twinloop.rewards.base import RewardBase, message_text
from twinloop.rewards.process import AGGREGATIONS, call_by_steps

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
COMBINE = ("min", "prod", "mean")

StepParse = Callable[[str], "tuple[list[float], list[float]] | None"]


def numbers_in(text: str) -> list[float]:
    """Unsigned numbers written in ``text`` (thousands commas dropped), as floats, in order."""
    return [float(m) for m in _NUMBER.findall(text.replace(",", ""))]


def equation_numbers(step: str) -> tuple[list[float], list[float]] | None:
    """(operands, results) of a step: every ``<<lhs=rhs>>`` annotation (GSM8K calculator style), else its
    first equation ``lhs = ... = rhs`` (operands from the first ``=``'s left side, so a chain's later links,
    which reuse its own intermediate values, are not checked). None when the step has no equation."""
    found = _ANNOTATION.findall(step)
    if found:
        ops = [x for lhs, _ in found for x in numbers_in(lhs)]
        res = [x for _, rhs in found for x in numbers_in(rhs)[:1]]
        return ops, res
    if "=" not in step:
        return None
    parts = step.split("=")
    ops, res = numbers_in(parts[0]), numbers_in(parts[-1])[:1]
    return (ops, res) if ops and res else None


def operand_scores(problem_numbers: Sequence[float], steps: Sequence[tuple[list[float], list[float]] | None],
                   consume: bool = False) -> list[float]:
    """1.0 / 0.0 per step: every operand is available (a problem number or an earlier result). A step
    without an equation (None) scores 1.0 and adds nothing. With ``consume`` the available numbers are a
    multiset and each use removes one (arithmetic problems use every number once)."""
    available = Counter(_key(x) for x in problem_numbers)
    out = []
    for parsed in steps:
        if parsed is None:
            out.append(1.0)
            continue
        ops, results = parsed
        need = Counter(_key(x) for x in ops)
        ok = all(available[k] >= c for k, c in need.items()) if consume else all(available[k] for k in need)
        out.append(1.0 if ok else 0.0)
        if consume:
            for k, c in need.items():
                available[k] = max(0, available[k] - c)
        for r in results:
            available[_key(r)] += 1
    return out


def _key(x: float) -> float:
    return round(float(x), 9)


class OperandConsistencyReward(RewardBase):
    """Per step 1.0 when each operand is a problem number or an earlier result, else 0.0.

    ``parse_step(step) -> (operands, results) | None`` reads a step (default ``equation_numbers``; a task
    may pass its exact parser); ``consume`` [check] treats numbers as used up once (False by default, since
    word problems reuse quantities). Steps the parser returns None for have nothing to check and score
    1.0. The response score aggregates steps (``min`` [check]); a response with no step scores
    ``unparseable_score`` (0.0), counted in ``usage.unparseable``.
    """

    name = "operands"
    context_args = ("engine", "model", "tokenizer", "parse_step")  # a function, not a setting

    def __init__(self, parse_step: StepParse = equation_numbers, consume: bool = False, aggregation: str = "min",
                 unparseable_score: float = 0.0, delimiter: str = "\n\n") -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.parse_step, self.consume, self.aggregation = parse_step, consume, aggregation
        self.unparseable_score, self.delimiter = unparseable_score, delimiter

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
                    ) -> list[list[float]]:
        return [operand_scores(numbers_in(message_text(p)), [self.parse_step(s.strip()) for s in ss], self.consume)
                for p, ss in zip(prompts, steps)]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return call_by_steps(self, prompts, completions, columns)


def combine_scores(rows: Sequence[Sequence[float]], how: str = "min") -> list[float]:
    """Step-wise combination of equally long score lists: min, product or mean."""
    if how not in COMBINE:
        raise ValueError(f"combine must be one of {COMBINE}, got {how!r}")
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"step score lists differ in length: {[len(r) for r in rows]}")
    cols = list(zip(*rows))
    if how == "min":
        return [float(min(c)) for c in cols]
    if how == "prod":
        return [float(math.prod(c)) for c in cols]
    return [float(sum(c) / len(c)) for c in cols]


class CombinedProcessReward(RewardBase):
    """Several process rewards as one: step scores combined with ``combine`` (min [check], prod, mean),
    the response score their aggregation (``aggregation``, min [check]). ``usage`` is the sum of the parts'
    (so search charges every part's model tokens) plus this reward's own calls."""

    name = "combined"
    context_args = ("engine", "model", "tokenizer", "rewards")  # objects; a task subclass builds them from literals

    def __init__(self, rewards: Sequence[Any], combine: str = "min", aggregation: str = "min",
                 unparseable_score: float = 0.0, delimiter: str = "\n\n") -> None:
        super().__init__()
        if not rewards or not all(hasattr(r, "step_scores") for r in rewards):
            raise ValueError("CombinedProcessReward needs one or more process rewards (objects with step_scores)")
        combine_scores([], combine)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.rewards, self.combine, self.aggregation = list(rewards), combine, aggregation
        self.unparseable_score, self.delimiter = unparseable_score, delimiter
        self.name = "+".join(getattr(r, "name", type(r).__name__) for r in self.rewards)

    @property
    def usage(self):  # the parts' counters summed, plus this reward's own calls / items / unparseable
        from twinloop.rewards.base import RewardUsage

        total = RewardUsage(**self.own.as_dict())
        for r in self.rewards:
            for k, v in r.usage.as_dict().items():
                if k not in ("calls", "items"):
                    setattr(total, k, getattr(total, k) + v)
        return total

    @usage.setter
    def usage(self, value) -> None:
        self.own = value

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
                    ) -> list[list[float]]:
        parts = [r.step_scores(prompts, steps, **columns) for r in self.rewards]
        return [combine_scores([p[i] for p in parts], self.combine) for i in range(len(steps))]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return call_by_steps(_OwnUsage(self), prompts, completions, columns)


class _OwnUsage:
    """The combined reward seen with its own counters, so ``call_by_steps`` increments those."""

    def __init__(self, reward: CombinedProcessReward) -> None:
        self.reward, self.usage = reward, reward.own
        self.delimiter, self.unparseable_score, self.aggregation = (reward.delimiter, reward.unparseable_score,
                                                                    reward.aggregation)

    def step_scores(self, *args: Any, **kwargs: Any) -> list[list[float]]:
        return self.reward.step_scores(*args, **kwargs)
