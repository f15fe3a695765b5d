"""Task families: each module gives a loader (rows with chat-message ``prompt`` and gold columns) and its
verifiable reward.

``TASKS`` maps a task name to its loader, called as ``TASKS[name](split="test", n=None)``; ``TASK_REWARDS``
maps the same names to a function building the task's verifiable reward (HumanEval's execution reward lives
in rewards/sandbox.py). Modules import their data lazily, so this import stays cheap.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twinloop.tasks import arith, gsm8k, humaneval, mmath, rgym

TASKS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "arith": arith.load,
    "mmath": mmath.load,
    "gsm8k": gsm8k.load,
    "humaneval": humaneval.load,
    **{f"rgym_{name}": partial(rgym.load, name) for name in rgym.DEFAULT_TASKS},
}

TASK_REWARDS: dict[str, Callable[[], Any]] = {
    "arith": arith.ArithOutcomeReward,
    "mmath": mmath.reward,
    "gsm8k": gsm8k.reward,
    **{f"rgym_{name}": partial(rgym.reward, name) for name in rgym.DEFAULT_TASKS},
}
