"""`twinloop eval` core on the scripted engine: JSONL rows, resume, crash tolerance, sharding, table, plot."""
import json

import pytest
from scripted_engine import ScriptedEngine, TableReward
from twinloop.infer import evaluate as ev
from twinloop.infer import report
from twinloop.infer.eval_config import parse_eval_args
from twinloop.infer.search._common import Problem, canonical_answer, last_boxed

from twinloop import eval_cli
from twinloop.build import reward_class

SCRIPT = {"P1": ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{2}", "d \\boxed{3}"],
          "P2": ["x \\boxed{7}", "y \\boxed{8}"],
          "P3": ["z \\boxed{5}"]}
PROBLEMS = [Problem("P1", {"answer": "2"}, id="p1"), Problem("P2", {"answer": "8"}, id="p2"),
            Problem("P3", {"answer": "5"}, id="p3")]
SCORES = {"boxed{2}": 0.9, "boxed{8}": 0.8, "boxed{5}": 0.7}


def judge(problem, answer):
    return answer is not None and canonical_answer(answer) == problem.columns["answer"]


def run_eval(path, engines, methods=("greedy", "majority", "best_of_n"), budgets=(2, 4)):
    return ev.evaluate(PROBLEMS, engines, list(methods), list(budgets), path, judge, lambda engine: TableReward(SCORES),
                       lambda m: m.Config(answer_fn=last_boxed), batch=2, progress=False)


def test_rows_resume_and_torn_line(tmp_path):
    path = tmp_path / "results.jsonl"
    assert run_eval(path, [ScriptedEngine(SCRIPT)]) == 3 * (1 + 2 + 2)  # greedy once, others per budget
    rows = ev.read_rows(path)
    by = {(r["method"], r["budget"], r["problem_id"]): r for r in rows}
    assert by[("greedy", 1, "p1")]["answer"] == "1" and not by[("greedy", 1, "p1")]["correct"]
    assert by[("best_of_n", 4, "p1")]["correct"] and by[("best_of_n", 2, "p2")]["correct"]
    assert by[("majority", 4, "p1")]["answer"] == "2" and by[("best_of_n", 4, "p1")]["rm_calls"] == 4
    assert by[("best_of_n", 2, "p3")]["generated_tokens"] == 2 * (len("z \\boxed{5}") + 1)
    assert run_eval(path, [ScriptedEngine(SCRIPT)]) == 0  # resumed: nothing left
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:10])  # lose one row, tear another
    assert run_eval(path, [ScriptedEngine(SCRIPT)]) == 2
    assert len(ev.finished_keys(path)) == 15


class _MeetingEngine(ScriptedEngine):
    """Holds its first batch until the other engine has one too: with a work queue, a fast engine may
    otherwise take every job before the second thread starts (seen under load)."""

    def __init__(self, script, barrier):
        super().__init__(script)
        self.barrier, self.met = barrier, False

    def generate(self, requests, sampling):
        if not self.met:
            self.met = True
            self.barrier.wait(timeout=30)
        return super().generate(requests, sampling)


def test_sharding_over_engines_merges_into_one_file(tmp_path):
    import threading

    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run_eval(one, [ScriptedEngine(SCRIPT)], methods=("best_of_n",))
    barrier = threading.Barrier(2)
    run_eval(two, [_MeetingEngine(SCRIPT, barrier), _MeetingEngine(SCRIPT, barrier)], methods=("best_of_n",))
    rows = ev.read_rows(two)
    assert {r["shard"] for r in rows} == {0, 1}
    assert ev.finished_keys(one) == ev.finished_keys(two)
    assert sorted(r["correct"] for r in rows) == sorted(r["correct"] for r in ev.read_rows(one))


