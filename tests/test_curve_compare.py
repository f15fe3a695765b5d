"""bench/curve_compare.py: curves from several learning-curve files, one table row per run."""
import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("curve_compare",
                                              Path(__file__).resolve().parents[1] / "bench" / "curve_compare.py")
curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(curves)


def test_runs_are_read_in_step_order_and_tabulated_side_by_side(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"step": s, "greedy_acc": v}) + "\n" for s, v in ((50, 0.5), (0, 0.4), (50, 0.6))))
    b.write_text(json.dumps({"step": 0, "greedy_acc": 0.4}) + "\n")
    runs = curves.read_runs([f"exact={a}", f"distilled={b}"])
    assert [r["step"] for r in runs["exact"]] == [0, 50] and runs["exact"][1]["greedy_acc"] == 0.6  # a resumed step
    assert curves.markdown(runs).splitlines()[2:] == ["| exact | 0.400 | 0.600 |", "| distilled | 0.400 | - |"]
    with pytest.raises(ValueError, match="LABEL=PATH"):
        curves.read_runs([str(a)])
