"""Verifiable rewards: answer extraction edge cases, math-verify equivalence, counters, never raising."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twinloop.rewards.base import Reward
from twinloop.rewards.verifiable import (
    BoxedFormatReward,
    ExactMatchReward,
    MathReward,
    NumericReward,
    ReasoningGymReward,
    StepFormatReward,
    canonical_answer,
    extract_answer,
    last_boxed,
    to_number,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{\sqrt{2}}} done", r"\frac{1}{\sqrt{2}}"),  # nested braces
        (r"\boxed{1} then \boxed{2}", "1, 2"),  # boxes side by side are one answer, as math-verify reads
        (r"\boxed{1} looked right at first but the check of the second case fails so it must be \boxed{2}", "2"),
        ("#### 1,234", "1234"),
        ("The answer is -3.", "-3"),
        ("Answer: 42 apples", "42"),
        (r"The final answer is $\dfrac{3}{4}$.", r"\frac{3}{4}"),
        ("so the answer is 3.50.", "3.5"),
        (r"\boxed{", None),  # unclosed
        ("garbage", None),
        ("", None),
        ("   ", None),
    ],
)
def test_extract_answer_edge_cases(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_and_canonical_forms():
    assert last_boxed(r"x \fbox{7}") == "7"
    assert last_boxed(r"\boxed 5") == "5"
    assert canonical_answer(" $1,234.0$. ") == "1234"
    assert canonical_answer(r"\text{Paris}") == "Paris"
    assert to_number(r"-\frac{3}{4}") == -0.75
    assert to_number("7/2") == 3.5
    assert to_number("x+1") is None


def test_math_reward_accepts_three_forms_and_chat_completions():
    r = MathReward()
    assert isinstance(r, Reward)
    completions = [
        r"steps... \boxed{0.5}",
        "#### 1,234",
        "The answer is -3.",
        [{"role": "assistant", "content": r"\boxed{\dfrac{1}{2}}"}],
        r"\boxed{7}",
    ]
    gold = [r"\frac12", "1234", "-3", "1/2", "8"]
    assert r(["p"] * 5, completions, answer=gold) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert r.usage.calls == 1 and r.usage.items == 5 and r.usage.unparseable == 0


def test_math_reward_unparseable_is_zero_and_counted():
    r = MathReward()
    assert r(["p", "p", "p"], ["garbage", "", r"\boxed{"], answer=["1", "2", "3"]) == [0.0, 0.0, 0.0]
    assert r.usage.unparseable == 3


def test_math_reward_reads_gold_from_a_worked_solution_column():
    r = MathReward()
    assert r(["p"], ["The answer is 18."], solution=["She pays 9*2 = 18 dollars.\n#### 18"]) == [1.0]


def test_missing_gold_column_is_a_clear_error():
    with pytest.raises(ValueError, match="answer"):
        MathReward()(["p"], [r"\boxed{1}"], label=["1"])


def test_numeric_reward_tolerance():
    r = NumericReward(rel_tol=1e-2)
    assert r(["p"] * 4, [r"\boxed{3.14}", r"\boxed{3.2}", "#### 1,000", "no number"],
             answer=["3.1416", "3.1416", "1000", "1"]) == [1.0, 0.0, 1.0, 0.0]
    assert r.usage.unparseable == 1
    with pytest.raises(ValueError, match="not a number"):
        NumericReward()(["p"], [r"\boxed{1}"], answer=["x+y"])


def test_exact_match_reward():
    r = ExactMatchReward()
    out = r(["p"] * 3, [r"\boxed{Paris}", r"\boxed{ paris }", r"\boxed{Rome}"], answer=["paris"] * 3)
    assert out == [1.0, 1.0, 0.0]
    raw = ExactMatchReward(extract=False)
    assert raw(["p", "p"], ["  yes ", "no"], answer=["Yes", "yes"]) == [1.0, 0.0]


def test_format_rewards():
    assert BoxedFormatReward()(["p"] * 3, [r"\boxed{1}", r"\boxed{}", "1"]) == [1.0, 0.0, 0.0]
    step = StepFormatReward()
    assert step(["p"] * 3, ["1 + 1 = 2\n\nAnswer: 2", "one line", "a\n\n\n\n"]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        StepFormatReward(delimiter="")


def test_reasoning_gym_reward_uses_the_dataset_scorer():
    import reasoning_gym

    data = reasoning_gym.create_dataset("chain_sum", size=2, seed=3)
    entries = [data[0], data[1]]
    r = ReasoningGymReward("chain_sum")
    good = f"<answer>{entries[0]['answer']}</answer>"
    assert r(["p"] * 3, [good, r"\boxed{" + entries[1]["answer"] + "}", "no idea"],
             entry=entries + [entries[0]]) == [1.0, 1.0, 0.0]
    assert r.usage.unparseable == 1
    by_columns = ReasoningGymReward(data)([data[0]["question"]], [good], answer=[entries[0]["answer"]],
                                          metadata=[entries[0]["metadata"]])
    assert by_columns == [1.0]
    with pytest.raises(ValueError, match="unknown reasoning-gym"):
        ReasoningGymReward("no_such_task")


_text = st.text(alphabet=st.sampled_from(list("0123456789-+.,{}$\\ #abxAnswer is boxed frac\n")), max_size=60)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_text, st.sampled_from(["1", "-3", r"\frac{1}{2}", "1234"]))
def test_rewards_never_raise_on_any_output(text, gold):
    for reward in (MathReward(), NumericReward(), ExactMatchReward(), BoxedFormatReward(), StepFormatReward()):
        (score,) = reward(["p"], [text], answer=[gold])
        assert score in (0.0, 1.0)
    assert extract_answer(text) is None or isinstance(extract_answer(text), str)
