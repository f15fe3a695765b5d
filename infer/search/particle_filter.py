"""Particle filtering with a PRM (arXiv 2502.01618): N particles extended step by step, weighted by
logit(PRM), the live ones resampled among themselves multinomially (or systematically,
``resampling="systematic"``); finished particles keep their slot and weight and take no part in
resampling. See ``particles`` for the loop."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchResult
from twinloop.infer.search._particles import ParticleConfig, search

Config = ParticleConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "process"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: ParticleConfig | None = None) -> list[SearchResult]:
    """``reward`` is a process reward; ``budget.n`` is the number of particles."""
    return search(problems, engine, reward, budget or Budget(), config or ParticleConfig(), "particle_filter")
