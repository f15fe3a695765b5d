"""CPU fix for TRL's colocated-vLLM weight sync (vllm_mode="colocate").

TRL 1.16 pushes each parameter with ``model_runner.model.load_weights([(name, param)])``. On CPU, vLLM repacks
its linear weights (oneDNN) and leaves ``layer.weight`` empty, so that call fails (STACK.md). The working path
is the Engine's own weight sync, ``VLLMEngine.load_weights``: ``collective_rpc("reload_weights", ...)`` with all
tensors at once, then a re-pack of a tied ``lm_head``, then a prefix-cache reset. This module routes TRL's
colocated sync through it; vLLM itself is imported only by ``twinloop.infer.vllm_engine``.
"""
from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twinloop.infer.vllm_engine import VLLMEngine


def sync_weights(generation: Any) -> None:
    """Replacement for ``VLLMGeneration.sync_weights`` in colocate mode (all ranks iterate, as TRL gathers
    ZeRO-3 parameters collectively)."""
    weights = [(name, param.detach().clone()) for name, param in generation._iter_named_params()]
    VLLMEngine.attach(generation.llm).load_weights(weights)


def patch_colocate_sync_for_cpu(generation: Any) -> Any:
    """Patch one TRL ``VLLMGeneration`` instance (not the class: other trainers in the process are untouched).
    Server mode keeps TRL's own path. Returns the instance."""
    if getattr(generation, "mode", None) != "colocate":
        return generation
    generation.sync_weights = types.MethodType(sync_weights, generation)
    return generation


@contextmanager
def colocated_llm_kwargs(**extra: Any) -> Iterator[None]:
    """Extra ``vllm.LLM`` arguments for the colocated engine TRL builds inside ``GRPOTrainer.__init__`` (TRL
    passes no dtype, and vLLM downcasts float32 checkpoints to 16-bit by default: then its logprobs differ from
    the float32 trainer's by ~0.1)."""
    from trl.generation import vllm_generation as vg

    original = vg.LLM
    vg.LLM = functools.partial(original, **extra)
    try:
        yield
    finally:
        vg.LLM = original
