"""Operand consistency and combined process rewards: numbers, parsers, composition, usage."""
import pytest
from scripted_engine import ScriptedEngine
from twinloop.rewards.operands import (
    CombinedProcessReward,
    OperandConsistencyReward,
    combine_scores,
    equation_numbers,
    numbers_in,
    operand_scores,
)

from twinloop.tasks._arith_routes import arith_operands, operands_reward, recompute_operands_reward

PROBLEM = "Compute (76 - 27) + 8 step by step."
PROMPT = [{"role": "user", "content": PROBLEM}]


def test_numbers_and_equation_parsers():
    assert numbers_in("Compute (76 - 27) + 8, then 1,200 and 2.5") == [76, 27, 8, 1200, 2.5]
    assert equation_numbers("76 - 27 = 49") == ([76, 27], [49])
    assert equation_numbers("47 + 38 = 77 + 8 = 85") == ([47, 38], [85])  # a chain's own links are not operands
    assert equation_numbers("She pays 3*4 = <<3*4=12>>12 and <<12+5=17>>17") == ([3, 4, 12, 5], [12, 17])
    assert equation_numbers("Answer: \\boxed{49}") is None
    assert arith_operands("47 + 38 = 77 + 8 = 85") == ([47, 38], [85])
    assert arith_operands("Answer: \\boxed{85}") is None


def test_operand_scores_on_worked_examples():
    problem = [76, 27, 8]
    right = [([76, 27], [49]), ([49, 8], [57]), None]
    copied_wrong = [([78, 27], [51]), ([51, 8], [59]), None]  # 78 is not in the problem
    assert operand_scores(problem, right) == [1.0, 1.0, 1.0]
    assert operand_scores(problem, copied_wrong) == [0.0, 1.0, 1.0]  # later steps may use the (wrong) result
    reused = [([76, 27], [49]), ([76, 8], [84])]
    assert operand_scores(problem, reused) == [1.0, 1.0]
    assert operand_scores(problem, reused, consume=True) == [1.0, 0.0]  # 76 was used up


def test_operand_reward_catches_a_wrongly_copied_operand():
    reward = operands_reward()
    right = "76 - 27 = 49\n\n49 + 8 = 57\n\nAnswer: \\boxed{57}"
    wrong = "78 - 27 = 51\n\n51 + 8 = 59\n\nAnswer: \\boxed{59}"
    assert reward([PROMPT, PROMPT, PROMPT], [right, wrong, ""]) == [1.0, 0.0, 0.0]
    assert reward.usage.unparseable == 1 and reward.usage.items == 3
    assert reward.step_scores([PROMPT], [wrong.split("\n\n")]) == [[0.0, 1.0, 1.0]]


def test_combine_scores():
    rows = [[1.0, 0.5, 0.2], [0.0, 0.5, 1.0]]
    assert combine_scores(rows, "min") == [0.0, 0.5, 0.2]
    assert combine_scores(rows, "prod") == [0.0, 0.25, 0.2]
    assert combine_scores(rows, "mean") == [0.5, 0.5, 0.6]
    with pytest.raises(ValueError, match="combine"):
        combine_scores(rows, "max")
    with pytest.raises(ValueError, match="length"):
        combine_scores([[1.0], [1.0, 0.0]])


def test_combined_reward_needs_both_checks_to_pass_and_sums_usage():
    problem = "Compute 47 + 38 step by step."
    prompt = [{"role": "user", "content": problem}]
    right = "47 + 38 = 85\n\nAnswer: \\boxed{85}"
    arith_wrong = "47 + 38 = 86\n\nAnswer: \\boxed{86}"
    copy_wrong = "47 + 39 = 86\n\nAnswer: \\boxed{86}"  # true arithmetic, operand not in the problem
    engine = ScriptedEngine({problem: [right, "47 + 30 = 77 + 8 = 85", "47 + 30 = 77 + 9 = 86"]})
    both = recompute_operands_reward(engine)
    assert both([prompt] * 3, [right, arith_wrong, copy_wrong]) == [1.0, 0.0, 0.0]
    recompute_part = both.rewards[0]
    assert recompute_part([prompt], [copy_wrong]) == [1.0]  # recomputation alone cannot see the copy error
    assert both.usage.output_tokens == recompute_part.usage.output_tokens > 0
    assert both.usage.calls == 1  # its own calls, not the parts'


def test_combined_reward_rejects_outcome_rewards():
    with pytest.raises(ValueError, match="step_scores"):
        CombinedProcessReward([lambda p, c: [0.0]])
    with pytest.raises(ValueError, match="aggregation"):
        OperandConsistencyReward(aggregation="median")


def test_eval_reward_specs():
    from twinloop.build import build_reward
    from twinloop.eval_cli import reward_for as eval_build_reward

    assert isinstance(build_reward("operands"), OperandConsistencyReward)
    assert eval_build_reward("recompute", "arith") is None  # validation without an engine
    engine = ScriptedEngine({"x": ["y"]})
    expected = build_reward("recompute(expected=True)", engine=engine)
    assert expected.expected is True
    assert build_reward(expected.spec(), engine=engine).expected is True  # the spec round-trips
    both = build_reward("recompute+operands", engine=engine)
    assert both.name == "recompute+operands"
    assert build_reward(both.spec(), engine=engine).name == "recompute+operands"
    with pytest.raises(ValueError):
        build_reward("recompute(median=True)", engine=engine)
