"""Diverse verifier tree search (DVTS): N/M independent subtrees, each keeping only its best candidate
at every step and expanding it M ways; a subtree ends when its best child has finished. The answer is
picked among the subtrees' final candidates (``config.select``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchResult
from twinloop.infer.search._tree import TreeConfig, search

Config = TreeConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "process"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: TreeConfig | None = None) -> list[SearchResult]:
    """``reward`` is a process reward (``step_scores``); ``budget.n`` is N, ``config.width`` is M."""
    return search(problems, engine, reward, budget or Budget(), config or TreeConfig(), "dvts", subtrees=True)
