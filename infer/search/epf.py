"""ePF (arXiv 2510.05825): particle filtering with entropic annealing and optional look-ahead modulation.

Resampling is systematic from softmax(logw / T), with T from the ESS rule (default) or the entropy rule
while ρ = ESS/N < 0.5 and τ = t/T_max < 0.5 (T_max = ``max_steps``); the final pick is the untempered
argmax. Look-ahead modulation (``lookahead="replace"`` or ``"mean"``, [check]) costs one extra step and
one extra PRM call per particle per step; it is off by default."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchResult
from twinloop.infer.search._particles import ParticleConfig, search

NEEDS_REWARD = "process"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class EPFConfig(ParticleConfig):
    resampling: str = "systematic"
    anneal: str = "ess"  # ess / entropy


Config = EPFConfig  # the config class twinloop eval builds for this procedure


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: ParticleConfig | None = None) -> list[SearchResult]:
    """``reward`` is a process reward; ``budget.n`` is the number of particles."""
    return search(problems, engine, reward, budget or Budget(), config or EPFConfig(), "epf")
