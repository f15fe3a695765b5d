"""`twinloop eval`'s settings: one dataclass, read by HfArgumentParser like the trainers' configs.

Defaults < recipe < command line: ``--recipe FILE`` sets the parser's defaults from a flat eval recipe or from a
co-design recipe's ``eval:`` section (with its shared ``task`` and ``reward``), and flags win over both.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"help": text, **extra}}


@dataclass
class EvalConfig:
    checkpoint: str | None = field(default=None, **_help("policy model folder (Hugging Face format)"))
    task: str = field(default="arith", **_help("task spec: arith, gsm8k, mmath, humaneval or rgym:NAME"))
    split: str = field(default="test", **_help("task split"))
    methods: str = field(default="greedy,majority,best_of_n",
                         **_help("comma list of search methods", aliases=["--method"]))
    budgets: str = field(default="4,8,16,32", **_help("comma list of nominal N"))
    reward: str | None = field(default=None, **_help(
        "reward spec: alias (arith_process, math, grm:ADAPTER, ...), module:Class(key=literal), bundle folder, "
        "task or none (default: arith_process on arith)"))
    n_problems: int | None = field(default=None, **_help("first N problems of the split"))
    out: str | None = field(default=None, **_help("output folder (default runs/eval-TASK); its results are resumed"))
    batch: int = field(default=32, **_help("problems per engine batch"))
    temperature: float = field(default=0.7, **_help("sampling temperature"))
    max_tokens: int = field(default=512, **_help("max generated tokens per candidate"))
    max_generated_tokens: int | None = field(default=None, **_help("per-problem cap on generated tokens"))
    max_rm_calls: int | None = field(default=None, **_help("per-problem cap on reward-model calls"))
    set: list[str] | None = field(default=None, **_help(
        "procedure settings [METHOD:]KEY=VALUE, e.g. width=4 (every method of the run that has it) or "
        "beam_search:width=4 (that method only); repeatable"))
    trust_remote_code: bool = field(default=False, **_help(
        "let a reward spec name a class outside twinloop (importing it runs its code)"))
    dev_problems: int | None = field(default=None, **_help("dev problems compute_optimal fits on (default 100)"))
    engine: str = field(default="vllm", **_help("offline engine when no --servers", choices=["vllm", "hf"]))
    servers: str | None = field(default=None, **_help("comma list of vLLM server URLs to shard over"))
    server_timeout: float = field(default=60.0, **_help(
        "seconds to wait for one server reply before a retry; a hung server fails its batch after at most "
        "(server_retries + 1) x (5 s connect + this) plus backoff"))
    server_retries: int = field(default=2, **_help("retries of a failed or timed-out server request"))
    tokenizer: str | None = field(default=None, **_help("tokenizer folder, when it is not the checkpoint's own"))
    dtype: str = field(default="float32", **_help("model dtype"))
    max_model_len: int | None = field(default=None, **_help("engine context length (default: the model's, <= 4096)"))
    seed: int = field(default=0, **_help("engine and procedure seed"))
    no_plot: bool = field(default=False, **_help("skip the PNG"))


FIELDS = tuple(f.name for f in dataclasses.fields(EvalConfig))
_KINDS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list, tuple)}


def _kind(field_type: str) -> str:
    """The settings kind of an annotation string (``int | None`` -> int)."""
    return next(k for k in ("list", "bool", "float", "int", "str") if k in field_type)


def check_types(data: dict[str, Any], where: str) -> None:
    """One-line error for a recipe value of the wrong type (argparse would not see a YAML list or number)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(EvalConfig)}
    for key, value in data.items():
        kind = _kind(types[key])
        if value is None and "None" in types[key] or key in ("methods", "budgets") and isinstance(value, (str, int)):
            continue
        ok = isinstance(value, _KINDS[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise ValueError(f"{where}: eval setting {key!r} must be {'a' if kind != 'int' else 'an'} {kind}, "
                             f"got {value!r}")


def positive_ints(text: Any, flag: str) -> list[int]:
    """``4,8,16`` -> [4, 8, 16]; one-line error unless every item is an integer >= 1."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    try:
        values = [int(x) for x in items]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{flag} wants integers >= 1 like 4,8,16,32, got {text!r}")
    return values


def check_eval_settings(opts: dict[str, Any]) -> None:
    """One-line errors for settings that cannot run, raised before anything is loaded or written."""
    if not [m for m in str(opts.get("methods") or "").split(",") if m.strip()]:
        raise ValueError("--methods is empty; give a comma list such as greedy,majority,best_of_n")
    positive_ints(opts.get("budgets"), "--budgets")
    at_least = {"n_problems": 1, "dev_problems": 1, "batch": 1, "max_tokens": 1, "max_generated_tokens": 1,
                "max_rm_calls": 0, "server_retries": 0}
    for key, low in at_least.items():
        value = opts.get(key)
        if value is not None and value < low:
            hint = " (leave it out for the whole split)" if key == "n_problems" else ""
            raise ValueError(f"--{key} must be >= {low}{hint}, got {value}")
    if opts.get("temperature") is not None and opts["temperature"] < 0:
        raise ValueError(f"--temperature must be >= 0, got {opts['temperature']}")
    if opts.get("server_timeout") is not None and opts["server_timeout"] <= 0:
        raise ValueError(f"--server_timeout must be > 0 seconds, got {opts['server_timeout']}")


def recipe_defaults(path: str) -> dict[str, Any]:
    """A recipe's eval settings in the parser's terms (lists of methods/budgets as comma strings, ``set`` as
    KEY=VALUE items). Unknown keys are a one-line error."""
    from twinloop.recipe import section

    data = {k.replace("-", "_"): v for k, v in section(path, "eval").items()}
    if "method" in data:
        data["methods"] = data.pop("method")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"recipe {path} has unknown key {unknown[0]!r}; eval settings: {', '.join(FIELDS)}")
    for key in ("methods", "budgets"):
        if isinstance(data.get(key), (list, tuple)):
            data[key] = ",".join(str(x) for x in data[key])
    if isinstance(data.get("set"), dict):
        data["set"] = [f"{k}={json.dumps(v)}" for k, v in data["set"].items()]
    check_types(data, f"recipe {path}")
    return data


def _gather_sets(argv: list[str]) -> list[str]:
    """Repeated ``--set A --set B`` into one ``--set A B`` (the parser reads a list once)."""
    sets, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--set":
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                sets.append(argv[j])
                j += 1
            i = j
        elif argv[i].startswith("--set="):
            sets.append(argv[i].partition("=")[2])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    return rest + (["--set", *sets] if sets else [])


def parse_eval_args(argv: Sequence[str]) -> dict[str, Any]:
    """The run's settings as a dict: defaults < ``--recipe`` < flags."""
    from transformers import HfArgumentParser

    argv = _gather_sets(list(argv))
    recipe = None
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            recipe, argv = argv[i + 1], argv[:i] + argv[i + 2:]
            break
        if arg.startswith("--recipe="):
            recipe, argv = arg.partition("=")[2], argv[:i] + argv[i + 1:]
            break
    parser = HfArgumentParser(EvalConfig, prog="twinloop eval")

    def one_line(message: str) -> None:  # argparse would print the whole usage and exit
        raise ValueError(f"{message} (twinloop eval --help lists the settings)")

    parser.error = one_line
    if recipe:
        parser.set_defaults(**recipe_defaults(recipe))
    (config,) = parser.parse_args_into_dataclasses(argv)
    return dataclasses.asdict(config)
