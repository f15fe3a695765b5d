"""The GPPO-against-GRPO learning-curve script, end to end on the shipped tiny policy (transformers generation)."""
import json
from pathlib import Path

POLICY = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-arith-policy"


def test_learning_curve_runs_both_variants_from_the_recipe(tmp_path):
    from transformers import AutoModelForCausalLM
    from twinloop.train.gppo import load_tokenizer
    from twinloop.train.learning_curve import greedy_accuracy, main

    from twinloop.tasks.arith import ArithOutcomeReward, load

    out = tmp_path / "curve"
    rc = main(["--policy", str(POLICY), "--steps", "2", "--eval-every", "1", "--eval-size", "8",
               "--out", str(out), "--per_device_train_batch_size", "8", "--num_generations", "4",
               "--max_completion_length", "8", "--reward_funcs", "twinloop.tasks.arith:ArithOutcomeReward"])
    assert rc == 0
    rows = [json.loads(line) for line in open(out / "curve.jsonl")]
    for variant in ("gppo", "grpo"):
        assert [r["step"] for r in rows if r["variant"] == variant] == [0, 1, 2]
    # step 0 is the untouched policy's greedy accuracy on the first 8 held-out test problems, for both variants
    policy = AutoModelForCausalLM.from_pretrained(POLICY, dtype="float32")
    untouched = greedy_accuracy(policy, load_tokenizer(str(POLICY)), load("test", n=8), ArithOutcomeReward())
    assert 0 < untouched < 1  # the shipped policy solves some of them, not all
    assert [r["greedy_acc"] for r in rows if r["step"] == 0] == [untouched, untouched]
    assert all(r["greedy_acc"] * 8 == round(r["greedy_acc"] * 8) for r in rows)  # a share of 8 problems
    assert (out / "curve.png").stat().st_size > 1000
