"""`twinloop quickstart` end to end on a few problems: table, per-problem JSONL, summary and plot."""
import json

from twinloop.cli import main


def test_quickstart_writes_table_jsonl_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["quickstart", "--n-problems", "6", "--n-dev", "6", "--n", "4", "--temperatures", "0.3,0.7",
               "--max-tokens", "96", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "voting temperature chosen on dev" in printed
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["method"], r["budget"]) for r in rows} == {("greedy", 1), ("majority", 4), ("best_of_n", 4)}
    assert len(rows) == 3 * 6
    best = [r for r in rows if r["method"] == "best_of_n"]
    assert all(r["rm_calls"] == 4 and r["generated_tokens"] > 0 for r in best)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voting_temperature"] in (0.3, 0.7) and summary["test_problems"] == 6
    assert {s["method"] for s in summary["summary"]} == {"greedy", "majority", "best_of_n"}
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000


def test_quickstart_rejects_unknown_method(capsys):
    assert main(["quickstart", "--methods", "greedy,bogus"]) == 2
    assert "unknown search method 'bogus'" in capsys.readouterr().err
