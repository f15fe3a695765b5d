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
    dev_problems: int | None = field(default=None, **_help("dev problems compute_optimal fits on (default 100)"))
    engine: str = field(default="vllm", **_help("offline engine when no --servers", choices=["vllm", "hf"]))
    servers: str | None = field(default=None, **_help("comma list of vLLM server URLs to shard over"))
    tokenizer: str | None = field(default=None, **_help("tokenizer folder, when it is not the checkpoint's own"))
    dtype: str = field(default="float32", **_help("model dtype"))
    max_model_len: int | None = field(default=None, **_help("engine context length (default: the model's, <= 4096)"))
    seed: int = field(default=0, **_help("engine and procedure seed"))
    no_plot: bool = field(default=False, **_help("skip the PNG"))


FIELDS = tuple(f.name for f in dataclasses.fields(EvalConfig))


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
    if recipe:
        parser.set_defaults(**recipe_defaults(recipe))
    (config,) = parser.parse_args_into_dataclasses(argv)
    return dataclasses.asdict(config)