def test_summary_table_and_plot(tmp_path):
    rows = [{"method": "m", "budget": 4, "correct": True, "generated_tokens": 10, "rm_calls": 4, "wall_seconds": 0.5,
             "budget_exhausted": False},
            {"method": "m", "budget": 4, "correct": False, "generated_tokens": 30, "rm_calls": 2, "wall_seconds": 0.25,
             "budget_exhausted": True},
            {"method": "greedy", "budget": 1, "correct": True, "generated_tokens": 5, "rm_calls": 0,
             "wall_seconds": 0.1, "budget_exhausted": False}]
    s = report.summarize(rows)
    assert s[1] == {"method": "m", "budget": 4, "problems": 2, "accuracy": 0.5, "generated_tokens": 20.0,
                    "rm_tokens": 0.0, "model_tokens": 20.0, "rm_calls": 3.0, "wall_seconds": 0.75, "exhausted": 0.5}
    table = report.format_table(s)
    assert "m" in table and "0.500" in table and "20.0" in table
    assert "vs greedy" in table and "-0.500" in table
    more = [{"method": "m", "budget": 8, "accuracy": 1.0, "generated_tokens": 50.0}]
    reach = report.tokens_to_reach(s + more, "m", 4)
    assert reach["methods"]["m"]["generated_tokens"] == 20.0 and reach["methods"]["greedy"]["fraction"] == 0.25
    assert "never" not in report.format_reach(reach) and report.tokens_to_reach(s, "best_of_n", 32) == {}
    png = report.plot(s, tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_options_recipe_and_errors(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: arith\nmethods: [majority, beam_search]\nbudgets: [4, 8]\nset: {width: 2}\n")
    opts = parse_eval_args(["--recipe", str(recipe), "--budgets", "16"])
    assert opts["methods"] == "majority,beam_search" and opts["budgets"] == "16" and opts["set"] == ["width=2"]
    assert ev.parse_sets(["width=2", "select=majority", "lookahead=1"]) == {"width": 2, "select": "majority",
                                                                            "lookahead": 1}
    cfg = ev.build_config(ev.load_procedure("beam_search"), 0.5, 64, 0, {"width": 2})
    assert cfg.width == 2 and cfg.temperature == 0.5 and cfg.max_tokens == 64
    with pytest.raises(ValueError, match="no setting"):
        ev.build_config(ev.load_procedure("majority"), 0.5, 64, 0, {"width": 2})
    with pytest.raises(ValueError, match="unknown search method"):
        ev.load_procedure("nope")
    assert {"greedy", "majority", "beam_search", "dvts", "particle_filter", "epf", "astar"} <= set(ev.procedures())
    assert not {"common", "paths", "tree"} & set(ev.procedures())
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: red\n")
    with pytest.raises(ValueError, match="unknown key"):
        parse_eval_args(["--recipe", str(bad)])


def test_settings_guard_refuses_mixed_results(tmp_path):
    opts = dict(parse_eval_args([]), checkpoint="c", reward="arith_process", engine="hf")
    ev.check_settings(tmp_path, opts)
    ev.write_settings(tmp_path, opts)
    ev.check_settings(tmp_path, opts)  # same settings: fine
    for key, other in [("temperature", 1.0), ("seed", 1), ("dtype", "bfloat16"), ("engine", "vllm"),
                       ("max_model_len", 512)]:
        with pytest.raises(ValueError, match=f"another {key} ") as e:
            ev.check_settings(tmp_path, dict(opts, **{key: other}))
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="another engine"):
        ev.check_settings(tmp_path, dict(opts, servers="http://127.0.0.1:1"))
    assert json.loads((tmp_path / "settings.json").read_text())["checkpoint"] == "c"


def test_arith_judge_and_problems():
    from twinloop.tasks import arith

    rows = arith.load("test", n=2)
    problems = ev.to_problems(rows)
    assert problems[0].id == rows[0]["id"] and "solution" not in problems[0].columns
    judge_fn = ev.make_judge("arith")
    assert judge_fn(problems[0], rows[0]["answer"]) and not judge_fn(problems[0], "-12345")
    assert not judge_fn(problems[0], None)


def test_cli_end_to_end_on_tiny_model(tiny_model_dir, tmp_path):
    """`twinloop eval` through the transformers engine: JSONL, table, PNG; a rerun resumes (adds nothing)."""
    ns = ["--checkpoint", str(tiny_model_dir), "--task", "arith", "--methods", "greedy,best_of_n", "--budgets", "2",
          "--n-problems", "2", "--max-tokens", "8", "--engine", "hf", "--out", str(tmp_path / "run"),
          "--reward", "arith_process"]
    assert eval_cli.main(ns) == 0
    rows = ev.read_rows(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 2 * 2 and {r["method"] for r in rows} == {"greedy", "best_of_n"}
    assert all(r["generated_tokens"] > 0 for r in rows)
    assert (tmp_path / "run" / "accuracy_vs_tokens.png").exists()
    assert len(json.loads((tmp_path / "run" / "summary.json").read_text())) == 2
    assert eval_cli.main(ns) == 0 and len(ev.read_rows(tmp_path / "run" / "results.jsonl")) == 4



def test_shipped_eval_recipes_resolve_to_known_methods_and_rewards():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes" / "eval").glob("*.yaml"))
    assert len(recipes) >= 4
    for path in recipes:
        opts = parse_eval_args(["--recipe", str(path)])
        for method in opts["methods"].split(","):
            assert callable(ev.load_procedure(method).run)  # every named procedure exists
        assert all(int(b) > 0 for b in str(opts["budgets"]).split(","))
        assert opts["out"].startswith("runs/") and opts["checkpoint"] == "checkpoints/tiny-arith-policy"
        reward = str(opts["reward"])
        if not reward.startswith(("runs/rm/", "selfeval:runs/rm/")):  # trained bundles exist only after training
            assert reward_class(reward) is not None, f"{path.name}: reward {reward!r} names no reward class"


def test_lora_rank_for_the_engine_rounds_up_to_a_power_of_two(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
    assert ev.lora_rank(str(tmp_path)) == 16
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    assert ev.lora_rank(str(tmp_path)) == 32
    assert ev.lora_rank(str(tmp_path / "missing")) == 8  # no config: the floor
