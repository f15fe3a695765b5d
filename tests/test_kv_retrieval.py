"""The key-value retrieval task: settable length and distractors, seeded disjoint splits, its reward."""
import random

import pytest

from twinloop.build import build_task
from twinloop.tasks.kv_retrieval import make_item


def test_length_and_distractors_are_settable():
    for words, keys in ((100, 2), (400, 16), (1500, 32)):
        item = make_item(random.Random(0), words, keys)
        n_words = len(item["context"].split())
        assert words <= n_words <= words + 40  # instruction + one overshooting sentence
        assert item["context"].count("The code for ") == keys
        line = f"The code for {item['key']} is {item['answer']}."
        assert item["context"].count(line) == 1
        assert item["answer_prefix"] == f"The code for {item['key']} is"
    with pytest.raises(ValueError, match="n_keys"):
        make_item(random.Random(0), 100, 0)


def test_splits_are_seeded_and_disjoint():
    task = build_task("kv_retrieval")
    a, b = task.load("test", n=20, seed=0), task.load("test", n=20, seed=0)
    assert a == b
    assert {r["context"] for r in a}.isdisjoint(r["context"] for r in task.load("train", n=50))
    assert a != task.load("test", n=20, seed=1)
    assert a[0]["prompt"][0]["content"] == a[0]["context"] + a[0]["question"]
    with pytest.raises(ValueError, match="splits"):
        task.load("valid")


def test_reward_scores_the_first_number_and_counts_unparseable():
    reward = build_task("kv_retrieval").reward()
    scores = reward(["p"] * 4, [" 4821.", "The code is 1234, not 4821", "no idea", [{"role": "assistant",
                                                                                   "content": "4821"}]],
                    answer=["4821"] * 4)
    assert scores == [1.0, 0.0, 0.0, 1.0]
    assert reward.usage.unparseable == 1
    with pytest.raises(ValueError, match="answer"):
        reward(["p"], ["1"])
