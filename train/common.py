"""Helpers every trainer shares: the policy's tokenizer, Arrow-safe rows, CPU flags, recipe flattening and
launch lines, and the colocated vLLM engine's shutdown. ``train/<method>.py`` files keep their method only."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def config_path(argv: Sequence[str]) -> str | None:
    """The ``--config FILE`` of an argv, if any."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
    return None


_VALUE_KINDS = ("list", "dict", "bool", "float", "int", "str")


def _value_problem(annotation: Any, value: Any) -> str | None:
    """What is wrong with a recipe value for a field of this annotation; None when it fits or the annotation is
    not one plain kind (then argparse and the config's own checks judge it)."""
    text = annotation if isinstance(annotation, str) else str(annotation)
    text = text.replace("Optional", "").replace("None", "").replace("NoneType", "")
    kinds = [k for k in _VALUE_KINDS if k in text and not (k == "int" and "Interval" in text)]
    if len(kinds) != 1 or value is None:
        return None
    kind = kinds[0]
    if kind in ("int", "float"):
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            return f"must be a number ({kind})"
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return f"must be a number ({kind})"
            value = number
        if kind == "int" and float(value) != int(float(value)):
            return "must be an integer"
        return None
    if kind == "bool":
        ok = isinstance(value, bool) or str(value).lower() in ("true", "false", "yes", "no", "1", "0")
        return None if ok else "must be true or false"
    if kind == "str":
        return "must be a string" if isinstance(value, (list, dict)) else None
    return None if isinstance(value, (list, tuple) if kind == "list" else dict) else f"must be a {kind}"


def parse_config(parser_types: tuple, argv: Sequence[str], recipe: str | None = None) -> tuple:
    """TrlParser over ``parser_types`` with one-line errors naming the recipe: an unknown key, a value of the wrong
    type (YAML lists and numbers never reach argparse's own type check) and a bad command-line flag. Nothing
    is loaded before these checks."""
    import dataclasses

    import yaml
    from trl import TrlParser

    argv = list(argv)
    recipe = recipe or config_path(argv)
    where = f"recipe {recipe}" if recipe else "command line"
    path = config_path(argv)
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"recipe {recipe} not found")
        data = yaml.safe_load(open(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"recipe {recipe} must be a mapping of settings, got {type(data).__name__}")
        fields = {f.name: f.type for t in parser_types for f in dataclasses.fields(t)}
        unknown = sorted(set(data) - set(fields) - {"env"})
        if unknown:
            raise ValueError(f"recipe {recipe} has unknown key {unknown[0]!r}; remove it or fix its spelling "
                             "(--help lists the settings)")
        for key, value in data.items():
            problem = key in fields and _value_problem(fields[key], value)
            if problem:
                raise ValueError(f"recipe {recipe}: {key} {problem}, got {value!r}")
    parser = TrlParser(parser_types)

    def one_line(message: str) -> None:  # argparse would print the whole usage and exit
        raise ValueError(f"{where}: {message}")

    parser.error = one_line
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as e:
        text = str(e)
        if "not used by the HfArgumentParser" in text:
            raise ValueError(f"unknown command-line flag(s) {text.partition(': ')[2]} (--help lists the settings)") \
                from None
        raise


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


@contextmanager
def cpu_safe_colocate(cfg: Any) -> Iterator[None]:
    """Wrap a GRPOTrainer subclass's `super().__init__` so that colocated vLLM starts on CPU: a free MASTER_PORT for
    a single process (parallel runs must not share TRL's default 29500), the configured dtype, and eager mode
    (torch.compile's warm-up costs far more than it saves here)."""
    extra: dict[str, Any] = {}
    if cfg is not None and cfg.use_vllm and cfg.vllm_mode == "colocate":
        single = os.environ.get("WORLD_SIZE", "1") == "1" and not torch.distributed.is_initialized()
        if single and os.environ.get("MASTER_PORT", "29500") in ("29500", "auto", "0"):
            from twinloop.infer.engine import free_port

            os.environ["MASTER_PORT"] = str(free_port())
        if cfg.vllm_dtype is not None:
            extra["dtype"] = cfg.vllm_dtype
        if not torch.cuda.is_available():
            extra["enforce_eager"] = True
    if not extra:
        yield
        return
    from twinloop.train.vllm_sync import colocated_llm_kwargs

    with colocated_llm_kwargs(**extra):
        yield


def finish_cpu_colocate(trainer: Any) -> None:
    """After the trainer is built: route colocated vLLM's weight sync through the Engine on CPU (train/vllm_sync)."""
    if trainer.use_vllm and trainer.args.vllm_mode == "colocate" and trainer.accelerator.device.type == "cpu":
        from twinloop.train.vllm_sync import patch_colocate_sync_for_cpu

        patch_colocate_sync_for_cpu(trainer.vllm_generation)
