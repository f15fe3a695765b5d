"""twinloop's key-value retrieval task: find one key's code among distractor keys hidden in filler text.

A context holds ``n_keys`` lines "The code for KEY is NNNN." scattered through filler sentences until it is about
``context_words`` words long; the question asks for one key's code. ``n_keys - 1`` keys are distractors: the
failure attention dilution causes is returning another key's code. Rows carry ``context`` and ``question``
separately (a long-context method prefills the first and decodes after the second) and ``answer_prefix``
("The code for KEY is") for models that ramble without it.
"""
from __future__ import annotations

import random
import re
from typing import Any

from twinloop.rewards.base import RewardBase, column, message_text

SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}
KEYS = ("river apple garden window silver rocket candle forest mirror ladder pencil island tiger violin planet "
        "bridge castle desert engine falcon glacier harbor jacket kettle lemon magnet needle orchard pepper quartz "
        "saddle tunnel velvet walnut yacht anchor basket cactus dragon eagle feather guitar hammer igloo jungle "
        "koala lantern meadow nectar otter").split()
FILLER = (
    "The grass is green and the sky is blue.", "The sun rose slowly over the quiet hills.",
    "Many people enjoy walking in the park on weekends.", "A cup of tea can be very relaxing.",
    "The train arrived at the station a few minutes late.", "Birds were singing in the trees.",
    "The library was full of students preparing for exams.", "It rained for most of the afternoon.",
    "The old clock on the wall ticked loudly.", "She painted the fence a bright shade of white.",
    "The market sells fresh bread every morning.", "Children played football in the street.",
    "The river flows gently toward the sea.", "He read the newspaper while drinking coffee.",
    "The mountains were covered with snow in winter.", "A small boat drifted across the lake.",
    "The museum opens at nine o'clock.", "Dinner was served on the terrace.",
    "The wind carried the smell of the ocean.", "The city lights sparkled at night.",
)
INSTRUCTION = "Read the text below and answer the question."


def make_item(rng: random.Random, context_words: int, n_keys: int) -> dict[str, Any]:
    """One item: ``n_keys`` code lines in filler of about ``context_words`` words (pure given ``rng``)."""
    if not 1 <= n_keys <= len(KEYS):
        raise ValueError(f"n_keys must be in [1, {len(KEYS)}], got {n_keys}")
    if context_words < 1:
        raise ValueError(f"context_words must be positive, got {context_words}")
    keys = rng.sample(KEYS, n_keys)
    codes = [str(rng.randint(1000, 9999)) for _ in keys]
    lines = [f"The code for {k} is {c}." for k, c in zip(keys, codes)]
    sentences, words = [], sum(len(s.split()) for s in lines)
    while words < context_words:
        sentences.append(rng.choice(FILLER))
        words += len(sentences[-1].split())
    for line in lines:
        sentences.insert(rng.randint(0, len(sentences)), line)
    asked = rng.randrange(n_keys)
    return {"context": f"{INSTRUCTION}\n\n" + " ".join(sentences),
            "question": f"\n\nQuestion: What is the code for {keys[asked]}?",
            "key": keys[asked], "answer": codes[asked], "answer_prefix": f"The code for {keys[asked]} is",
            "n_keys": n_keys, "context_words": context_words}


def load(split: str = "test", n: int | None = None, seed: int | None = None, context_words: int = 200,
         n_keys: int = 8) -> list[dict[str, Any]]:
    """``n`` rows (default 200) with a chat ``prompt`` (context + question) and the columns of ``make_item``.
    Splits draw from disjoint seeds; ``seed`` shifts them (settings [check]: 200 words, 8 keys)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"kv_retrieval splits are {list(SPLIT_SEEDS)}, not {split!r}")
    rng = random.Random(f"kv_retrieval/{split}/{SPLIT_SEEDS[split] + 1000 * (seed or 0)}/{context_words}/{n_keys}")
    rows = []
    for i in range(200 if n is None else n):
        item = make_item(rng, context_words, n_keys)
        item["id"] = f"kv-{split}-{i}"
        item["prompt"] = [{"role": "user", "content": item["context"] + item["question"]}]
        rows.append(item)
    return rows


_NUMBER = re.compile(r"\d+")


class RetrievalReward(RewardBase):
    """1.0 when the first number in the completion is the gold code, else 0.0; a completion without a number
    counts as unparseable (``usage.unparseable``) and scores 0.0."""

    name = "kv_retrieval"

    def __call__(self, prompts, completions, **columns) -> list[float]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        golds = column(columns, ("answer",), len(completions))
        out = []
        for completion, gold in zip(completions, golds):
            match = _NUMBER.search(message_text(completion))
            if match is None:
                self.usage.unparseable += 1
            out.append(1.0 if match is not None and match.group(0) == str(gold) else 0.0)
        return out


def reward() -> RetrievalReward:
    return RetrievalReward()
