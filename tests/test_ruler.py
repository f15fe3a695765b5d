"""RULER needle-in-a-haystack and variable tracking from the nvidia-long-context-eval generators (offline)."""
import importlib.util
import sys

import pytest

from twinloop.tasks import ruler


def test_niah_rows_hold_the_needle_and_fit_the_length():
    rows = ruler.load("test", n=3, seed=0, name="niah_single_1", max_seq_length=300)
    assert len(rows) == 3
    for r in rows:
        (gold,) = r["outputs"]
        assert gold.isdigit() and gold in r["context"] and gold not in r["question"]
        assert r["prompt"][0]["content"] == r["context"] + r["question"]
        assert len(r["prompt"][0]["content"].split()) <= 300
        assert r["answer_prefix"].startswith("The special magic number for")
    assert ruler.load("test", n=3, seed=0, name="niah_single_1", max_seq_length=300) == rows  # seeded
    assert ruler.load("dev", n=3, seed=0, name="niah_single_1", max_seq_length=300) != rows
    assert "tokenizer" not in sys.modules  # the stand-in module is gone again
    if importlib.util.find_spec("nltk") is None:
        assert "nltk" not in sys.modules


def test_variable_tracking_chain_is_in_the_context():
    (r,) = ruler.load("test", n=1, seed=0, name="vt", max_seq_length=1100)
    assert len(r["outputs"]) == 5
    for var in r["outputs"]:
        assert f"VAR {var} =" in r["context"]
    assert r["question"].startswith("\nQuestion: Find all variables")


def test_bad_settings_fail_in_one_line():
    with pytest.raises(ValueError, match="unknown RULER task"):
        ruler.load(name="cwe")
    with pytest.raises(ValueError, match="max_seq_length >= 1024"):
        ruler.load(name="vt", max_seq_length=400)
    with pytest.raises(ValueError, match="splits"):
        ruler.load("train")


def test_sentence_splitter_and_match_all_reward():
    assert ruler.split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]
    reward = ruler.reward()
    assert reward(["p", "p"], ["they are: abc, XYZ", "abc"], outputs=[["ABC", "xyz"], ["abc", "def"]]) == [1.0, 0.5]
