"""Arithmetic's routes for the no-oracle verifiers (``twinloop.rewards.recompute``, ``.operands``).

Recompute route, per operation ``x op y`` of a step (each link of a chain ``x op y = a op b = z``), all by
the model in the candidate's own context (problem, the candidate's earlier steps):

- tens first, for + and - with a second operand that has tens and units (``y > 10``, ``y % 10 != 0``):
  ``x op T =`` -> a, then ``x op T = a op u =`` -> v (T = y's tens, u = its units);
- otherwise in context: the step's text up to this operation, then `` =`` -> v.

The claim is the step's final value z (every link of a chain must equal it). Recomputing the same way
the candidate did only asks "was this the model's own greedy choice?", so systematic errors pass; the
other route does not share them (STACK.md, "Verifiers at tiny scale": pair accuracy 0.81 against 0.72).
The answer step needs no model: its boxed value must equal the last equation's value. The harness only
splits digits and routes values between calls; the model does all arithmetic.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.rewards.operands import CombinedProcessReward, OperandConsistencyReward
from twinloop.rewards.recompute import Derivation, RecomputeProcessReward, Stage, StepPlan, chain_value, first_number
from twinloop.tasks.arith import STEP_DELIMITER, boxed_int, parse_chain


def tens_first_split(x: int, op: str, y: int) -> tuple[str, str, int] | None:
    """``(first text, op, units)`` for the tens-first route of ``x op y``, or None when it does not apply:
    ``47 + 38`` -> ``("47 + 30", "+", 8)``; the second stage then reads ``47 + 30 = a + 8``."""
    if op not in "+-" or y <= 10 or y % 10 == 0:
        return None
    return f"{x} {op} {y - y % 10}", op, y % 10


def link_prefixes(step: str) -> list[str]:
    """For each operation of a chain step, its text up to and including that operation, then `` =``:
    ``47 + 38 = 77 + 8 = 85`` -> [``47 + 38 =``, ``47 + 38 = 77 + 8 =``]."""
    terms = step.split("=")[:-1]
    return ["=".join(terms[: j + 1]).rstrip() + " =" for j in range(len(terms))]


def last_equation_value(steps: Sequence[str]) -> int | None:
    """The final value of the last equation step among ``steps`` (None when there is none)."""
    for step in reversed(steps):
        chain = parse_chain(step.strip())
        if chain is not None:
            return chain[1]
    return None


class ArithRecomputeRoute:
    """Tens first for + and - where it applies, else in context (see the module docstring)."""

    def __init__(self, delimiter: str = STEP_DELIMITER, tens_first: bool = True) -> None:
        self.delimiter, self.tens_first = delimiter, tens_first

    def context(self, earlier_steps: Sequence[str]) -> str:
        return "".join(s.strip() + self.delimiter for s in earlier_steps)

    def plan(self, problem: str, steps: Sequence[str], index: int) -> StepPlan:
        step = steps[index].strip()
        chain = parse_chain(step)
        if chain is None:
            boxed = boxed_int(step)
            if boxed is None:
                return StepPlan()  # neither an equation nor an answer: unparseable
            last = last_equation_value(steps[:index])
            return StepPlan(score=1.0 if last is not None and last == boxed else 0.0)
        ops, z = chain
        derivations = []
        for (x, op, y), forced in zip(ops, link_prefixes(step)):
            split = tens_first_split(x, op, y) if self.tens_first else None
            if split is None:
                derivations.append(Derivation(z, (Stage(lambda _v, f=forced: f, chain_value),)))
                continue
            head, sop, units = split
            derivations.append(Derivation(z, (
                Stage(lambda _v, h=head: f"{h} =", first_number),
                Stage(lambda v, h=head, o=sop, u=units: f"{h} = {v[0]} {o} {u} =", chain_value),
            )))
        return StepPlan(derivations=tuple(derivations))


class ArithRecomputeReward(RecomputeProcessReward):
    """``RecomputeProcessReward`` on ``ArithRecomputeRoute``, built from literal settings (spec alias ``recompute``);
    ``tens_first=False`` recomputes every operation in context (the same route: a weaker check)."""

    def __init__(self, engine: Any, tens_first: bool = True, aggregation: str = "min", expected: bool = False,
                 unparseable_score: float = 0.0, max_tokens: int = 24, cache_size: int = 200_000,
                 lora: str | None = None) -> None:
        super().__init__(engine, ArithRecomputeRoute(tens_first=tens_first), aggregation=aggregation,
                         expected=expected, unparseable_score=unparseable_score, max_tokens=max_tokens,
                         cache_size=cache_size, lora=lora)
        self.tens_first = tens_first


def recompute_reward(engine: Any, **settings: Any) -> ArithRecomputeReward:
    """The no-oracle process reward for arithmetic: ``engine`` (the policy works) re-derives every step."""
    return ArithRecomputeReward(engine, **settings)


def arith_operands(step: str) -> tuple[list[float], list[float]] | None:
    """(operands, results) of an arithmetic step for the operand check: a chain's first operation and its
    final value; None for the answer step and for text that is no equation (nothing to check)."""
    chain = parse_chain(step.strip())
    if chain is None:
        return None
    (x, _, y), z = chain[0][0], chain[1]
    return [float(x), float(y)], [float(z)]


class ArithOperandsReward(OperandConsistencyReward):
    """Operand consistency for arithmetic (spec alias ``operands``): the exact step parser, and every number of
    the problem used once (``consume`` [check])."""

    def __init__(self, consume: bool = True, aggregation: str = "min", unparseable_score: float = 0.0) -> None:
        super().__init__(parse_step=arith_operands, consume=consume, aggregation=aggregation,
                         unparseable_score=unparseable_score)


def operands_reward(**settings: Any) -> ArithOperandsReward:
    return ArithOperandsReward(**settings)


class ArithRecomputeOperandsReward(CombinedProcessReward):
    """Recomputation and operand consistency, step scores combined by ``combine`` (min [check]); spec alias
    ``recompute+operands``."""

    def __init__(self, engine: Any, expected: bool = False, combine: str = "min", aggregation: str = "min",
                 tens_first: bool = True, consume: bool = True) -> None:
        super().__init__([ArithRecomputeReward(engine, tens_first=tens_first, expected=expected),
                          ArithOperandsReward(consume=consume)], combine=combine, aggregation=aggregation)


def recompute_operands_reward(engine: Any, **settings: Any) -> ArithRecomputeOperandsReward:
    return ArithRecomputeOperandsReward(engine, **settings)
