"""Task loaders and the arithmetic task's generator, step checker and rewards."""
import random
from collections import Counter

import pytest
from twinloop.rewards.base import ProcessReward, Reward

from twinloop.tasks import arith

# ---------------------------------------------------------------- arithmetic task

def test_expression_round_trip_and_values():
    tree = arith.parse_expression("((17 + 25) * 3) - 40")
    assert tree == ("-", ("*", ("+", 17, 25), 3), 40)
    assert arith.evaluate(tree) == 86
    assert arith.render(tree) == "((17 + 25) * 3) - 40"
    assert arith.evaluate(arith.parse_expression("2 + 3 * 4 - 1")) == 13  # usual precedence
    with pytest.raises(ValueError, match="parse"):
        arith.parse_expression("2 + (3")


def test_splits_are_seeded_fixed_and_disjoint():
    test = arith.load("test")
    assert len(test) == 200 and test == arith.load("test")
    dev = arith.load("dev")
    assert len(dev) == 200 and {r["expression"] for r in dev} != {r["expression"] for r in test}
    train = arith.load("train", n=300)
    held_out = {r["expression"] for r in test + dev}
    assert not held_out & {r["expression"] for r in train}
    with pytest.raises(ValueError, match="split"):
        arith.load("validation")


def test_generator_respects_difficulty_bounds():
    cfg = arith.ArithConfig(min_ops=2, max_ops=4, max_operand=99, max_result=199, max_factor=9)
    rng = random.Random(5)
    counts = Counter()
    for _ in range(600):
        tree = arith.generate_problem(rng, cfg)
        counts[arith.count_ops(tree)] += 1
        _check_bounds(tree, cfg)
    assert set(counts) == {2, 3, 4} and min(counts.values()) > 150  # uniform number of operations


def _check_bounds(tree, cfg):
    if isinstance(tree, int):
        assert 0 <= tree <= cfg.max_operand
        return
    op, a, b = tree
    assert 0 <= arith.evaluate(tree) <= cfg.max_result
    if op == "*":
        assert min(arith.evaluate(a), arith.evaluate(b)) <= cfg.max_factor
    _check_bounds(a, cfg)
    _check_bounds(b, cfg)


def test_gold_solution_format_and_random_step_order():
    row = arith.make_row(("*", ("+", 1, 2), ("-", 9, 4)), 0, "test")
    assert row["prompt"] == [{"role": "user", "content": "Compute (1 + 2) * (9 - 4) step by step."}]
    assert row["solution"] == "1 + 2 = 3\n\n9 - 4 = 5\n\n3 * 5 = 15\n\nAnswer: \\boxed{15}"
    assert row["answer"] == "15"
    orders = {arith.make_row(("*", ("+", 1, 2), ("-", 9, 4)), 0, "train", random.Random(s))["solution"].split("\n\n")[0]
              for s in range(20)}
    assert orders == {"1 + 2 = 3", "9 - 4 = 5"}


def test_commuted_training_steps_swap_only_plus_and_times_and_still_check():
    tree = ("*", ("+", 1, 2), ("-", 9, 4))
    steps = arith.solution_steps(tree, random.Random(0), commute=1.0)
    assert sorted(steps[:3]) == ["2 + 1 = 3", "5 * 3 = 15", "9 - 4 = 5"]  # subtraction keeps its order
    assert arith.step_correctness(arith.render(tree), steps) == [1.0] * 4
    assert arith.solution_steps(tree, None, commute=1.0)[0] == "1 + 2 = 3"  # dev/test solutions never swap
    rows = [r["solution"] for r, _ in zip(arith.iter_train(seed=0, commute=0.5), range(200))]
    assert rows != [r["solution"] for r, _ in zip(arith.iter_train(seed=0), range(200))]


