"""The Reward contract: one callable used unchanged by trainers and by search.

Every reward has TRL's reward signature, ``reward(prompts, completions, **columns) -> list[float | None]``,
so it can be passed as-is to ``trl.GRPOTrainer(reward_funcs=[...])``. Richer kinds add their own methods
(per-step scores, ``compare``, voting@k) and still reduce to this callable.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable


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
    """Convenience base: a name, usage counters, text normalisation, and self-description.

    Subclasses implement ``score`` (or ``__call__``). Each subclass says what used to live in tables:
    ``kinds`` (the export kinds it can be, its own first; empty for rewards that read no model), ``head`` (the
    transformers head it reads), and through the arguments it was built with, ``settings()`` and ``spec()``.
    Constructor arguments are recorded automatically; ``context_args`` (model objects the builder passes in) and
    ``reward_args`` (arguments holding another reward, written as that reward's spec) are the two exceptions to
    "every argument is a literal". Every ``__call__`` is checked: one finite-or-None score per completion.
    """

    name: str = "reward"
    kinds: tuple[str, ...] = ()  # export kinds: "orm", "prm", "grm", "pairwise", "meta", "selfeval"
    head: str | None = None  # "sequence_classification", "token_classification" or "causal_lm"
    context_args: tuple[str, ...] = ("engine", "model", "tokenizer")
    reward_args: tuple[str, ...] = ()
    bundle_args: tuple[str, ...] = ("lora",)  # set by the bundle itself, never stored as a setting
    sends_chat: bool = True  # a causal-LM judge that sends chat messages needs a chat template

    def __init__(self) -> None:
        self.usage = RewardUsage()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls, cls.__dict__["__init__"])
        if "__call__" in cls.__dict__:
            cls.__call__ = _checked_call(cls.__dict__["__call__"])

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

    # ------------------------------------------------------------------------------ self-description
    def settings(self) -> dict[str, Any]:
        """Every constructor argument but the model objects and the bundle's own (defaults included): what a
        bundle stores. Nested rewards appear as their spec strings."""
        args = getattr(self, "_init_args", {})
        out = {}
        for key, value in args.items():
            if key in self.context_args or key in self.bundle_args:
                continue
            if key in self.reward_args and value is not None:
                value = value.spec() if hasattr(value, "spec") else _not_literal(self, key, value)
            elif not is_literal(value):
                _not_literal(self, key, value)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def spec(self) -> str:
        """``module:Class(key=literal, ...)`` with the arguments that differ from the defaults, or the bundle folder
        a reward was loaded from; the one builder (``twinloop.build.build_reward``) turns it back into an equal
        reward, given the same model objects."""
        if getattr(self, "_bundle", None):
            return str(self._bundle)
        defaults = _defaults(type(self))
        args = getattr(self, "_init_args", {})
        given = {**self.settings(), **{k: args[k] for k in self.bundle_args if k in args}}
        parts = []
        for key, value in given.items():
            default = defaults.get(key, inspect.Parameter.empty)
            if default is not inspect.Parameter.empty and _same(value, default):
                continue
            if key in self.reward_args and hasattr(value, "spec"):
                value = value.spec()
            elif not is_literal(value):
                _not_literal(self, key, value)
            parts.append(f"{key}={value!r}")
        return f"{class_path(type(self))}({', '.join(parts)})"

    @classmethod
    def export_score_range(cls, settings: dict[str, Any]) -> list[float | None]:
        """[low, high] of the scores; None where unbounded."""
        return [0.0, 1.0]

    @classmethod
    def check_bundle(cls, document: dict[str, Any], where: str) -> None:
        """Refuse a bundle this version of the class cannot score as it was exported (one-line ValueError)."""

    @classmethod
    def export_call(cls, settings: dict[str, Any], tokenizer: Any, **extra: Any) -> dict[str, Any]:
        """How to call the exported model without twinloop (the ``call`` block of twinloop_reward.json)."""
        return {}


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def is_literal(value: Any) -> bool:
    """A value the spec language can write and read back (``ast.literal_eval`` of its repr)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_literal(v) for k, v in value.items())
    return False


def _not_literal(reward: Any, key: str, value: Any) -> Any:
    raise ValueError(f"{type(reward).__name__}: setting {key}={type(value).__name__} is not a literal, so this "
                     "reward cannot describe itself as a spec; pass literals, or list the argument in context_args")


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, tuple):
        b = list(b)
    return type(a) is type(b) and a == b


