"""A*-decoding on the scripted engine: f = g + h ordering, solutions, token savings, budget exhaustion."""
import pytest
from scripted_engine import ScriptedEngine, TablePRM
from twinloop.infer.search import astar, best_of_n
from twinloop.infer.search._common import Budget, Problem, SearchConfig, last_boxed
from twinloop.infer.search._paths import SearchPath
from twinloop.infer.search.astar import AStarConfig, path_cost, priority

Q = ["s1 bad\n\nAnswer: \\boxed{0}", "s1 good\n\ns2 good\n\nAnswer: \\boxed{5}",
     "s1 good\n\ns2 bad\n\nAnswer: \\boxed{9}", "s1 meh\n\nAnswer: \\boxed{4}"]
TABLE = {"bad": 0.1, "good": 0.9, "meh": 0.5, "boxed{5}": 0.95, "boxed{9}": 0.2, "boxed{0}": 0.3, "boxed{4}": 0.4}


def test_cost_and_priority_with_numbers():
    assert path_cost([0.9, 0.5], "mean_cost") == pytest.approx(0.3)
    assert path_cost([0.9, 0.5], "sum_cost") == pytest.approx(0.6)
    assert path_cost([0.9, 0.5], "depth", 0.1) == pytest.approx(0.2) and path_cost([0.9], "zero") == 0.0
    p = SearchPath(problem=0, steps=["a", "b"], step_scores=[0.9, 0.5])
    assert priority(p, AStarConfig()) == pytest.approx(0.3 + 0.5)
    with pytest.raises(ValueError):
        path_cost([0.5], "max")


def test_astar_pops_lowest_f_and_stops_at_first_solution():
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(TABLE)
    [r] = astar.run([Problem("Q")], eng, prm, Budget(n=2), AStarConfig(answer_fn=last_boxed, k=2))
    assert r.answer == "5" and r.stop_reason == "done" and len(r.candidates) == 1
    # pops: root; "s1 good" (g 0.1 + h 0.1); "s2 good" (0.1 + 0.1); the answer (mean(.1,.1,.05) + 0.05)
    assert [p["f"] for p in r.trace[0]["pops"]] == pytest.approx([0.0, 0.2, 0.2, 0.25 / 3 + 0.05])
    assert [c.sampling.n for c in eng.calls] == [2, 2, 2]
    # four step samples less than best-of-4 on the same script
    bon = best_of_n.run([Problem("Q")], ScriptedEngine({"Q": Q}), TablePRM(TABLE), Budget(n=4),
                        SearchConfig(answer_fn=last_boxed))[0]
    assert r.usage.generated_tokens < bon.usage.generated_tokens


def test_astar_collects_n_over_k_solutions_across_problems():
    eng, prm = ScriptedEngine({"Q": Q, "R": Q}), TablePRM(TABLE)
    res = astar.run([Problem("Q"), Problem("R")], eng, prm, Budget(n=8),
                    AStarConfig(answer_fn=last_boxed, k=4, pops_per_round=1))
    assert all(len(r.candidates) == 2 and r.answer == "5" for r in res)
    assert all(len(c.prompts) == 2 for c in eng.calls)  # both problems expand in the same engine calls


def test_astar_batched_pops_take_as_many_nodes_as_solutions_sought():
    eng, prm = ScriptedEngine({"Q": Q, "R": Q}), TablePRM(TABLE)
    res = astar.run([Problem("Q"), Problem("R")], eng, prm, Budget(n=8),
                    AStarConfig(answer_fn=last_boxed, k=4, pops_per_round=None))
    assert all(len(r.candidates) == 2 and r.answer == "5" for r in res)
    # root first (one node each), then N // k = 2 pops per problem: 4 prompts in one engine call
    assert [len(c.prompts) for c in eng.calls][:2] == [2, 4]


def test_astar_budget_returns_best_partial():
    [r] = astar.run([Problem("Q")], ScriptedEngine({"Q": Q}), TablePRM(TABLE), Budget(n=4, rm_calls=2),
                    AStarConfig(answer_fn=last_boxed, k=2))
    assert r.budget_exhausted and r.stop_reason == "budget" and r.usage.rm_calls == 2
    assert r.candidates[0].finish_reason == "budget" and r.text == "s1 good\n\n"


def test_astar_pops_several_nodes_per_round():
    eng = ScriptedEngine({"Q": Q})
    [r] = astar.run([Problem("Q")], eng, TablePRM(TABLE), Budget(n=2), AStarConfig(answer_fn=last_boxed, k=2,
                                                                                   pops_per_round=2))
    assert r.answer == "5" and len(eng.calls[1].prompts) == 2  # the two best children expand together


def test_reinsertion_resamples_a_good_prefix_and_cap_stops():
    r_script = {"R": ["x good\n\ny bad\n\nAnswer: \\boxed{1}", "x good\n\ny good\n\nAnswer: \\boxed{2}"]}
    table = {"bad": 0.1, "good": 0.9, "boxed{1}": 0.2, "boxed{2}": 0.95}
    again = astar.run([Problem("R")], ScriptedEngine(r_script), TablePRM(table), Budget(n=1),
                      AStarConfig(answer_fn=last_boxed, k=1))[0]
    assert again.answer == "2" and not again.budget_exhausted  # "x good" sampled twice
    once = astar.run([Problem("R")], ScriptedEngine(r_script), TablePRM(table), Budget(n=1),
                     AStarConfig(answer_fn=last_boxed, k=1, reinsert_penalty=None))[0]
    assert once.answer == "1"  # without reinsertion the only way on is the bad step
    capped = astar.run([Problem("R")], ScriptedEngine(r_script), TablePRM(table), Budget(n=1),
                       AStarConfig(answer_fn=last_boxed, k=1, expansions_per_n=2))[0]
    assert capped.budget_exhausted and capped.usage.engine_requests == 2
