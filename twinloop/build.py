"""The one builder: reward, task and engine specs become objects here, for every entry point.

A **reward spec** is one of
- a short alias from ``REWARD_ALIASES`` (``math``, ``arith_process``, ``grm``, ...), optionally with keyword
  literals (``arith_process(aggregation='mean')``) or, for model judges, a LoRA adapter or bundle folder
  (``grm:runs/grm-lora``);
- ``module:Class(key=literal, ...)``: any reward class; only classes under ``twinloop.`` load unless
  ``trust_remote_code`` is passed (the transformers rule);
- a reward bundle folder (``twinloop export`` or a trainer's output, with ``twinloop_reward.json``);
- ``task``: the task's own verifiable reward; ``none``: no reward.

Every reward says its own spec (``reward.spec()``) and ``build_reward(reward.spec(), ...)`` rebuilds it with the
same scores. Model objects are not part of a spec: a judge that runs on an engine gets it as ``engine=``.

A **task spec** is a module name under ``twinloop.tasks`` (``arith``, ``gsm8k``, ``mmath``, ``humaneval``) or a
family with its member (``rgym:countdown``). An **engine spec** is ``vllm:MODEL``, ``hf:MODEL``, ``openai:URL``
or a model folder (vLLM).
"""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinloop.rewards import REWARD_ALIASES
from twinloop.rewards.base import import_class
from twinloop.tasks import build_task

BUNDLE_FILE = "twinloop_reward.json"


# ------------------------------------------------------------------------------------------------ parsing
def split_call(spec: str) -> tuple[str, dict[str, Any]]:
    """``head(key=literal, ...)`` -> (``head``, keyword arguments); no parentheses, no arguments."""
    head, paren, tail = spec.strip().partition("(")
    if not paren:
        return head.strip(), {}
    try:
        call = ast.parse(f"f({tail}", mode="eval").body
        if not isinstance(call, ast.Call) or call.args:
            raise ValueError
        return head.strip(), {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"expected 'module:Class(key=literal, ...)' or 'alias(key=literal, ...)', got {spec!r}") from e


@dataclass(frozen=True)
class RewardSpec:
    """A parsed reward spec: a class path with keywords, a bundle folder, or nothing."""

    class_path: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()
    bundle: str | None = None
    task: bool = False


def parse_reward_spec(spec: str) -> RewardSpec | None:
    """The spec, resolved through the alias dict; None for ``none``. Raises a one-line ValueError."""
    text = str(spec).strip()
    if not text or text == "none":
        return None
    if text == "task":
        return RewardSpec(task=True)
    head, kwargs = split_call(text)
    name, colon, rest = head.partition(":")
    if name in REWARD_ALIASES:
        path, base_kwargs = split_call(REWARD_ALIASES[name])
        kwargs = {**base_kwargs, **kwargs}
        if colon:  # NAME:ADAPTER -> a LoRA adapter (a bundle folder when it holds twinloop_reward.json)
            if not Path(rest).is_dir():
                raise FileNotFoundError(f"adapter folder {rest} of reward spec {text!r} not found")
            if Path(rest, BUNDLE_FILE).is_file():
                return RewardSpec(bundle=rest, kwargs=tuple(kwargs.items()))
            kwargs["lora"] = rest
        return RewardSpec(class_path=path, kwargs=tuple(kwargs.items()))
    if not colon and Path(head).is_dir():
        if not Path(head, BUNDLE_FILE).is_file():
            raise FileNotFoundError(f"{head} has no {BUNDLE_FILE}: not a twinloop reward bundle")
        return RewardSpec(bundle=head, kwargs=tuple(kwargs.items()))
    if colon and "." in name or (colon and name.isidentifier() and rest.isidentifier()):
        return RewardSpec(class_path=head, kwargs=tuple(kwargs.items()))
    raise ValueError(f"unknown reward {text!r}: use an alias ({', '.join(REWARD_ALIASES)}, task, none), "
                     "module:Class(key=literal, ...) or a reward bundle folder")


# ------------------------------------------------------------------------------------------------ rewards
def reward_class(spec: str, trust_remote_code: bool = False) -> type | None:
    """The class a spec names, without building it (validates the spec; None for none/task/bundles)."""
    parsed = parse_reward_spec(spec)
    if parsed is None or parsed.class_path is None:
        return None
    return import_class(parsed.class_path, trust_remote_code)


def build_reward(spec: str | None, *, task: str | None = None, engine: Any = None, model: Any = None,
                 tokenizer: Any = None, trust_remote_code: bool = False, context: dict[str, Any] | None = None,
                 **engine_options: Any) -> Any:
    """The reward a spec names. ``task`` serves ``task``; ``engine``/``model``/``tokenizer`` and any other
    ``context`` objects (e.g. a calibrated reward's ``references``) are given to the classes whose constructor
    takes them. ``engine_options`` go to ``twinloop.checkpoints.export.load_reward`` for bundles (backend,
    dtype, base_model, ...)."""
    parsed = parse_reward_spec(spec) if spec is not None else None
    if parsed is None:
        return None
    if parsed.task:
        if task is None:
            raise ValueError("reward spec 'task' needs a task (the task's own verifiable reward)")
        return build_task(task).reward()
    kwargs = dict(parsed.kwargs)
    if parsed.bundle is not None:
        from twinloop.checkpoints.export import load_reward

        # a judge LM (a LoRA on the policy, say) runs on the given engine; a classifier RM loads its own weights
        # unless the engine pools (load_reward decides, so every entry point gets the same rule)
        return load_reward(parsed.bundle, engine=engine, trust_remote_code=trust_remote_code, **engine_options,
                           **kwargs)
    cls = import_class(parsed.class_path, trust_remote_code)
    params = inspect.signature(cls).parameters
    for key in getattr(cls, "reward_args", ()):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = build_reward(kwargs[key], task=task, engine=engine, model=model, tokenizer=tokenizer,
                                       trust_remote_code=trust_remote_code, context=context, **engine_options)
    given = {"engine": engine, "model": model, "tokenizer": tokenizer, **(context or {})}
    for key, value in given.items():
        if value is not None and key in params and key not in kwargs:
            kwargs[key] = value
    needs = [p.name for p in params.values() if p.default is inspect.Parameter.empty
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
    if needs:
        raise ValueError(f"reward {spec!r} ({cls.__name__}) needs {', '.join(needs)}: a model judge runs on an "
                         "engine (twinloop eval passes the policy's own)")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"reward {spec!r}: {e}") from e


def build_rewards(specs: list[str] | tuple[str, ...], **context: Any) -> list[Any]:
    return [build_reward(s, **context) for s in specs]


# ------------------------------------------------------------------------------------------------ engines
ENGINE_SCHEMES = ("vllm", "hf", "openai")


def build_engine(spec: str, **kwargs: Any) -> Any:
    """``vllm:MODEL`` (also a bare model folder), ``hf:MODEL`` (transformers ``generate``) or ``openai:URL`` (a
    running vLLM server; give ``tokenizer=``); ``kwargs`` go to the engine's constructor."""
    scheme, colon, target = str(spec).partition(":")
    if not colon or scheme not in ENGINE_SCHEMES:
        scheme, target = "vllm", str(spec)
    if scheme == "openai":
        from twinloop.infer.openai_engine import OpenAIEngine

        return OpenAIEngine(target, **kwargs)
    if scheme == "hf":
        from twinloop.infer.hf_engine import HFEngine

        return HFEngine(target, **kwargs)
    from twinloop.infer.vllm_engine import VLLMEngine

    return VLLMEngine(target, **kwargs)
