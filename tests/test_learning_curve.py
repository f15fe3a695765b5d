"""The GPPO-against-GRPO learning-curve script, end to end on a tiny random model (transformers generation)."""
import json


def test_learning_curve_runs_both_variants_from_the_recipe(tiny_model_dir, tmp_path):
    from twinloop.train.learning_curve import main

    out = tmp_path / "curve"
    rc = main(["--policy", str(tiny_model_dir), "--steps", "2", "--eval-every", "1", "--eval-size", "4",
               "--out", str(out), "--per_device_train_batch_size", "8", "--num_generations", "4",
               "--max_completion_length", "8", "--reward_funcs", "twinloop.tasks.arith:ArithOutcomeReward"])
    assert rc == 0
    rows = [json.loads(line) for line in open(out / "curve.jsonl")]
    for variant in ("gppo", "grpo"):
        assert [r["step"] for r in rows if r["variant"] == variant] == [0, 1, 2]
    assert all(0.0 <= r["greedy_acc"] <= 1.0 for r in rows)
    assert (out / "curve.png").stat().st_size > 1000
