"""Meta-RM-guided GRM voting as a selector (SPCT): the k judgments are rated by the meta RM and only the
top k_meta (default k/2, [check]) are summed. ``reward`` is a GenerativeReward built with ``meta_rm``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.infer.engine import Engine
from twinloop.infer.search._common import Budget, Problem, SearchResult
from twinloop.infer.search.grm_vote import GRMVoteConfig, select

Config = GRMVoteConfig  # the config class twinloop eval builds for this procedure


NEEDS_REWARD = "grm"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: GRMVoteConfig | None = None) -> list[SearchResult]:
    return select(problems, engine, reward, budget, config, meta=True, method="grm_meta_vote")