def test_tens_first_training_steps_are_checked_chains():
    tree = ("-", ("+", 47, 38), ("*", 3, 12))
    steps = arith.solution_steps(tree, random.Random(0), tens_first=1.0)
    assert "47 + 38 = 77 + 8 = 85" in steps and "3 * 12 = 36" in steps  # products are never split
    assert "85 - 36 = 55 - 6 = 49" in steps
    assert arith.step_correctness(arith.render(tree), steps) == [1.0] * 4
    assert arith.solution_steps(tree, None, tens_first=1.0)[0] == "47 + 38 = 85"  # dev/test gold stays direct
    assert arith.solution_steps(("+", 47, 30), random.Random(0), tens_first=1.0)[0] == "47 + 30 = 77"  # no units
    # a chain is ok only when every link is true, and the next expression takes its final value
    assert arith.step_correctness("47 + 38", ["47 + 38 = 78 + 8 = 85"]) == [0.0]
    assert arith.step_correctness("47 + 38", ["47 + 38 = 77 + 8 = 86"]) == [0.0]
    assert arith.step_correctness("(47 + 38) * 2", ["47 + 38 = 77 + 8 = 86", "86 * 2 = 172"]) == [0.0, 1.0]
    assert arith.parse_equation("47 + 38 = 77 + 8 = 85") == (47, "+", 38, 85)
    assert arith.parse_equation("3 x 4 = 12.") == (3, "*", 4, 12)
    for bad in ("3 + 4 =", "= 5", "3 + 4 = 5 = 7", "3 + 4 = 7 + = 7"):
        assert arith.parse_equation(bad) is None


def test_split_steps():
    assert arith.split_steps("a\n\n b \n\n\n\nc\n", strip=True) == ["a", "b", "c"]
    assert arith.split_steps("a\n\n b ") == ["a", " b "]  # PRMs keep the text as written
    assert arith.split_steps("", "\n\n") == []
    assert arith.split_steps("x;y", ";") == ["x", "y"]


EXPR = "((17 + 25) * 3) - 40"


@pytest.mark.parametrize(
    "steps, expected",
    [
        (["17 + 25 = 42", "42 * 3 = 126", "126 - 40 = 86", "Answer: \\boxed{86}"], [1, 1, 1, 1]),
        (["25 + 17 = 42", "3 * 42 = 126", "126 - 40 = 86", "Answer: \\boxed{86}"], [1, 1, 1, 1]),  # commutative
        (["17 + 25 = 43", "43 * 3 = 129", "129 - 40 = 89", "Answer: \\boxed{89}"], [0, 1, 1, 0]),  # false equation
        (["17 + 25 = 42", "42 - 40 = 2", "2 * 3 = 6", "Answer: \\boxed{6}"], [1, 0, 0, 0]),  # true but not a reduction
        (["17 + 25 = 42", "126 - 40 = 86", "Answer: \\boxed{86}"], [1, 0, 0]),  # number never in the problem
        (["40 - 126 = -86"], [0]),  # - is not commutative
        (["17 + 25 = 42", "Answer: \\boxed{42}"], [1, 0]),  # answer before the end
        (["I think", "17+25=42"], [0, 1]),  # garbage step, then a valid one
    ],
)
def test_step_checker_replays_against_the_expression(steps, expected):
    assert arith.step_correctness(EXPR, steps) == [float(x) for x in expected]


def test_aggregations():
    assert arith.aggregate([1, 0.5, 1], "min") == 0.5
    assert arith.aggregate([1, 0.5, 0.8], "last") == 0.8
    assert arith.aggregate([1, 0.5, 0.8], "prod") == pytest.approx(0.4)
    assert arith.aggregate([1, 0.5, 0.0], "mean") == pytest.approx(0.5)
    assert arith.aggregate([], "min") == 0.0
    with pytest.raises(ValueError, match="aggregation"):
        arith.ArithProcessReward(aggregation="max")


