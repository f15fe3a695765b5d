"""Helpers every trainer shares: the policy's tokenizer, Arrow-safe rows, CPU flags, recipe flattening and
launch lines, and the colocated vLLM engine's shutdown. ``train/<method>.py`` files keep their method only."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch


def load_tokenizer(model_dir: str) -> Any:
    """The folder's own tokenizer. transformers 5 maps a Qwen2 config to Qwen2Tokenizer even when the folder
    saved a plain ``TokenizersBackend`` (twinloop's tiny BPE), and Qwen2's pre-tokenizer then splits numbers
    into digits the model never saw; load such folders as the plain fast tokenizer they are."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = os.path.join(model_dir, "tokenizer_config.json")
    if os.path.isfile(path) and json.load(open(path)).get("tokenizer_class") in ("TokenizersBackend",
                                                                                  "PreTrainedTokenizerFast"):
        tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
        tok.padding_side = "left"
        return tok
    return AutoTokenizer.from_pretrained(model_dir)


def arrow_safe(value: Any) -> Any:
    """Rows go through Arrow: keep JSON-like values, write anything else (Fraction, ...) as its string."""
    if isinstance(value, dict):
        return {str(k): arrow_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [arrow_safe(v) for v in value]
    return value if value is None or isinstance(value, (str, bool, int, float)) else str(value)


def cpu_overrides(argv: Sequence[str]) -> list[str]:
    """Flags that make a CUDA-less machine train (STACK.md): DDP runs with ``use_cpu`` (gloo); DeepSpeed needs
    ``use_cpu`` off (it would disable the plugin), a gloo process group and the CPU DeepSpeed accelerator.
    Flags already on the command line win."""
    if torch.cuda.is_available():
        return []
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    extra: list[str] = []
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        wanted = {"--use_cpu": "false", "--ddp_backend": "gloo"}
    else:
        wanted = {"--use_cpu": "true"}
    for flag, value in wanted.items():
        if flag not in given:
            extra += [flag, value]
    return extra


def with_flat_recipe(argv: Sequence[str], section: str) -> list[str]:
    """``--config`` of a co-design recipe (shared ``task``/``reward`` + ``train:``/``eval:``) replaced by its
    flattened section, which TrlParser reads; a plain recipe passes through."""
    import tempfile

    from twinloop.recipe import flat_config

    argv = list(argv)
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.partition("=")[2] \
            if arg.startswith("--config=") else None
        if path:
            flat = flat_config(path, section, tempfile.mkdtemp(prefix="twinloop-recipe-"))
            return argv[:i] + ["--config", flat] + argv[i + (2 if arg == "--config" else 1):]
    return argv


def launch_command(recipe: str, accelerate_config: str | None = None, num_processes: int | None = None,
                   extra: Sequence[str] = (), module: str = "twinloop.train.gppo") -> list[str]:
    """The argv that launches ``recipe``: plain python, or ``accelerate launch`` with a config file."""
    tail = ["-m", module, "--config", recipe, *extra]
    if accelerate_config is None:
        return ["python", *tail]
    head = ["accelerate", "launch", "--config_file", accelerate_config]
    if num_processes is not None:
        head += ["--num_processes", str(num_processes)]
    return head + tail


def recipe_launch_line(recipe: str) -> list[str]:
    """The first ``# Launch:`` line of a recipe header (with its ``\\`` continuations), as an argv."""
    import shlex

    lines = open(recipe).read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# Launch:"):
            text = line.split(":", 1)[1].strip()
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].lstrip("#").strip()
            return shlex.split(text)
    raise ValueError(f"{recipe} has no '# Launch:' line in its header")


def shutdown_colocated_vllm(trainer: Any) -> None:
    """Stop a trainer's colocated vLLM engine (GPPO's or stock TRL's), if it has one, while the process group
    it was set up with still exists; otherwise its exit-time shutdown finds the group gone and prints a
    traceback."""
    llm = getattr(getattr(trainer, "vllm_generation", None), "llm", None)
    if llm is not None:
        from twinloop.infer.vllm_engine import VLLMEngine

        VLLMEngine.attach(llm).shutdown_engine_core()
