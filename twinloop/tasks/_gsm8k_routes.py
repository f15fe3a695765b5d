"""GSM8K-style calculator chains for the recompute verifier: every ``<<lhs=rhs>>`` annotation is a claim.

Route, per annotation, in the candidate's own context (problem, earlier steps, this step up to the
annotation): a single sum or product of two numbers is re-derived commuted (``<<48*2=`` -> ``<<2*48=``),
a different route from the one written; anything else is recomputed as written (the same route, which
only asks whether the written value is the model's own greedy choice, so systematic errors pass).
Not measured: the tiny arithmetic policy writes no annotations, and no GSM8K policy is built here.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from twinloop.rewards.recompute import Derivation, RecomputeProcessReward, Stage, StepPlan, first_number

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_BINARY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([+*])\s*(\d+(?:\.\d+)?)\s*$")


def commuted(lhs: str) -> str:
    """``a + b`` / ``a * b`` written the other way round; any other expression unchanged."""
    m = _BINARY.match(lhs)
    return f"{m.group(3)}{m.group(2)}{m.group(1)}" if m else lhs


class GsmAnnotationRoute:
    """Claims are the annotations' right-hand sides; a step without annotations has nothing to check (1.0)."""

    def __init__(self, delimiter: str = "\n", commute: bool = True) -> None:
        self.delimiter, self.commute = delimiter, commute

    def context(self, earlier_steps: Sequence[str]) -> str:
        return "".join(s + self.delimiter for s in earlier_steps)

    def plan(self, problem: str, steps: Sequence[str], index: int) -> StepPlan:
        step = steps[index]
        found = list(_ANNOTATION.finditer(step))
        if not found:
            return StepPlan(score=1.0)
        derivations = []
        for m in found:
            claimed = first_number(m.group(2))
            if claimed is None:
                return StepPlan()  # an annotation without a value: unparseable
            lhs = commuted(m.group(1)) if self.commute else m.group(1)
            text = step[: m.start()] + f"<<{lhs}="
            derivations.append(Derivation(claimed, (Stage(lambda _v, t=text: t, first_number),)))
        return StepPlan(derivations=tuple(derivations))


def recompute_reward(engine: Any, delimiter: str = "\n", **settings: Any) -> RecomputeProcessReward:
    """The recompute verifier for solutions written with calculator annotations, one step per line."""
    return RecomputeProcessReward(engine, GsmAnnotationRoute(delimiter), delimiter=delimiter, **settings)