def _defaults(cls: type) -> dict[str, Any]:
    """Constructor defaults, through ``**kwargs`` to the parent constructors that receive them."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(getattr(init, "__wrapped__", init)).parameters.values():
            if p.default is not inspect.Parameter.empty:
                out[p.name] = p.default
    return out


def setting_names(cls: type) -> list[str]:
    """The settings a reward class takes: its constructor's keywords and those ``**kwargs`` forwards to its
    parents, without the model objects and the bundle's own arguments."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        params = list(inspect.signature(getattr(init, "__wrapped__", init)).parameters.values())[1:]
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    skip = set(getattr(cls, "context_args", ())) | set(getattr(cls, "bundle_args", ()))
    return [n for n in names if n not in skip]


def _bind(cls: type, init: Any, self: Any, args: tuple, kwargs: dict[str, Any],
          partial: bool = False) -> dict[str, Any]:
    sig = inspect.signature(init)
    bound = sig.bind_partial(self, *args, **kwargs) if partial else sig.bind(self, *args, **kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            parent = next((k for k in cls.__mro__[1:] if "__init__" in k.__dict__), object)
            if parent is not object:  # fill the parent's defaults for what **kwargs forwards
                pinit = getattr(parent.__dict__["__init__"], "__wrapped__", parent.__dict__["__init__"])
                names = [p for p in inspect.signature(pinit).parameters][1:]
                inner = _bind(parent, pinit, self, (), {k: v for k, v in value.items() if k in names}, True)
                out.update({k: v for k, v in inner.items() if k not in out})
            out.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return out


def _recording_init(cls: type, init: Any) -> Any:
    @functools.wraps(init)
    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_init_args" not in self.__dict__:  # the outermost constructor records; super().__init__ calls do not
            self._init_args = _bind(cls, init, self, args, kwargs)
        init(self, *args, **kwargs)

    return recording_init


def _checked_call(call: Any) -> Any:
    @functools.wraps(call)
    def checked_call(self: Any, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any):
        return check_scores(self, call(self, prompts, completions, **columns), len(completions))

    return checked_call


def check_scores(reward: Any, scores: Any, n: int) -> list[float | None]:
    """The contract, checked where it is cheap: one score per completion, each a finite float or None.

    TRL broadcasts a wrong-length list silently; twinloop stops with a one-line error naming the reward."""
    name = getattr(reward, "__name__", None) or type(reward).__name__
    if not isinstance(scores, (list, tuple)) or len(scores) != n:
        got = f"{len(scores)} scores" if isinstance(scores, (list, tuple)) else f"a {type(scores).__name__}"
        raise ValueError(f"reward {name} returned {got} for a batch of {n} completions")
    for s in scores:
        if s is not None and not (isinstance(s, (int, float)) and math.isfinite(s)):
            raise ValueError(f"reward {name} returned a non-finite or non-numeric score {s!r} "
                             f"(batch of {n}); return a float or None")
    return list(scores)


def call_reward(reward: Any, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """Call any reward (a twinloop class or a plain function) and check its answer against the contract."""
    return check_scores(reward, reward(prompts, completions, **columns), len(completions))


def checked(reward: Any) -> Any:
    """A reward whose every call is checked against the contract: twinloop's classes already are; a plain
    function gets a wrapper with its name (TRL logs rewards by ``__name__``)."""
    if isinstance(reward, RewardBase) or not callable(reward):
        return reward

    @functools.wraps(reward)
    def checked_reward(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return call_reward(reward, prompts, completions, **columns)

    return checked_reward


def import_class(path: str, trust_remote_code: bool = False) -> Any:
    """``module:Class`` (or ``module.Class``) -> the class. Only classes under ``twinloop.`` load unless the user
    passes ``trust_remote_code`` (the rule transformers applies to remote code)."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise ValueError(f"expected 'module:Class', got {path!r}")
    if not (module == "twinloop" or module.startswith("twinloop.")) and not trust_remote_code:
        raise ValueError(f"{module}:{attr} is outside twinloop; loading it runs its code: pass "
                         "trust_remote_code=True (--trust-remote-code) if you trust it")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load {module}:{attr}: {e}") from e


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
