"""The Reward contract: one callable used unchanged by trainers and by search.

Every reward has TRL's reward signature, ``reward(prompts, completions, **columns) -> list[float | None]``,
so it can be passed as-is to ``trl.GRPOTrainer(reward_funcs=[...])``. Richer kinds add their own methods
(per-step scores, ``compare``, voting@k) and still reduce to this callable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence, runtime_checkable


@dataclass
class RewardUsage:
    """Counters every reward keeps. Tokens are counted only where a model is involved."""

    calls: int = 0  # reward(...) invocations
    items: int = 0  # completions scored
    model_calls: int = 0  # forward passes / generation requests sent to a model
    input_tokens: int = 0
    output_tokens: int = 0
    unparseable: int = 0  # outputs that fell back to the documented default

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for k in self.as_dict():
            setattr(self, k, 0)


@runtime_checkable
class Reward(Protocol):
    """What trainers and search procedures rely on."""

    __name__: str
    usage: RewardUsage

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]: ...


def message_text(x: Any) -> str:
    """Text of a plain-text or chat-format prompt/completion.

    A chat-format completion is a list of ``{"role", "content"}`` dicts (TRL passes
    ``[{"role": "assistant", "content": ...}]``); its text is the last message's content.
    """
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("content", ""))
    if isinstance(x, (list, tuple)):
        if not x:
            return ""
        last = x[-1]
        return str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return str(x)


def column(columns: dict[str, Any], names: Sequence[str], n: int) -> list[Any]:
    """The first present column among ``names`` (TRL forwards dataset columns as kwargs).

    Raises a one-line error naming the expected columns when none is present.
    """
    for name in names:
        if name in columns and columns[name] is not None:
            values = list(columns[name])
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
            return values
    raise ValueError(f"this reward needs one of the dataset columns {list(names)}; got {sorted(columns)}")


class RewardBase:
    """Convenience base: a name, usage counters, and text normalisation. Subclasses implement ``score``."""

    name: str = "reward"

    def __init__(self) -> None:
        self.usage = RewardUsage()

    @property
    def __name__(self) -> str:  # TRL logs reward functions by __name__
        return self.name

    def score(self, prompt: str, completion: str, **row: Any) -> float | None:
        raise NotImplementedError(f"{type(self).__name__} must implement score() or __call__()")

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        n = len(completions)
        rows = [{k: v[i] for k, v in columns.items() if _is_per_item(v, n)} for i in range(n)]
        return [self.score(message_text(p), message_text(c), **row) for p, c, row in zip(prompts, completions, rows)]


def _is_per_item(v: Any, n: int) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == n


@runtime_checkable
class ProcessReward(Reward, Protocol):
    """A reward that also scores every step of a (partial) solution.

    ``step_scores`` returns, per completion, one float in [0, 1] per step (the probability the step is
    good). ``__call__`` reduces those with the reward's aggregation (last / min / prod / mean).
    """

    def step_scores(
        self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
    ) -> list[list[float]]: ...
