"""Compute-optimal allocation: quantile bins, oracle difficulty, per-bin choice with numbers, then the
routed run on the scripted engine (given and predicted difficulty)."""
import json

import pytest
from scripted_engine import ScriptedEngine, TableReward
from twinloop.infer.search import compute_optimal as co
from twinloop.infer.search._common import Budget, Problem, last_boxed

DIFF = {"p1": 0.1, "p2": 0.2, "p3": 0.8, "p4": 0.9}
RIGHT = {("greedy", 1): {"p1", "p2"}, ("majority", 4): {"p1", "p2", "p3"}, ("best_of_n", 8): set(DIFF)}
TOKENS = {("greedy", 1): 10, ("majority", 4): 40, ("best_of_n", 8): 80}
ROWS = [{"method": m, "budget": b, "problem_id": p, "correct": p in RIGHT[(m, b)], "generated_tokens": TOKENS[(m, b)]}
        for (m, b) in RIGHT for p in DIFF]


def test_bins_and_oracle_difficulty():
    assert co.quantile_edges([0.4, 0.1, 0.3, 0.2], 2) == [0.3]
    assert co.quantile_edges([1, 2, 3, 4, 5, 6], 3) == [3, 5]
    assert co.bin_of(0.2, [0.3]) == 0 and co.bin_of(0.3, [0.3]) == 1 and co.bin_of(9, [0.3]) == 1
    od = co.oracle_difficulty(ROWS)
    assert od["p1"] == 0.0 and od["p3"] == pytest.approx(1 - 2 / 3) and od["p4"] == pytest.approx(1 - 1 / 3)


def test_fit_and_choose_per_bin():
    policy = co.fit_policy(ROWS, DIFF, n_bins=2)
    assert policy["edges"] == [0.8]
    easy = {(e["method"], e["budget"]): e["accuracy"] for e in policy["bins"][0]}
    assert easy == {("greedy", 1): 1.0, ("majority", 4): 1.0, ("best_of_n", 8): 1.0}
    assert co.choose(policy, 0, 32) == ("greedy", 1)  # tie on accuracy: fewest tokens
    assert co.choose(policy, 1, 4) == ("majority", 4) and co.choose(policy, 1, 8) == ("best_of_n", 8)
    with pytest.raises(ValueError):
        co.choose(policy, 1, 0)


SCRIPT = {"E": ["e \\boxed{1}"], "H": ["h \\boxed{3}", "h \\boxed{2}", "h \\boxed{3}"]}


def test_routes_problems_by_given_difficulty(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(co.fit_policy(ROWS, DIFF, n_bins=2)))
    eng = ScriptedEngine(SCRIPT)
    cfg = co.ComputeOptimalConfig(answer_fn=last_boxed, policy=str(path))
    res = co.run([Problem("E", {"difficulty": 0.1}), Problem("H", {"difficulty": 0.95})], eng, None, Budget(n=4), cfg)
    assert [r.trace[0]["chose"] for r in res] == [["greedy", 1], ["majority", 4]]
    assert res[0].answer == "1" and res[1].answer == "3" and all(r.method == "compute_optimal" for r in res)
    assert [c.sampling.n for c in eng.calls] == [1, 4]


def test_predicted_difficulty_accounts_the_probe():
    policy = co.fit_policy(ROWS, DIFF, n_bins=2)
    eng, rm = ScriptedEngine(SCRIPT), TableReward({"boxed{1}": 1.0}, default=0.0)
    res = co.run([Problem("E"), Problem("H")], eng, rm, Budget(n=8),
                 co.ComputeOptimalConfig(answer_fn=last_boxed, policy=policy, probe_n=2))
    assert [r.trace[0]["difficulty"] for r in res] == [0.0, 1.0]
    assert [r.trace[0]["chose"] for r in res] == [["greedy", 1], ["best_of_n", 8]]
    assert res[0].usage.rm_calls == 2 and res[1].usage.rm_calls == 2 + 8  # probe + best-of-8
    assert res[0].usage.generated_tokens == 3 * len("e \\boxed{1}x")  # 2 probe samples + greedy, EOS each
    with pytest.raises(ValueError, match="policy"):
        co.run([Problem("E")], eng, rm, Budget(n=4), co.ComputeOptimalConfig())
