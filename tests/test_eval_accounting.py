"""`twinloop eval` accounting and resume: total model tokens (policy + judge) in the table and on the plot's
axis when the judge runs on the policy's model, the resume guard's settings, settings.json written only
once the engines built, and --servers work reassigned from a dead server (local fake servers)."""
import json
import time

import pytest
from fake_openai_server import FakeServer, echo_reply
from scripted_engine import CharTokenizer
from twinloop.infer import evaluate as ev
from twinloop.infer import report
from twinloop.infer.openai_engine import OpenAIEngine
from twinloop.infer.search._common import Problem, last_boxed

from twinloop import eval_cli
from twinloop.contracts import EngineError

ROWS = [  # a judge on the policy's model: "v1" spends few generated tokens but many judge tokens
    {"method": "v1", "budget": 4, "correct": True, "generated_tokens": 40, "rm_tokens": 400, "rm_calls": 8,
     "wall_seconds": 1.0, "budget_exhausted": False},
    {"method": "best_of_n", "budget": 4, "correct": False, "generated_tokens": 40, "rm_tokens": 0, "rm_calls": 4,
     "wall_seconds": 1.0, "budget_exhausted": False},
    {"method": "best_of_n", "budget": 16, "correct": True, "generated_tokens": 160, "rm_tokens": 0, "rm_calls": 16,
     "wall_seconds": 1.0, "budget_exhausted": False}]


def test_model_tokens_in_table_and_as_the_compute_axis(tmp_path, capsys):
    s = report.summarize(ROWS)
    v1 = next(x for x in s if x["method"] == "v1")
    assert v1["rm_tokens"] == 400.0 and v1["model_tokens"] == 440.0 and v1["generated_tokens"] == 40.0
    table = report.format_table(s)
    assert "model tok" in table.splitlines()[0] and "440.0" in table
    by_gen = report.tokens_to_reach(s, "best_of_n", 16)
    by_model = report.tokens_to_reach(s, "best_of_n", 16, x="model_tokens")
    assert by_gen["methods"]["v1"]["fraction"] == 0.25 and by_model["methods"]["v1"]["fraction"] == 2.75
    report.report(ROWS, tmp_path, "t", lm_judge=True, reference=("best_of_n", 16))
    printed = capsys.readouterr().out
    assert "model tokens to reach best_of_n@16" in printed and "(2.75x)" in printed
    assert (tmp_path / "accuracy_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "summary.json").read_text())[2]["model_tokens"] == 440.0
    report.report(ROWS, tmp_path, "t", lm_judge=False, reference=("best_of_n", 16), draw=False)
    assert "(0.25x)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="plot x"):
        report.plot(s, tmp_path / "x.png", x="rm_calls")


def _ns(model, out, **kw):
    """`twinloop eval` flags (EvalConfig through HfArgumentParser)."""
    opts = dict(checkpoint=str(model), task="arith", methods="greedy", budgets="2", n_problems=2, max_tokens=4,
                engine="hf", out=str(out), reward="none", no_plot=True, **kw)
    return [a for k, v in opts.items() for a in (f"--{k}", str(v))]


def test_resume_under_another_seed_is_refused(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert eval_cli.main(_ns(tiny_model_dir, out)) == 0
    before = (out / "results.jsonl").read_text()
    with pytest.raises(ValueError, match="another seed") as e:
        eval_cli.main(_ns(tiny_model_dir, out, seed=1))
    assert "\n" not in str(e.value) and (out / "results.jsonl").read_text() == before
    with pytest.raises(ValueError, match="another dtype"):
        eval_cli.main(_ns(tiny_model_dir, out, dtype="bfloat16"))


def test_settings_written_only_after_the_engines_built(tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()  # no config.json: the engine refuses to build
    out = tmp_path / "run"
    with pytest.raises(EngineError):
        eval_cli.main(_ns(broken, out))
    assert not (out / "settings.json").exists()


def slow_reply(prompt, body):
    time.sleep(0.05)
    return echo_reply(prompt, body)


def _serve(servers):
    return [OpenAIEngine(s.url, CharTokenizer(), retries=0, backoff=0.0) for s in servers]


PROBLEMS = [Problem([1, 2, i], {"answer": "x"}, id=f"p{i}") for i in range(6)]


def _evaluate(path, engines, retries=2):
    return ev.evaluate(PROBLEMS, engines, ["greedy"], [1], path, lambda p, a: False, lambda engine: None,
                       lambda m: m.Config(answer_fn=last_boxed, max_tokens=4), batch=1, progress=False,
                       retries=retries)


def test_a_dead_servers_jobs_go_to_the_live_one(tmp_path):
    healthy, dying = FakeServer(slow_reply), FakeServer(fail_after=1)
    try:
        path = tmp_path / "results.jsonl"
        assert _evaluate(path, _serve([healthy, dying])) == 6
        rows = report.read_rows(path)
        assert sorted(r["problem_id"] for r in rows) == [f"p{i}" for i in range(6)]
        assert [r["shard"] for r in rows].count(1) == 1 and dying.completions == 1
        assert healthy.completions == 5
    finally:
        healthy.close()
        dying.close()


def test_every_server_dead_stops_with_one_line_and_keeps_rows(tmp_path):
    a, b = FakeServer(fail_after=1), FakeServer(fail_after=2)
    try:
        path = tmp_path / "results.jsonl"
        with pytest.raises(EngineError, match="every engine failed") as e:
            _evaluate(path, _serve([a, b]))
        assert "\n" not in str(e.value) and len(report.read_rows(path)) == 3  # 1 + 2 finished before dying
    finally:
        a.close()
        b.close()


def test_run_queue_bounds_the_retries_of_a_failing_job():
    tries = []

    def work(worker, job):
        if job == "poison":
            tries.append(worker)
            raise EngineError("boom")

    with pytest.raises(EngineError, match="failed 2 times"):
        ev.run_queue(["a", "poison", "b"], 3, work, retries=1)
    assert len(tries) == 2 and len(set(tries)) == 2  # each try on another engine
    done = []
    ev.run_queue(list(range(5)), 2, lambda w, j: done.append(j))
    assert sorted(done) == list(range(5))
