"""RecomputeProcessReward with arithmetic's routes: route maths, unparseable steps, usage, a scripted engine
that lets the verifier catch a planted wrong step, and one run on the shipped tiny policy."""
import math

import pytest
from scripted_engine import ScriptedEngine
from twinloop.rewards.recompute import (
    RecomputeProcessReward,
    StepPlan,
    agreement,
    chain_value,
    first_number,
    value_probability,
)

from twinloop.tasks import arith
from twinloop.tasks._arith_routes import (
    ArithRecomputeRoute,
    last_equation_value,
    link_prefixes,
    recompute_reward,
    tens_first_split,
)

PROBLEM = "Compute 47 + 38 step by step."
PROMPT = [{"role": "user", "content": PROBLEM}]
RIGHT = "47 + 38 = 85\n\nAnswer: \\boxed{85}"
WRONG = "47 + 38 = 86\n\nAnswer: \\boxed{86}"


# ------------------------------------------------------------------------------------------ route maths
def test_tens_first_split_on_worked_examples():
    assert tens_first_split(47, "+", 38) == ("47 + 30", "+", 8)
    assert tens_first_split(91, "-", 27) == ("91 - 20", "-", 7)
    assert tens_first_split(47, "+", 30) is None  # no units: nothing to split
    assert tens_first_split(47, "+", 8) is None  # no tens
    assert tens_first_split(47, "+", 10) is None
    assert tens_first_split(12, "*", 34) is None  # products stay in context


def test_chain_links_and_answer_values():
    assert link_prefixes("47 + 38 = 77 + 8 = 85") == ["47 + 38 =", "47 + 38 = 77 + 8 ="]
    assert link_prefixes("6 * 7 = 42") == ["6 * 7 ="]
    assert last_equation_value(["17 + 25 = 42", "42 * 3 = 120 + 6 = 126", "Answer: \\boxed{126}"]) == 126
    assert last_equation_value(["no equation"]) is None


def test_route_plans_tens_first_then_in_context():
    route = ArithRecomputeRoute()
    steps = ["6 * 7 = 42", "42 + 38 = 72 + 8 = 80"]
    plan = route.plan(PROBLEM, steps, 1)
    first, second = plan.derivations
    assert first.claimed == second.claimed == 80
    assert [s.prompt([]) for s in first.stages[:1]] == ["42 + 30 ="]
    assert first.stages[1].prompt([72]) == "42 + 30 = 72 + 8 ="  # the model's own a, then the units
    assert len(second.stages) == 1 and second.stages[0].prompt([]) == "42 + 38 = 72 + 8 ="
    assert route.context(steps[:1]) == "6 * 7 = 42\n\n"
    (only,) = route.plan(PROBLEM, steps, 0).derivations
    assert only.stages[0].prompt([]) == "6 * 7 =" and only.claimed == 42


def test_route_answer_step_needs_no_model_and_garbage_is_unparseable():
    route = ArithRecomputeRoute()
    assert route.plan(PROBLEM, ["47 + 38 = 85", "Answer: \\boxed{85}"], 1) == StepPlan(score=1.0)
    assert route.plan(PROBLEM, ["47 + 38 = 85", "Answer: \\boxed{86}"], 1) == StepPlan(score=0.0)
    assert route.plan(PROBLEM, ["Answer: \\boxed{85}"], 0) == StepPlan(score=0.0)  # no equation before it
    assert route.plan(PROBLEM, ["the sum is big"], 0).unparseable


def test_value_readers():
    assert chain_value(" 77 + 8 = 85\n\nAnswer") == 85
    assert chain_value(" 85") == 85
    assert chain_value(" so") is None
    assert first_number(" 77 + 8 = 85") == 77
    assert first_number("x = -3.5") == -3.5


def test_value_probability_and_expected_agreement():
    pieces, lps = [" 8", "5", "\n\n"], [math.log(0.5), math.log(0.8), math.log(0.9)]
    assert value_probability(pieces, lps, 85) == pytest.approx(0.4)  # both tokens that spell 85
    assert value_probability([" 85"], [math.log(0.7)], 85) == pytest.approx(0.7)
    assert value_probability(pieces, None, 85) is None
    assert value_probability(pieces, lps, 7) is None
    assert agreement(85, 85) == 1.0 and agreement(85, 84) == 0.0 and agreement(85, None) is None
    assert agreement(85, 85, 0.4, expected=True) == pytest.approx(0.4)
    assert agreement(85, 84, 0.9, expected=True) == 0.0
    assert agreement(85, 85, 0.4, expected=False) == 1.0


# ------------------------------------------------------------------------------------- scripted engine
def scripted(extra=()):
    """The policy can write the right and the wrong candidate; tens first it gets 47 + 30 = 77, 77 + 8 = 85."""
    return ScriptedEngine({PROBLEM: [RIGHT, WRONG, "47 + 30 = 77 + 8 = 85", *extra]})


def test_scripted_verifier_catches_a_planted_wrong_step_and_passes_a_right_one():
    engine = scripted()
    reward = recompute_reward(engine)
    assert reward([PROMPT, PROMPT], [RIGHT, WRONG]) == [1.0, 0.0]
    assert reward.step_scores([PROMPT, PROMPT], [RIGHT.split("\n\n"), WRONG.split("\n\n")]) == [[1.0, 1.0],
                                                                                                 [0.0, 1.0]]
    prompts = [ids for call in engine.calls for ids in call.prompts]
    texts = [engine.tokenizer.decode(p) for p in prompts]
    assert any(t.endswith("47 + 30 =") for t in texts) and any(t.endswith("47 + 30 = 77 + 8 =") for t in texts)
    assert all(t.startswith(engine.tokenizer.apply_chat_template(PROMPT)) for t in texts)  # shared prefix


