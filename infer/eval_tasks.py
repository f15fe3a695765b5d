"""Tasks and rewards for `twinloop eval`: load a task's rows as Problems, the task's correctness judge, and
the reward a search procedure uses is built by the caller (``twinloop.build.build_reward``, from the CLI layer) per
engine, so judges on the policy's model share its engine."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twinloop.infer.search._common import Problem

from twinloop.tasks import build_task


def load_rows(task: str, split: str, n: int | None, seed: int | None = None) -> list[dict[str, Any]]:
    """A task's rows through its spec (``arith``, ``rgym:countdown``; see ``twinloop.tasks.build_task``)."""
    return build_task(task).load(split, n=n, seed=seed)


def task_reward(task: str):
    """The task's own verifiable reward (the correctness judge)."""
    return build_task(task).reward()


def make_judge(task: str) -> Callable[[Problem, str | None], bool]:
    """answer -> correct, through the task's reward on ``\\boxed{answer}`` (None is wrong)."""
    reward = task_reward(task)

    def judge(problem: Problem, answer: str | None) -> bool:
        if answer is None:
            return False
        cols = {k: [v] for k, v in problem.columns.items()}
        score = reward([problem.prompt], ["\\boxed{" + str(answer) + "}"], **cols)[0]
        return score is not None and score >= 0.5

    return judge


def to_problems(rows: Sequence[dict[str, Any]]) -> list[Problem]:
    """Rows to Problems; the worked ``solution`` is not forwarded to rewards."""
    out = []
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"task row {i} has no 'prompt' field")
        cols = {k: v for k, v in row.items() if k not in ("prompt", "solution", "id")}
        out.append(Problem(prompt=row["prompt"], columns=cols, id=str(row.get("id", i))))
    return out
