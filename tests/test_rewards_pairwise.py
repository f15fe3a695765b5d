"""V1 pairwise verifier: worked examples from ALGORITHMS.md, the parser, and the engine-backed verifier."""
import pytest
from twinloop.infer.engine import Completion, Result, Usage
from twinloop.rewards.pairwise import (
    PairwiseVerifier,
    VerifierTrainingReward,
    mu_scores,
    normalize_rating,
    pair_weight,
    parse_ratings,
    preference_probability,
    verifier_reward,
    win_value,
)


class ScriptedEngine:
    """Answers each generate request with the next scripted text; records the prompts it saw."""

    tokenizer = None

    def __init__(self, replies):
        self.replies = list(replies)
        self.seen = []

    def generate(self, requests, sampling):
        out = []
        for r in requests:
            self.seen.append(r.messages[-1]["content"])
            text = self.replies.pop(0)
            out.append(Result(prompt_ids=[1] * 10, completions=[Completion([2] * 5, text, "stop")],
                              usage=Usage(prompt_tokens=10, generated_tokens=5)))
        return out


def test_worked_example_verifier_reward():
    # A correct rated 9, B wrong rated 3: v = (0.889, 0.222); only A is inside the 0.2 band.
    assert normalize_rating(9) == pytest.approx(0.889, abs=1e-3)
    assert normalize_rating(3) == pytest.approx(0.222, abs=1e-3)
    assert verifier_reward((9, 3), (1, 0)) == pytest.approx(0.444, abs=1e-3)


def test_verifier_reward_band_edges():
    assert verifier_reward((10, 1), (1, 0)) == 1.0
    assert verifier_reward((1, 10), (1, 0)) == 0.0
    assert verifier_reward((9, 2), (1, 0)) == pytest.approx(0.5 * (8 / 9 + 8 / 9))
    assert verifier_reward((5, 6), (1, 0)) == 0.0  # the safe middle rating earns nothing
    assert verifier_reward(None, (1, 0)) == 0.0
    with pytest.raises(ValueError):
        verifier_reward((9, 3), (1,))


def test_worked_example_tournament():
    # s1 beats s2 at (8,3): w = 0.556, v = 1; s1 ties s3 at (6,6): w = 0.1, v = 0.5.
    assert pair_weight(8, 3) == pytest.approx(0.556, abs=1e-3)
    assert pair_weight(6, 6) == pytest.approx(0.1)
    assert win_value(8, 3) == 1.0 and win_value(6, 6) == 0.5 and win_value(3, 8) == 0.0
    mu = mu_scores(3, [(0, 1, 8, 3), (0, 2, 6, 6)])
    assert mu[0] == pytest.approx(0.924, abs=1e-3)
    assert mu[1] == 0.0 and mu[2] == 0.5
    assert mu_scores(2, []) == [0.5, 0.5]
    with pytest.raises(ValueError):
        mu_scores(2, [(0, 0, 5, 5)])


def test_preference_probability():
    assert preference_probability(6, 6) == 0.5
    assert preference_probability(10, 1) == 1.0
    assert preference_probability(1, 10) == 0.0
    assert preference_probability(8, 3) == pytest.approx(0.5 + 5 / 18)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<rating_A>9</rating_A><rating_B>3</rating_B>", (9, 3)),
        ("blah <rating_A> 10 </rating_A>\n<rating_B>1</rating_B> end", (10, 1)),
        ("<rating_A>2</rating_A><rating_B>2</rating_B> then <rating_A>7</rating_A><rating_B>4</rating_B>", (7, 4)),
        ("<rating_A>0</rating_A><rating_B>3</rating_B>", None),
        ("<rating_A>11</rating_A><rating_B>3</rating_B>", None),
        ("<rating_A>7.5</rating_A><rating_B>3</rating_B>", None),
        ("<rating_A>7</rating_A>", None),
        ("<rating_A>seven</rating_A><rating_B>3</rating_B>", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_ratings(text, expected):
    assert parse_ratings(text) == expected


def test_compare_and_group_reward_with_scripted_engine():
    eng = ScriptedEngine(["<rating_A>8</rating_A><rating_B>3</rating_B>"])
    v = PairwiseVerifier(eng)
    assert v.compare("What is 2+2?", "4", [{"role": "assistant", "content": "5"}]) == pytest.approx(0.5 + 5 / 18)
    assert "[Solution A]\n4\n" in eng.seen[0] and "[Solution B]\n5\n" in eng.seen[0]
    assert v.usage.model_calls == 1 and v.usage.input_tokens == 10 and v.usage.output_tokens == 5

    # One group of three (pairs 0-1, 0-2, 1-2) and a singleton; the last verdict is garbage.
    eng = ScriptedEngine(["<rating_A>10</rating_A><rating_B>1</rating_B>",
                          "<rating_A>6</rating_A><rating_B>6</rating_B>",
                          "no verdict"])
    v = PairwiseVerifier(eng)
    prompts = ["p", "p", "p", "q"]
    completions = [[{"role": "assistant", "content": t}] for t in ("x", "y", "z", "w")]
    scores = v(prompts, completions)
    assert scores == pytest.approx([(1.0 + 0.5) / 2, (0.0 + 0.5) / 2, (0.5 + 0.5) / 2, 0.5])
    assert v.usage.unparseable == 1 and v.usage.calls == 1 and v.usage.items == 4


def test_both_orders_cancels_position_bias():
    # The judge always rates whichever solution is shown first 8 and the second 3: pure position bias.
    eng = ScriptedEngine(["<rating_A>8</rating_A><rating_B>3</rating_B>"] * 2)
    v = PairwiseVerifier(eng, both_orders=True)
    assert v.compare("q", "x", "y") == pytest.approx(0.5)
    assert "[Solution A]\ny\n" in eng.seen[1] and v.usage.model_calls == 2


def test_verifier_training_reward_callable():
    r = VerifierTrainingReward()
    out = r(["p"] * 3, ["<rating_A>9</rating_A><rating_B>3</rating_B>",
                        [{"role": "assistant", "content": "<rating_A>10</rating_A><rating_B>1</rating_B>"}],
                        "junk"],
            label_a=[1, 1, 1], label_b=[0, 0, 0])
    assert out == pytest.approx([4 / 9, 1.0, 0.0])
    assert r.usage.unparseable == 1
    with pytest.raises(ValueError, match="label_a"):
        r(["p"], ["x"])


def test_real_engine_path(vllm_engine):
    """8 tokens of a random model never hold both rating tags: every verdict is a counted tie (½)."""
    v = PairwiseVerifier(vllm_engine, max_tokens=8)
    assert v.compare("What is 2+2?", "4", "5") == 0.5
    assert v.usage.unparseable == 1
    scores = v(["q", "q", "q"], ["a", "b", "c"])  # three pairs, each a tie
    assert scores == [0.5, 0.5, 0.5]
    assert v.usage.model_calls == 4 and v.usage.unparseable == 4
    assert v.usage.output_tokens > 0 and v.usage.input_tokens > 0