def test_process_reward_scores_steps_and_whole_solutions():
    rows = arith.load("test", n=30)
    prm = arith.ArithProcessReward()
    assert isinstance(prm, ProcessReward) and isinstance(prm, Reward)
    prompts = [r["prompt"] for r in rows]
    assert prm(prompts, [r["solution"] for r in rows]) == [1.0] * 30
    # the expression is read from the prompt, or from an `expression` column
    wrong = "17 + 25 = 43\n\n43 * 3 = 129\n\n129 - 40 = 89\n\nAnswer: \\boxed{89}"
    good = "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 40 = 86\n\nAnswer: \\boxed{86}"
    chat = [[{"role": "assistant", "content": good}], wrong, "17 + 25 = 42", "nonsense"]
    assert prm(["p"] * 4, chat, expression=[EXPR] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert prm.usage.unparseable == 3  # no final box twice, one garbage step
    last = arith.ArithProcessReward(aggregation="last")
    assert last([arith.prompt_text(EXPR)], [wrong]) == [0.0]  # the final answer 89 is wrong
    mean = arith.ArithProcessReward(aggregation="mean")
    assert mean([arith.prompt_text(EXPR)], [wrong]) == [0.5]
    steps = prm.step_scores([arith.prompt_text(EXPR)] * 2, [["17 + 25 = 42"], ["17 + 25 = 42", "42 * 4 = 168"]])
    assert steps == [[1.0], [1.0, 0.0]]


def test_outcome_reward():
    r = arith.ArithOutcomeReward()
    chat = [{"role": "assistant", "content": "\\boxed{ 86 }"}]
    out = r(["p"] * 4, ["Answer: \\boxed{86}", "Answer: \\boxed{85}", "86", chat],
            answer=["86"] * 4)
    assert out == [1.0, 0.0, 0.0, 1.0] and r.usage.unparseable == 1


# ---------------------------------------------------------------- real sets and reasoning-gym

def test_every_task_module_has_the_same_interface():
    """load(split, n, seed) and reward() for every module under twinloop/tasks, named by one spec scheme."""
    import pkgutil

    import twinloop.tasks
    from twinloop.build import build_task

    names = sorted(m.name for m in pkgutil.iter_modules(twinloop.tasks.__path__) if not m.name.startswith("_"))
    assert {"arith", "gsm8k", "mmath", "humaneval", "rgym"} <= set(names)
    for name in names:
        spec = f"{name}:countdown" if name == "rgym" else name
        task = build_task(spec)
        rows = task.load("test", n=3, seed=0)
        assert len(rows) == 3, spec
        assert rows[0]["prompt"][-1]["role"] == "user" and rows[0]["prompt"][-1]["content"], spec
        assert callable(task.reward()), spec


def test_task_specs_fail_in_one_line():
    from twinloop.build import build_task

    for bad, words in (("nosuch", "unknown task"), ("rgym", "family"), ("arith:x", "takes no member")):
        with pytest.raises(ValueError, match=words):
            build_task(bad)


def test_mmath_counts_and_reward():
    from twinloop.tasks import mmath

    rows = mmath.load()
    assert Counter(r["data_source"] for r in rows) == {"MATH500": 311, "AIME2024": 30, "AIME2025": 15, "CNMO": 18}
    aime = mmath.load(source="AIME2024")
    assert len(aime) == 30 and aime[0]["answer"] == "204"
    r = mmath.reward()
    assert r([aime[0]["prompt"]], [r"\boxed{204}"], answer=[aime[0]["answer"]]) == [1.0]
    with pytest.raises(ValueError, match="source"):
        mmath.load(source="AMC")


def test_gsm8k_hundred_problems_and_missing_wheel(tmp_path):
    from twinloop.tasks import gsm8k

    rows = gsm8k.load()
    assert len(rows) == 100 and len({r["id"] for r in rows}) == 100
    assert all(r["answer"] and r["solution"].rstrip().endswith(r["answer"]) for r in rows)
    assert gsm8k.reward()([rows[0]["prompt"]], [f"so #### {rows[0]['answer']}"], answer=[rows[0]["answer"]]) == [1.0]
    with pytest.raises(FileNotFoundError, match="make install"):
        gsm8k.load(data_dir=tmp_path)


def test_humaneval_164_problems():
    from twinloop.tasks import humaneval

    rows = humaneval.load()
    assert len(rows) == 164 and rows[0]["id"] == "HumanEval/0"
    assert rows[0]["code_prompt"] in rows[0]["prompt"][0]["content"]
    assert "def check" in rows[0]["test"] and rows[0]["entry_point"] == "has_close_elements"


@pytest.mark.parametrize("name", ["basic_arithmetic", "chain_sum", "countdown", "gsm_symbolic"])
def test_reasoning_gym_splits_are_seeded_disjoint_and_scored(name):
    from twinloop.tasks import rgym

    test = rgym.load(name, "test", n=20)
    assert test == rgym.load(name, "test", n=20)
    train = rgym.load(name, "train", n=40)
    assert len(train) == 40 and not {r["question"] for r in test} & {r["question"] for r in train}
    reward = rgym.reward(name)
    completions = [f"\\boxed{{{r['answer']}}}" for r in test[:3]] + ["no answer"]
    scores = reward([r["prompt"] for r in test[:4]], completions, entry=[r["entry"] for r in test[:4]])
    assert scores == [1.0] * 3 + [0.0]


# ---------------------------------------------------------------- the process reward cannot be gamed

WRONG_CHAIN = ["17 + 25 = 43", "43 * 3 = 129", "129 - 40 = 89", "Answer: \\boxed{89}"]
GOOD_CHAIN = ["17 + 25 = 42", "42 * 3 = 126", "126 - 40 = 86", "Answer: \\boxed{86}"]


def _mean_reward(steps):
    mean = arith.ArithProcessReward(aggregation="mean")
    return mean([arith.prompt_text(EXPR)], ["\n\n".join(steps)])[0]


def test_repeated_answer_lines_earn_nothing():
    # the example: a wrong chain scored 0.75, and 0.9375 with its answer line repeated 12 times
    assert _mean_reward(WRONG_CHAIN) == 0.5
    padded = WRONG_CHAIN + ["Answer: \\boxed{89}"] * 12
    assert arith.step_correctness(EXPR, padded) == [0, 1, 1, 0] + [0] * 12
    assert _mean_reward(padded) == pytest.approx(2 / 16)
    # repetition never raises the score of a correct chain either
    assert _mean_reward(GOOD_CHAIN) == 1.0
    assert _mean_reward(GOOD_CHAIN + ["Answer: \\boxed{86}"] * 3) == pytest.approx(4 / 7)


def test_steps_after_the_answer_earn_nothing():
    late = ["17 + 25 = 42", "Answer: \\boxed{86}", "42 * 3 = 126", "126 - 40 = 86", "Answer: \\boxed{86}"]
    assert arith.step_correctness(EXPR, late) == [1, 0, 0, 0, 0]
    # a repeated equation pays only while it still reduces the expression
    assert arith.step_correctness(EXPR, ["17 + 25 = 42", "17 + 25 = 42", "42 * 3 = 126"]) == [1, 0, 1]
    twice = "(3 + 4) * (3 + 4)"
    assert arith.step_correctness(twice, ["3 + 4 = 7", "3 + 4 = 7", "7 * 7 = 49", "Answer: \\boxed{49}"]) == [1] * 4


@pytest.mark.parametrize("how", arith.AGGREGATIONS)
def test_a_wrong_final_answer_never_gets_full_credit(how):
    reward = arith.ArithProcessReward(aggregation=how)
    # every equation true against the replay, but the final box disagrees with the first answer step
    switched = GOOD_CHAIN + ["Answer: \\boxed{87}"]
    for steps in (WRONG_CHAIN, WRONG_CHAIN + ["Answer: \\boxed{89}"] * 12, switched):
        assert reward([arith.prompt_text(EXPR)], ["\n\n".join(steps)])[0] < 1.0
    assert arith.step_correctness(EXPR, switched) == [1, 1, 1, 0, 0]
    assert reward([arith.prompt_text(EXPR)], ["\n\n".join(GOOD_CHAIN)]) == [1.0]