def test_same_route_prompts_are_sent_once_and_known_steps_are_remembered():
    engine = scripted()
    reward = recompute_reward(engine)
    reward([PROMPT] * 3, [RIGHT, WRONG, RIGHT])  # both candidates make the same claim 47 + 38: 2 stages, 1 prompt each
    assert [len(c.prompts) for c in engine.calls] == [1, 1]
    calls, spent = len(engine.calls), reward.usage.output_tokens
    assert reward.step_scores([PROMPT], [["47 + 38 = 86"]]) == [[0.0]]
    assert len(engine.calls) == calls  # remembered from the first call: no model work
    assert 0 < reward.usage.output_tokens - spent < spent  # but charged its share of the first cost


def test_a_remembered_response_is_charged_what_it_cost_the_first_time():
    engine = scripted()
    reward = recompute_reward(engine)
    reward([PROMPT, PROMPT], [RIGHT, WRONG])
    first = (reward.usage.output_tokens, reward.usage.input_tokens)
    calls = len(engine.calls)
    assert reward([PROMPT, PROMPT], [RIGHT, WRONG]) == [1.0, 0.0]
    assert len(engine.calls) == calls
    assert (reward.usage.output_tokens, reward.usage.input_tokens) == (2 * first[0], 2 * first[1])


def test_usage_counts_exactly_what_the_engine_generated_for_the_verifier():
    chained = "47 + 38 = 77 + 8 = 85\n\n6 * 7 = 42\n\nAnswer: \\boxed{42}"
    engine = scripted([chained])  # its own text continues the in-context prompts of its chain and product
    reward = recompute_reward(engine)
    seen = []
    real = engine.generate

    def spy(requests, sampling):
        out = real(requests, sampling)
        seen.extend(out)
        return out

    engine.generate = spy
    reward([PROMPT, PROMPT], [RIGHT, chained])
    assert seen and reward.usage.output_tokens == sum(r.usage.generated_tokens for r in seen)
    assert reward.usage.input_tokens == sum(r.usage.prompt_tokens - r.usage.cached_prompt_tokens for r in seen)
    assert reward.usage.model_calls == len(seen)
    assert reward.usage.output_tokens > 0


def test_unparseable_steps_and_unreadable_routes_score_the_documented_default_and_are_counted():
    engine = ScriptedEngine({PROBLEM: ["I add them\n\n47 + 30 = seventy-seven"]})
    reward = recompute_reward(engine, unparseable_score=0.25)
    scores = reward.step_scores([PROMPT], [["I add them", "47 + 38 = 85"]])
    assert scores == [[0.25, 0.25]]  # a step that is no equation; a route generation with no number
    assert reward.usage.unparseable == 2
    assert reward([PROMPT], [""]) == [0.25] and reward.usage.unparseable == 3  # no step at all


def test_expected_agreement_uses_the_route_probability():
    engine = scripted()  # the scripted engine gives every token logprob -0.1
    reward = recompute_reward(engine, expected=True)
    right, wrong = reward([PROMPT, PROMPT], [RIGHT, WRONG])
    assert right == pytest.approx(math.exp(-0.2))  # "85" is two character tokens
    assert wrong == 0.0


def test_bad_settings_fail_in_one_line():
    with pytest.raises(ValueError, match="aggregation"):
        recompute_reward(scripted(), aggregation="median")
    with pytest.raises(ValueError, match="route"):
        RecomputeProcessReward(scripted(), route=object())


def test_a_one_megabyte_completion_is_scored_without_a_crash():
    engine = scripted()
    reward = recompute_reward(engine)
    assert reward([PROMPT], ["x" * 1_000_000]) == [0.0]
    assert reward.usage.unparseable == 1


# ---------------------------------------------------------------------------------------- real engine
def test_tiny_policy_recomputes_gold_steps_and_flags_planted_errors(policy_engine):
    rows = arith.load("test", n=12)
    reward = recompute_reward(policy_engine)
    right, planted = [], []
    for r in rows:
        steps = r["solution"].split("\n\n")
        x, op, y, z = arith.parse_equation(steps[0])
        right.append(steps)
        planted.append([f"{x} {op} {y} = {z + 1}"])
    prompts = [r["prompt"] for r in rows]
    good = reward.step_scores(prompts, right)
    bad = reward.step_scores(prompts, planted)
    passed = sum(min(s) == 1.0 for s in good)
    caught = sum(s[0] == 0.0 for s in bad)
    assert passed >= 9, good  # the policy re-derives about 95% of operations correctly (STACK.md)
    assert caught >= 10, bad
    assert reward.usage.output_tokens > 0 and reward.usage.model_calls > 0


# ---------------------------------------------------------------------------------- GSM8K annotations
def test_gsm8k_annotation_route_commutes_sums_and_products():
    from twinloop.tasks._gsm8k_routes import GsmAnnotationRoute, commuted

    assert commuted("48*2") == "2*48" and commuted("3 + 4.5") == "4.5+3" and commuted("48/2") == "48/2"
    route = GsmAnnotationRoute()
    steps = ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.", "In all 48+24 = <<48+24=72>>72 clips."]
    (d,) = route.plan("q", steps, 1).derivations
    assert d.claimed == 72 and d.stages[0].prompt([]) == "In all 48+24 = <<24+48="
    assert route.context(steps[:1]) == steps[0] + "\n"
    assert route.plan("q", ["No numbers here."], 0) == StepPlan(score=1.0)
    assert route.plan("q", ["<<3*4=x>>"], 0).unparseable
