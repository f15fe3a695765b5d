"""Engine helpers shared by the backends; the Engine protocol and its types live in ``twinloop.contracts``.

- ``twinloop.infer.vllm_engine.VLLMEngine``: vLLM offline (the only module that imports vllm, lazily);
- ``twinloop.infer.openai_engine.OpenAIEngine``: a client for a vLLM OpenAI-compatible server;
- ``twinloop.infer.hf_engine.HFEngine``: transformers ``generate``, the fallback.
"""
from __future__ import annotations

from typing import Any

from twinloop.contracts import (  # noqa: F401  (re-exported: the backends and search procedures import them here)
    Completion,
    Engine,
    EngineError,
    Request,
    Result,
    SamplingConfig,
    Usage,
    as_requests,
    renormalize,
)


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


def free_port() -> int:
    """An OS-assigned free TCP port on 127.0.0.1 (servers, and a colocated engine's single-process group: TRL
    tries 29500 first, which two runs started together both get)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lora_rank(adapter: str, floor: int = 8) -> int:
    """The engine's max LoRA rank for an adapter folder: its own ``r`` rounded up to a power of two (vLLM wants
    one of 8, 16, 32, ...). The one LoRA-rank rule, for eval and for exported judges alike."""
    import json
    import os

    try:
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            r = int(json.load(f).get("r", floor))
    except (OSError, ValueError):
        r = floor
    return max(floor, 1 << (r - 1).bit_length())


def finish_reason(raw: Any) -> str:
    """A backend's finish reason in the contract's words: "stop" (EOS, stop string or stop token) and
    "length" pass through; anything else ("abort", or None for an unfinished output) is "abort", so a
    request the server dropped is never mistaken for a response that ended at EOS."""
    raw = None if raw is None else str(raw).lower()
    return raw if raw in ("stop", "length") else "abort"


def check_model_dir(model: str) -> None:
    """One-line error for a model folder that does not exist or lacks a config."""
    import os

    if not os.path.isdir(model):
        raise EngineError(f"model folder {model!r} does not exist (build one with `twinloop tinyworld build` "
                          f"or convert one with `twinloop import-gguf`)")
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise EngineError(f"{model!r} has no config.json: not a Hugging Face model folder")


def check_policy_dir(model: str) -> None:
    """``check_model_dir`` plus one-line errors for a reward model given where a policy belongs: a classifier
    (``*ForSequenceClassification``/``*ForTokenClassification``: a scalar RM or PRM) or a classifier bundle."""
    import json
    import os

    check_model_dir(model)
    try:
        arch = (json.load(open(os.path.join(model, "config.json"))).get("architectures") or [""])[0]
    except (OSError, ValueError, AttributeError) as e:
        raise EngineError(f"{model!r}: config.json is unreadable ({type(e).__name__}: {e})") from e
    if arch.endswith(("ForSequenceClassification", "ForTokenClassification")):
        raise EngineError(f"{model!r} is a reward model ({arch}), not a policy: give it as the reward "
                          "(--reward FOLDER, reward_funcs) and a causal LM folder as the policy")


VALID_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_dtype(dtype: str) -> str:
    if dtype not in VALID_DTYPES:
        raise EngineError(f"dtype must be one of {', '.join(VALID_DTYPES)}; got {dtype!r}")
    return dtype
