"""The bottom of twinloop: the Engine protocol and its request/result types. Imports nothing of twinloop's.

Rewards that run a model (generative, pairwise, self-eval, calibrated, recompute) take any object satisfying
``Engine`` and build ``Request``/``SamplingConfig`` from here, so they never import ``twinloop.infer``. The
backends live in ``twinloop.infer`` (vLLM offline, an OpenAI-compatible client, transformers ``generate``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class EngineError(RuntimeError):
    """A one-line, actionable engine error (bad model folder, bad sampling value, unreachable server)."""


@dataclass
class SamplingConfig:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # None: no logprobs; 0: chosen token only; k: chosen + top-k
    seed: int | None = None
    allowed_token_ids: list[int] | None = None

    def validate(self) -> SamplingConfig:
        if self.n < 1:
            raise EngineError(f"sampling n must be >= 1, got {self.n}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise EngineError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise EngineError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise EngineError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.logprobs is not None and self.logprobs < 0:
            raise EngineError(f"logprobs must be None or >= 0, got {self.logprobs}")
        if self.allowed_token_ids is not None and not self.allowed_token_ids:
            raise EngineError("allowed_token_ids must be a non-empty list (or None)")
        return self


@dataclass
class Request:
    """One prompt: token ids (preferred: prefix caching hits on exact ids), chat messages, or raw text."""

    prompt_ids: list[int] | None = None
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    lora: str | None = None  # path of a peft adapter folder, or None for the base model

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.prompt_ids, self.messages, self.text))
        if given != 1:
            raise EngineError("a Request needs exactly one of prompt_ids, messages or text")


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (EOS or stop string/token), "length" (max_tokens) or "abort" (dropped by the backend)
    logprobs: list[float] | None = None  # logprob of each generated token
    top_logprobs: list[dict[int, float]] | None = None  # per position, when logprobs=k>0


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0

    def add(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.generated_tokens += other.generated_tokens
        return self


@dataclass
class Result:
    prompt_ids: list[int]
    completions: list[Completion]
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class Engine(Protocol):
    """What search procedures, generative rewards and trainers rely on."""

    tokenizer: Any

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Result]: ...

    def continuation_logprobs(
        self, prefixes: Sequence[list[int]], continuations: Sequence[list[int]], lora: str | None = None
    ) -> list[list[float]]: ...

    def next_token_logprobs(
        self, prefixes: Sequence[list[int]], token_ids: Sequence[int], lora: str | None = None
    ) -> list[list[float]]: ...

    def close(self) -> None: ...


def as_requests(prompts: Sequence[Any], lora: str | None = None) -> list[Request]:
    """Token-id lists, chat message lists or strings into Requests."""
    out = []
    for p in prompts:
        if isinstance(p, Request):
            out.append(p)
        elif isinstance(p, str):
            out.append(Request(text=p, lora=lora))
        elif p and isinstance(p[0], dict):
            out.append(Request(messages=list(p), lora=lora))
        else:
            out.append(Request(prompt_ids=[int(t) for t in p], lora=lora))
    return out


def renormalize(logprobs: Sequence[float]) -> list[float]:
    """Log-softmax over a handful of choice logprobs (forced-choice probes)."""
    m = max(logprobs)
    z = m + math.log(sum(math.exp(x - m) for x in logprobs))
    return [x - z for x in logprobs]
