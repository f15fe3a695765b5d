"""One-shot procedures (greedy, majority, weighted majority, best/worst-of-N) on the scripted engine:
exact selection, accounting and budget exhaustion."""
import pytest
from scripted_engine import EOS_ID, ScriptedEngine, TableReward
from twinloop.infer.search import best_of_n, greedy, majority, weighted_majority, worst_of_n
from twinloop.infer.search._common import (
    Budget,
    Problem,
    SearchConfig,
    _apportion,
    aggregate_steps,
    argbest,
    canonical_answer,
    last_boxed,
    vote,
)

RESPONSES = ["a\n\nAnswer: \\boxed{1}", "bb\n\nAnswer: \\boxed{2}", "c\n\nAnswer: \\boxed{ 2 }",
             "dd\n\nAnswer: \\boxed{3}"]
SCORES = {"boxed{1}": 0.9, "boxed{2}": 0.3, "boxed{ 2 }": 0.3, "boxed{3}": 0.1}
CONFIG = SearchConfig(answer_fn=last_boxed)


def tokens(texts):
    return sum(len(t) + 1 for t in texts)  # characters plus EOS


def engine():
    return ScriptedEngine({"P1": RESPONSES, "P2": ["x\n\nAnswer: \\boxed{7}", "y\n\nAnswer: \\boxed{8}"]})


def test_last_boxed_and_canonical():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("no box") is None and last_boxed("\\boxed{3") is None
    assert canonical_answer(" 1 2 ") == "12" and canonical_answer("  ") is None


def test_vote_mode_weights_and_ties():
    assert vote(["1", "2", " 2", "3"])[0] == "2"
    assert vote(["1", "2", "2", "3"], [0.9, 0.3, 0.3, 0.1]) == ("1", {"1": 0.9, "2": 0.6, "3": 0.1})
    assert vote(["2", "1", "1", "2"])[0] == "2"  # tie: first seen
    assert vote([None, None]) == (None, {})
    assert vote(["1", "2"], [None, 0.1])[0] == "2"  # unscored does not vote


def test_argbest_and_aggregation_and_apportion():
    assert argbest([0.2, None, 0.9, 0.9]) == 2 and argbest([0.2, None, 0.1], lowest=True) == 2
    assert argbest([None]) is None
    s = [0.9, 0.5, 0.8]
    assert aggregate_steps(s, "last") == 0.8 and aggregate_steps(s, "min") == 0.5
    assert aggregate_steps(s, "prod") == pytest.approx(0.36) and aggregate_steps(s, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError):
        aggregate_steps(s, "max")
    assert _apportion(10, [1, 1, 1]) == [4, 3, 3] and sum(_apportion(7, [5, 2])) == 7


def test_greedy_takes_first_response_at_temperature_zero():
    eng = engine()
    [r] = greedy.run([Problem("P1", id="p1")], eng, config=CONFIG)
    assert r.answer == "1" and r.text == RESPONSES[0] and r.stop_reason == "done"
    assert eng.calls[0].sampling.temperature == 0 and eng.calls[0].sampling.n == 1
    assert r.usage.generated_tokens == tokens(RESPONSES[:1]) and r.problem_id == "p1"


def test_majority_weighted_best_worst_select_exactly():
    problems = [Problem("P1")]
    assert majority.run(problems, engine(), budget=Budget(n=4), config=CONFIG)[0].answer == "2"
    wm = weighted_majority.run(problems, engine(), TableReward(SCORES), Budget(n=4), CONFIG)[0]
    assert wm.answer == "1" and wm.trace[0]["tally"] == pytest.approx({"1": 0.9, "2": 0.6, "3": 0.1})
    bon = best_of_n.run(problems, engine(), TableReward(SCORES), Budget(n=4), CONFIG)[0]
    assert (bon.answer, bon.selected) == ("1", 0) and [c.score for c in bon.candidates] == [0.9, 0.3, 0.3, 0.1]
    won = worst_of_n.run(problems, engine(), TableReward(SCORES), Budget(n=4), CONFIG)[0]
    assert (won.answer, won.selected) == ("3", 3)


def test_batches_problems_in_one_call_and_accounts_everything():
    eng, rm = engine(), TableReward(SCORES)
    res = best_of_n.run([Problem("P1"), Problem([{"role": "user", "content": "P2"}])], eng, rm, Budget(n=4), CONFIG)
    assert len(eng.calls) == 1 and len(eng.calls[0].prompts) == 2 and eng.calls[0].sampling.n == 4
    p2 = ["x\n\nAnswer: \\boxed{7}", "y\n\nAnswer: \\boxed{8}"] * 2
    assert res[0].usage.generated_tokens == tokens(RESPONSES)
    assert res[1].usage.generated_tokens == tokens(p2)
    assert [r.usage.rm_calls for r in res] == [4, 4]
    assert res[0].usage.rm_tokens + res[1].usage.rm_tokens == rm.usage.input_tokens == sum(map(len, RESPONSES + p2))
    assert res[0].usage.prompt_tokens == 2 and res[1].usage.engine_requests == 1
    assert all(c.token_ids[-1] == EOS_ID and c.finish_reason == "stop" for c in res[0].candidates)


def test_token_budget_is_a_hard_cap_drawn_in_chunks():
    cap = tokens(RESPONSES[:2])  # 43 < max_tokens: one sample at a time, each with the room left
    eng = engine()
    r = majority.run([Problem("P1")], eng, budget=Budget(n=4, generated_tokens=cap), config=CONFIG)[0]
    assert len(r.candidates) == 2 and r.budget_exhausted and r.stop_reason == "budget"
    assert r.answer == "1"  # tie between 1 and 2: first seen
    assert r.usage.generated_tokens == cap and [(c.sampling.n, c.sampling.max_tokens) for c in eng.calls] == [
        (1, 43), (1, 22)]
    eng = engine()
    cfg = SearchConfig(answer_fn=last_boxed, max_tokens=25)
    r = majority.run([Problem("P1")], eng, budget=Budget(n=4, generated_tokens=60), config=cfg)[0]
    assert [(c.sampling.n, c.sampling.max_tokens) for c in eng.calls] == [(2, 25), (1, 17)]
    assert r.usage.generated_tokens == 60 and [c.finish_reason for c in r.candidates] == ["stop", "stop", "length"]
    uncapped = engine()
    majority.run([Problem("P1"), Problem("P2")], uncapped, budget=Budget(n=4, generated_tokens=10**6), config=cfg)
    assert len(uncapped.calls) == 1  # a cap that does not bite costs no extra engine call


def test_rm_call_budget_scores_only_first_candidates():
    r = best_of_n.run([Problem("P1")], engine(), TableReward({"boxed{2}": 0.95}), Budget(n=4, rm_calls=1), CONFIG)[0]
    assert r.budget_exhausted and r.usage.rm_calls == 1
    assert [c.score for c in r.candidates] == [0.0, None, None, None] and r.selected == 0


def test_truncated_response_is_marked_length():
    cfg = SearchConfig(answer_fn=last_boxed, max_tokens=5)
    r = greedy.run([Problem("P1")], engine(), config=cfg)[0]
    assert r.candidates[0].finish_reason == "length" and r.answer is None


def test_reward_required_where_it_selects():
    with pytest.raises(ValueError):
        best_of_n.run([Problem("P1")], engine(), None)
    with pytest.raises(ValueError):
        Budget(n=0)
