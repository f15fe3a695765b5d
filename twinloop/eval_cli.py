"""`twinloop eval`: search procedures on a task at several budgets (JSONL, table, plot).

The command lives in the CLI layer because it builds rewards with the one builder (``twinloop.build``), which
sits above the engines; running, resuming and reporting are ``twinloop.infer.evaluate`` and ``.report``.
"""
from __future__ import annotations

import argparse
from typing import Any

from twinloop.build import build_reward, reward_class
from twinloop.infer import evaluate


def reward_for(spec: Any, task: str, engine: Any = None) -> Any:
    """The run's reward on ``engine`` (a judge on the policy shares its engine); with no engine, the spec is
    only validated (no model is loaded)."""
    if engine is None:
        if spec is not None:
            reward_class(str(spec))
        return None
    return build_reward(spec, task=task, engine=engine)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    evaluate.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return evaluate.run(args, reward_for)
