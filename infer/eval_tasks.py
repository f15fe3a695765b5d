"""Tasks and rewards for `twinloop eval`: load a task's rows as Problems, the task's correctness judge, and
the reward a search procedure uses (built per engine, so judges on the policy's model share its engine)."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twinloop.infer.search.common import Problem


def task_module(task: str):
    name = task.split(":", 1)[0]
    try:
        return importlib.import_module(f"twinloop.tasks.{name}")
    except ModuleNotFoundError as e:
        raise ValueError(f"unknown task {task!r}; tasks live in twinloop/tasks/ "
                         "(arith, gsm8k, mmath, humaneval, rgym:NAME)") from e


def load_rows(task: str, split: str, n: int | None) -> list[dict[str, Any]]:
    mod = task_module(task)
    if ":" in task:  # reasoning-gym: rgym:countdown
        return mod.load(task.split(":", 1)[1], split=split, n=n)
    return mod.load(split=split, n=n)


def task_reward(task: str):
    """The task's own verifiable reward (the correctness judge)."""
    mod = task_module(task)
    if ":" in task:
        return mod.reward(task.split(":", 1)[1])
    if hasattr(mod, "reward"):
        return mod.reward()
    if task == "arith":
        return mod.ArithOutcomeReward()
    raise ValueError(f"task {task!r} has no reward() to judge answers")


SELF_REWARDS = ("pairwise", "grm", "selfeval")  # judged by the policy model itself (optionally :ADAPTER)


def build_reward(spec: str | None, task: str, engine: Any = None):
    """``arith_process`` (exact PRM), ``arith_outcome`` / ``task`` (gold oracles), ``none``, a reward
    bundle folder (twinloop.checkpoints.export.load_reward), or a judge run on the policy engine:
    ``pairwise`` (V1 verifier), ``grm`` (SPCT GRM), ``selfeval`` (self-evaluation probe), each with an
    optional LoRA adapter as ``NAME:ADAPTER_DIR``."""
    if spec is None or spec == "none":
        return None
    if spec in ("arith_process", "arith_outcome"):
        from twinloop.tasks import arith

        return arith.ArithProcessReward() if spec == "arith_process" else arith.ArithOutcomeReward()
    if spec == "task":
        return task_reward(task)
    kind, _, adapter = spec.partition(":")
    if kind in SELF_REWARDS:
        if adapter and not Path(adapter).is_dir():
            raise FileNotFoundError(f"LoRA adapter folder {adapter} not found")
        if engine is None:  # validation only
            return None
        lora = adapter or None
        if kind == "pairwise":
            from twinloop.rewards.pairwise import PairwiseVerifier

            return PairwiseVerifier(engine, lora=lora)
        if kind == "grm":
            from twinloop.rewards.generative import GenerativeReward

            return GenerativeReward(engine, lora=lora, mode="group")
        from twinloop.rewards.selfeval import SelfEvalProbe, probe_settings

        return SelfEvalProbe(engine, lora=lora, **probe_settings(lora))
    if Path(spec).is_dir():
        try:
            from twinloop.checkpoints.export import load_reward
        except ImportError as e:
            raise ValueError("loading a reward bundle needs twinloop.checkpoints.export.load_reward") from e
        return load_reward(spec)
    raise ValueError(f"unknown reward {spec!r}: use arith_process, arith_outcome, task, none, pairwise, grm, "
                     "selfeval or a bundle folder")


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
