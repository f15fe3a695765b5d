"""The Engine contract: generation behind one small interface, with three real backends.

- ``twinloop.infer.vllm_engine.VLLMEngine``: vLLM offline (the only module that imports vllm, lazily);
- ``twinloop.infer.openai_engine.OpenAIEngine``: a client for a vLLM OpenAI-compatible server;
- ``twinloop.infer.hf_engine.HFEngine``: transformers ``generate``, the fallback.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable


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

    def validate(self) -> "SamplingConfig":
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
    finish_reason: str  # "stop" (EOS or stop string/token) or "length"
    logprobs: list[float] | None = None  # logprob of each generated token
    top_logprobs: list[dict[int, float]] | None = None  # per position, when logprobs=k>0


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0

    def add(self, other: "Usage") -> "Usage":
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


def encode_request(tokenizer: Any, request: Request) -> list[int]:
    """Token ids of a request: given ids as-is, chat messages through the chat template, text as-is."""
    if request.prompt_ids is not None:
        return list(request.prompt_ids)
    if request.messages is not None:
        ids = tokenizer.apply_chat_template(request.messages, tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    return list(tokenizer(request.text, add_special_tokens=False).input_ids)


def check_model_dir(model: str) -> None:
    """One-line error for a model folder that does not exist or lacks a config."""
    import os

    if not os.path.isdir(model):
        raise EngineError(f"model folder {model!r} does not exist (build one with `twinloop tinyworld build` "
                          f"or convert one with `twinloop import-gguf`)")
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise EngineError(f"{model!r} has no config.json: not a Hugging Face model folder")


VALID_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_dtype(dtype: str) -> str:
    if dtype not in VALID_DTYPES:
        raise EngineError(f"dtype must be one of {', '.join(VALID_DTYPES)}; got {dtype!r}")
    return dtype
