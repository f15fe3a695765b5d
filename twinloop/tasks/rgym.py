"""reasoning-gym tasks (basic_arithmetic, chain_sum, countdown, gsm_symbolic, or any other generator) with
seeded train/test splits; the reward is the dataset's own ``score_answer``."""
from __future__ import annotations

from typing import Any

from twinloop.rewards.verifiable import ReasoningGymReward

FAMILY = True  # named as rgym:MEMBER; load() and reward() take the member first
DEFAULT_TASKS = ("basic_arithmetic", "chain_sum", "countdown", "gsm_symbolic")
# reasoning-gym seeds item i with (seed + i): split seeds must lie far apart or the splits overlap.
SPLIT_SEEDS = {"train": 0, "test": 1_000_000_000}
DEFAULT_SIZES = {"train": 1000, "test": 200}
INSTRUCTION = "Put your final answer within \\boxed{}."


def load(name: str, split: str = "test", n: int | None = None, seed: int | None = None,
         **config: Any) -> list[dict[str, Any]]:
    """Rows with ``prompt`` (chat messages), ``question``, ``answer``, ``metadata`` and the whole ``entry``
    (what ``score_answer`` reads). Train rows never repeat a test question. ``config`` goes to the generator."""
    import reasoning_gym

    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown reasoning-gym split {split!r}; choose from {list(SPLIT_SEEDS)}")
    size = DEFAULT_SIZES[split] if n is None else n
    base_seed = SPLIT_SEEDS[split] if seed is None else seed

    def generate(count: int, data_seed: int) -> list[dict[str, Any]]:
        try:
            data = reasoning_gym.create_dataset(name, size=count, seed=data_seed, **config)
        except Exception as e:  # noqa: BLE001 - unknown name or bad config: one clear line
            raise ValueError(f"cannot create reasoning-gym dataset {name!r}: {e}") from None
        return [data[i] for i in range(count)]

    if split == "train":  # a few spare items replace the ones that repeat a test question
        test_questions = {e["question"] for e in generate(DEFAULT_SIZES["test"], SPLIT_SEEDS["test"])}
        entries = [e for e in generate(size + 64, base_seed) if e["question"] not in test_questions][:size]
    else:
        entries = generate(size, base_seed)
    return [
        {
            "id": f"{name}-{split}-{i}",
            "prompt": [{"role": "user", "content": f"{e['question']}\n\n{INSTRUCTION}"}],
            "question": e["question"],
            "answer": str(e["answer"]),
            "metadata": e["metadata"],
            "entry": e,
        }
        for i, e in enumerate(entries)
    ]


def reward(name: str) -> ReasoningGymReward:
    return ReasoningGymReward(name)
