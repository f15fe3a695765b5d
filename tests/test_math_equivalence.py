"""MathReward against math-verify: the equivalence set in tests/data/math_equivalence.jsonl, the integer fast
path, exact big integers, and linear-time extraction on megabyte inputs (issue 14 §1)."""
import random
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twinloop.rewards.answers import answer_span, boxed_spans, canonical_answer, integer_key
from twinloop.rewards.verifiable import MathReward, NumericReward, extract_answer, last_boxed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import math_equivalence  # noqa: E402

HANG_GUARD_S = 5.0  # a hang guard only: the linear extractors take milliseconds here, the old ones hours
MB = 1 << 20


def test_agreement_with_the_expected_verdict_is_within_a_point_of_math_verify():
    cases = math_equivalence.load_cases()
    assert len(cases) >= 150
    hits = math_equivalence.agreement(cases)
    n = len(cases)
    ours = sum(x for h in hits.values() for x in h["twinloop"]) / n
    theirs = sum(x for h in hits.values() for x in h["math_verify_wrapped"]) / n
    assert ours >= theirs - 0.01 and ours >= 0.97, (ours, theirs)
    # where the two differ, it is on purpose: \fbox, integers past Python's 4,300-digit str limit, GSM8K's ####
    differ = [c for c in cases if c["twinloop"] != c["math_verify_wrapped"]]
    assert {(c["category"], c["completion"][:12]) for c in differ} == {
        ("boxed", "We check: \\f"), ("big_int", "So \\boxed{11"), ("near_miss", "#### 6\nso 5 ")}
    assert all(c["twinloop"] == c["expected"] for c in differ)


def _integer_spellings(value: int, rng: random.Random) -> str:
    digits = str(abs(value))
    grouped = f"{abs(value):,}" if abs(value) >= 1000 and rng.random() < 0.5 else digits
    if rng.random() < 0.2 and value >= 0 and "," not in grouped:
        grouped = "0" + grouped  # a leading zero
    return ("-" if value < 0 else "") + grouped


def test_the_integer_fast_path_gives_math_verifys_verdict():
    rng = random.Random(0)
    reward = MathReward()
    forms = ["So \\boxed{{{}}}.", "#### {}", "Thus $\\boxed{{{}}}$", "\\fbox{{{}}}", "the total is \\boxed{{ {} }}"]
    checked = 0
    for _ in range(150):
        gold = rng.choice([rng.randint(-50, 50), rng.randint(-10**6, 10**6), rng.randint(0, 10**30)])
        pred = rng.choice([gold, gold + 1, -gold, gold * 10, gold + 10**25])
        gold_text = rng.choice(["{}", "\\boxed{{{}}}", "Worked out.\n#### {}"]).format(_integer_spellings(gold, rng))
        completion = rng.choice(forms).format(_integer_spellings(pred, rng))
        fast = reward.verdict(gold_text, completion)
        slow = reward.verdict(gold_text, completion, fast_path=False)
        assert fast == slow == (gold == pred), (gold_text, completion, fast, slow)
        checked += 1
    assert checked == 150


def test_integers_compare_exactly():
    reward = MathReward()
    big = 10**20
    assert reward(["p"] * 3, [f"\\boxed{{{big}}}", f"#### {big + 1}", f"\\boxed{{{big + 1}}}"],
                  answer=[str(big + 1)] * 3) == [0.0, 1.0, 1.0]
    huge = "9" * 10_000  # past int()'s 4,300-digit limit: the old reward raised OverflowError
    assert reward(["p"] * 3, [f"\\boxed{{{huge}}}", f"\\boxed{{{huge[:-1]}8}}", f"#### {huge}"],
                  answer=[huge] * 3) == [1.0, 0.0, 1.0]
    assert integer_key("1,234") == "1234" and integer_key("007") == "7" and integer_key("-7") == "-7"
    assert integer_key("$42$.") == "42" and integer_key("+5") is None
    assert integer_key("0,111") is None and integer_key("12,34") is None and integer_key("4.0") is None
    assert NumericReward()(["p"], [f"\\boxed{{{huge}}}"], answer=["1"]) == [0.0]  # no OverflowError either


def test_canonical_answer_keeps_lists_and_words_apart():
    assert canonical_answer("32, 349") == "32, 349" != canonical_answer("32349")
    assert canonical_answer("32,349") == "32349"
    assert canonical_answer("0,111") == "0, 111"  # not a thousands grouping
    assert canonical_answer("28 percent") == canonical_answer("28\\%") == "28%"
    assert canonical_answer("x + 1") == canonical_answer("x+1") == "x+1"
    assert canonical_answer("5 cm") == "5 cm"
    assert canonical_answer(str(10**20 + 1)) == "100000000000000000001"
    assert canonical_answer("42.50") == "42.5" and canonical_answer("-0.0") == "0" and canonical_answer(".5") == "0.5"
    assert extract_answer("Final Answer: The final answer is $42$. I hope it is correct.") == "42"
    assert extract_answer("\\boxed{1}, \\boxed{2}") == "1, 2"


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(list("0123456789-+., {}$\\%abcx") + [" percent", "\\frac", "{,}", "\\text{"]),
               max_size=25).map("".join))
def test_canonical_answer_is_idempotent(text):
    once = canonical_answer(text)
    assert canonical_answer(once) == once


def test_boxed_spans_balance_nesting_in_one_pass():
    text = "a \\boxed{\\frac{1}{\\boxed{2}}} b \\fbox{3} c \\boxed 45 d \\boxed{"
    spans = boxed_spans(text)
    contents = [(text[s[1]:s[2]], s[4]) for s in spans]
    assert contents == [("\\frac{1}{\\boxed{2}}", True), ("2", False), ("3", True), ("45", True)]
    assert last_boxed(text) == "45" and last_boxed("\\boxed{\\boxed{2}}") == "2"
    assert last_boxed("\\boxed{1} \\boxed{") == "1"


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    elapsed = time.perf_counter() - start
    assert elapsed < HANG_GUARD_S, f"{fn.__name__} took {elapsed:.1f} s on {len(args[0])} characters"
    return out


MEGABYTE_INPUTS = {
    "open boxes": ("\\boxed{" * (MB // 7), None, None),
    "open boxes, then an answer": ("\\boxed{" * (MB // 7) + " \\boxed{42}", "42", 1.0),
    "nested braces": ("\\boxed{" + "{" * (MB // 2) + "42" + "}" * (MB // 2) + "}",
                      "{" * (MB // 2) + "42" + "}" * (MB // 2), None),
    "display math openers": ("\\[" * (MB // 2), None, None),
    "digits in a box": ("\\boxed{" + "7" * MB + "}", "7" * MB, 0.0),
    "answer words": ("The answer is " * (MB // 14) + "42.", "42", 1.0),
    "hashes": ("#### " * (MB // 5) + "42", "42", 1.0),
    "spaces": (" " * MB + "\\boxed{42}", "42", 1.0),
    "boxes without braces": ("\\boxed 1" * (MB // 8), "1", 0.0),
    "one long line": ("x" * MB, None, None),
}


@pytest.mark.parametrize("name", list(MEGABYTE_INPUTS))
def test_megabyte_inputs_parse_in_linear_time(name):
    text, key, score = MEGABYTE_INPUTS[name]
    assert _timed(extract_answer, text) == key
    assert _timed(answer_span, text) is not None
    reward = MathReward()
    assert _timed(lambda t: reward(["p"], [t], answer=["42"])[0], text) == (score or 0.0)
    assert reward.usage.unparseable == (1 if score is None else 0)
