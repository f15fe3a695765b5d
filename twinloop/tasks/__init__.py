"""twinloop.tasks: one module per task family, each with the same interface.

``load(split="test", n=None, seed=None)`` gives rows with a chat-format ``prompt`` plus gold columns, and
``reward()`` the task's own verifiable reward. A family of generators (``rgym``) sets ``FAMILY = True`` and takes
its member first: ``load(name, ...)``, ``reward(name)``. Name a task with one spec, ``arith`` or
``rgym:countdown``, through ``twinloop.build.build_task``. Modules import their data lazily; helper modules
(a task's recompute routes, say) are private (``_arith_routes``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    """A task: ``load(split, n, seed)`` gives chat-format rows, ``reward()`` its verifiable reward."""

    spec: str
    module: Any
    member: str | None = None

    def load(self, split: str = "test", n: int | None = None, seed: int | None = None) -> list[dict[str, Any]]:
        head = (self.member,) if self.member else ()
        return self.module.load(*head, split=split, n=n, seed=seed)

    def reward(self) -> Any:
        head = (self.member,) if self.member else ()
        return self.module.reward(*head)


def build_task(spec: str) -> Task:
    """``arith``, ``gsm8k``, ``mmath``, ``humaneval`` or ``FAMILY:MEMBER`` (``rgym:countdown``)."""
    name, _, member = str(spec).strip().partition(":")
    if not name.isidentifier():
        raise ValueError(f"unknown task {spec!r}; tasks live in twinloop/tasks/ (arith, gsm8k, mmath, humaneval, "
                         "rgym:NAME)")
    try:
        module = importlib.import_module(f"twinloop.tasks.{name}")
    except ModuleNotFoundError as e:
        raise ValueError(f"unknown task {spec!r}; tasks live in twinloop/tasks/ (arith, gsm8k, mmath, humaneval, "
                         "rgym:NAME)") from e
    family = getattr(module, "FAMILY", False)
    if family and not member:
        raise ValueError(f"task {spec!r} is a family: name a member, e.g. {name}:{module.DEFAULT_TASKS[0]}")
    if member and not family:
        raise ValueError(f"task {name!r} takes no member, got {spec!r}")
    return Task(spec=str(spec).strip(), module=module, member=member or None)


__all__ = ["Task", "build_task"]
