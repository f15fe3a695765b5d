"""Compute-optimal end to end: the empty-bin fallback, the dev fit cached beside the results (difficulty
from the model's own samples), per-method --set values, and `twinloop quickstart --methods compute_optimal`."""
import json

import pytest
from scripted_engine import ScriptedEngine, TableReward
from twinloop.infer import co_fit
from twinloop.infer import evaluate as ev
from twinloop.infer.search import compute_optimal as co
from twinloop.infer.search._common import Budget, Problem, canonical_answer, last_boxed

POLICY = {"difficulty": "predicted", "edges": [0.3, 0.6],
          "bins": [[{"method": "greedy", "budget": 1, "accuracy": 1.0, "generated_tokens": 10}], [],
                   [{"method": "best_of_n", "budget": 4, "accuracy": 0.5, "generated_tokens": 40}]]}


def test_an_empty_bin_falls_back_to_the_nearest_fitted_bin():
    assert co.choose(POLICY, 1, 8) == ("greedy", 1)  # bins 0 and 2 are as near: the easier one
    assert co.choose(POLICY, 2, 2) == ("greedy", 1)  # nothing within budget in bin 2: nearest that has
    far = dict(POLICY, bins=[[], [], POLICY["bins"][2]])
    assert co.choose(far, 0, 8) == ("best_of_n", 4)
    with pytest.raises(ValueError, match="any bin"):
        co.choose(far, 0, 2)
    res = co.run([Problem("E", {"difficulty": 0.4})], ScriptedEngine({"E": ["e \\boxed{1}"]}), None, Budget(n=4),
                 co.ComputeOptimalConfig(answer_fn=last_boxed, policy=POLICY))
    assert res[0].trace[0]["chose"] == ["greedy", 1]


# easy problems: every sample right; hard ones: the first sample wrong, voting fixes it
SCRIPT = {f"E{i}": ["e \\boxed{1}"] for i in range(4)} | {
    f"H{i}": ["h \\boxed{9}", "h \\boxed{2}", "h \\boxed{2}", "h \\boxed{2}"] for i in range(4)}
DEV = [Problem(f"E{i}", {"answer": "1"}, id=f"e{i}") for i in range(4)] + [
    Problem(f"H{i}", {"answer": "2"}, id=f"h{i}") for i in range(4)]
REWARD = {"boxed{1}": 1.0, "boxed{2}": 0.6, "boxed{9}": 0.0}


def judge(problem, answer):
    return answer is not None and canonical_answer(answer) == problem.columns["answer"]


def fit(tmp_path, engine):
    def config_for(module):
        return ev.build_config(module, 0.7, 64, 0, {"answer_fn": last_boxed, "n_bins": 2}
                               if ev.method_of(module) == "compute_optimal" else {"answer_fn": last_boxed})

    return co_fit.fit_on_dev(DEV, [engine], ["greedy", "majority", "compute_optimal"], [4], tmp_path, judge,
                             lambda e: TableReward(REWARD), config_for, batch=4, progress=False)


def test_fit_on_dev_uses_the_models_own_samples_and_is_cached(tmp_path):
    engine = ScriptedEngine(SCRIPT)
    path = fit(tmp_path, engine)
    policy = json.loads(path.read_text())
    assert path == tmp_path / "compute_optimal_policy.json" and policy["fit"]["menu"] == ["greedy", "majority"]
    difficulty = json.loads((tmp_path / "dev" / "difficulty.json").read_text())
    assert difficulty["e0"] == 0.0 and difficulty["h0"] == pytest.approx(1 - (0.0 + 3 * 0.6) / 4)
    assert co.choose(policy, 0, 4) == ("greedy", 1) and co.choose(policy, 1, 4) == ("majority", 4)
    calls = len(engine.calls)
    assert fit(tmp_path, engine) == path and len(engine.calls) == calls  # cached: no engine call


def test_per_method_settings():
    per = ev.method_settings(["compute_optimal:policy=p.json", "width=2", "beam_search:lookahead=1"],
                             ["majority", "beam_search", "compute_optimal"])
    assert per == {"majority": {}, "beam_search": {"width": 2, "lookahead": 1}, "compute_optimal": {"policy": "p.json"}}
    assert ev.method_settings(["policy=p.json"], ["majority", "compute_optimal"])["majority"] == {}
    with pytest.raises(ValueError, match="no method of this run"):
        ev.method_settings(["width=2"], ["majority"])
    with pytest.raises(ValueError, match="not a method of this run"):
        ev.method_settings(["dvts:width=2"], ["majority"])
    cfg = ev.build_config(ev.load_procedure("best_of_n"), 0.7, 64, 0, {"temperature": 1.0})
    assert cfg.temperature == 1.0  # a --set value wins over the run's default


def test_quickstart_compute_optimal(tmp_path, capsys):
    from twinloop.cli import main

    out = tmp_path / "run"
    rc = main(["quickstart", "--methods", "greedy,majority,compute_optimal", "--n-problems", "4", "--n-dev", "4",
               "--n", "2", "--temperatures", "0.7", "--max-tokens", "64", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sum(r["method"] == "compute_optimal" for r in rows) == 4
    assert json.loads((out / "compute_optimal" / "compute_optimal_policy.json").read_text())["fit"]["menu"] == [
        "greedy", "majority"]
