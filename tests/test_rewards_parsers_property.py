"""Hypothesis property tests of every model-output parser: seeded, covering the malformed-output classes
(missing tags, wrong count, out of range, non-integers, unclosed or nested braces, noise around valid output,
arbitrary unicode). About 12,000 generated cases in total, none may raise."""
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twinloop.infer.engine import Completion, Result, Usage
from twinloop.rewards.calibrated import calibrate
from twinloop.rewards.generative import (
    GenerativeReward,
    SPCTTrainingReward,
    last_boxed,
    parse_scores,
    spct_reward,
)
from twinloop.rewards.pairwise import PairwiseVerifier, VerifierTrainingReward, parse_ratings
from twinloop.rewards.process import aggregate, split_step_ids, split_steps

CASES = settings(max_examples=1000, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

noise = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
tagged_noise = st.lists(st.sampled_from(["<rating_A>", "</rating_A>", "<rating_B>", "</rating_B>", "\\boxed{",
                                         "{", "}", ",", " ", "\n", "7", "10", "-3", "4.5", "x", "Scores:"]),
                        max_size=25).map("".join)
any_text = st.one_of(noise, tagged_noise)
bad_item = st.one_of(st.integers(-50, 0).map(str), st.integers(11, 10**6).map(str),
                     st.floats(allow_nan=True).map(str), st.sampled_from(["", "seven", "7/2", "1e1", "x1", "{7}"]))


def _no_tags(s: str) -> bool:
    return "<rating_" not in s and "\\boxed{" not in s


@CASES
@given(any_text)
def test_parse_ratings_total(text):
    out = parse_ratings(text)
    assert out is None or (len(out) == 2 and all(isinstance(s, int) and 1 <= s <= 10 for s in out))


@CASES
@given(st.integers(1, 10), st.integers(1, 10), noise.filter(_no_tags), noise.filter(_no_tags),
       st.sampled_from(["", " ", "\n", "  \t"]))
def test_parse_ratings_finds_valid_ratings_in_noise(a, b, before, after, pad):
    text = f"{before}<rating_A>{pad}{a}{pad}</rating_A>{pad}<rating_B>{b}</rating_B>{after}"
    assert parse_ratings(text) == (a, b)


@CASES
@given(st.integers(1, 10), bad_item, st.booleans(), noise.filter(_no_tags))
def test_parse_ratings_rejects_malformed(good, bad, bad_first, around):
    a, b = (bad, str(good)) if bad_first else (str(good), bad)
    assert parse_ratings(f"{around}<rating_A>{a}</rating_A><rating_B>{b}</rating_B>") is None
    assert parse_ratings(f"{around}<rating_A>{good}</rating_A>") is None  # one tag missing


@CASES
@given(any_text, st.integers(1, 6), st.sampled_from([(1, 10), (0, 1)]))
def test_parse_scores_total(text, n, score_range):
    out = parse_scores(text, n, score_range)
    assert out is None or (len(out) == n and all(score_range[0] <= s <= score_range[1] for s in out))
    assert spct_reward(out, [1] + [0] * (n - 1)) in (-1.0, 1.0)
    boxed = last_boxed(text)
    assert boxed is None or "\\boxed{" + boxed + "}" in text


@CASES
@given(st.lists(st.integers(1, 10), min_size=1, max_size=8), noise.filter(_no_tags), noise.filter(_no_tags),
       st.sampled_from([",", ", ", " ,", " , "]), st.lists(st.integers(1, 10), max_size=3))
def test_parse_scores_finds_the_last_box(scores, before, after, sep, earlier):
    earlier_box = f"\\boxed{{{', '.join(map(str, earlier))}}}" if earlier else ""
    text = f"{earlier_box}{before}Scores: \\boxed{{{sep.join(map(str, scores))}}}{after}"
    assert parse_scores(text, len(scores)) == scores


@CASES
@given(st.lists(st.integers(1, 10), min_size=2, max_size=6), st.integers(0, 5), bad_item,
       st.sampled_from(["count", "item", "unclosed", "nested"]))
def test_parse_scores_rejects_malformed(scores, where, bad, kind):
    items = [str(s) for s in scores]
    n = len(items)
    if kind == "count":
        n = len(items) + 1 + where % 2
    elif kind == "item":
        items[where % len(items)] = bad
    inner = ", ".join(items)
    text = {"unclosed": f"\\boxed{{{inner}", "nested": f"\\boxed{{{{{inner}}}}}"}.get(kind, f"\\boxed{{{inner}}}")
    assert parse_scores(text, n) is None


@CASES
@given(st.lists(any_text, max_size=4), st.lists(st.integers(0, 1), min_size=1, max_size=3))
def test_training_rewards_never_raise(texts, labels):
    texts = texts or [""]
    n = len(texts)
    best = [1] + [0] * (len(labels) - 1)
    out = SPCTTrainingReward()(["p"] * n, texts, rewards=[best if len(best) > 1 else labels[:1]] * n)
    assert all(x in (-1.0, 1.0) for x in out)
    out = VerifierTrainingReward()(["p"] * n, texts, label_a=[labels[0]] * n, label_b=[1 - labels[0]] * n)
    assert all(0.0 <= x <= 1.0 for x in out)


class ArbitraryTextEngine:
    """Replies with hypothesis-drawn text (cycled)."""

    tokenizer = None

    def __init__(self, replies):
        self.replies, self.i = replies or [""], 0

    def generate(self, requests, sampling):
        out = []
        for _ in requests:
            text = self.replies[self.i % len(self.replies)]
            self.i += 1
            out.append(Result([0], [Completion([1], text, "stop")], Usage(1, 0, 1)))
        return out


@settings(max_examples=500, derandomize=True, deadline=None, database=None)
@given(st.lists(any_text, min_size=1, max_size=4), st.integers(1, 3), st.sampled_from(["pointwise", "group"]))
def test_engine_backed_judges_never_raise(replies, k, mode):
    grm = GenerativeReward(ArbitraryTextEngine(replies), k=k, mode=mode)
    out = grm(["q", "q", "r"], ["a", "b", "c"])
    assert all(1.0 <= x <= 10.0 for x in out)
    pv = PairwiseVerifier(ArbitraryTextEngine(replies))
    out = pv(["q", "q", "q"], ["a", "b", "c"])
    assert all(0.0 <= x <= 1.0 for x in out)
    assert pv.usage.unparseable <= 3


@CASES
@given(any_text, st.sampled_from(["\n\n", "\n", ";", "Step"]))
def test_split_steps_properties(text, delimiter):
    steps = split_steps(text, delimiter)
    assert all(s.strip() and delimiter not in s for s in steps)
    pos = 0
    for s in steps:  # in order, and nothing invented
        pos = text.index(s, pos) + len(s)


@CASES
@given(st.lists(st.integers(0, 9), max_size=40), st.integers(0, 9))
def test_split_step_ids_properties(ids, delim):
    steps = split_step_ids(ids, delim)
    assert all(steps) and all(delim not in s for s in steps)
    assert [t for s in steps for t in s] == [t for t in ids if t != delim]


@CASES
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12))
def test_aggregations_are_ordered(scores):
    lo, mean, prod = aggregate(scores, "min"), aggregate(scores, "mean"), aggregate(scores, "prod")
    assert prod <= lo + 1e-12 and lo <= mean + 1e-12 and mean <= max(scores) + 1e-12
    assert aggregate(scores, "last") == scores[-1]


@CASES
@given(st.floats(-5, 5), st.lists(st.floats(-5, 5), min_size=1, max_size=20), st.floats(0, 1))
def test_calibration_is_a_monotone_fraction(r, refs, bump):
    c = calibrate(r, refs)
    assert 0.0 <= c <= 1.0 and math.isclose(c * len(refs) * 2, round(c * len(refs) * 2))
    assert calibrate(r + bump, refs) >= c
