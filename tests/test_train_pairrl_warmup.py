"""The V1-PairRL warm-up's SFT mix (pure) and its short full fine-tune on the shipped tiny policy."""
import re
from pathlib import Path

import torch
from twinloop.rewards.pairwise import parse_ratings
from twinloop.train.pairrl_warmup import (
    POINTWISE_TEMPLATE,
    WarmupArguments,
    pairwise_target,
    pointwise_target,
    warmup_rows,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "checkpoints" / "tiny-arith-policy"

GOOD = "12 + 5 = 17\n\n17 * 2 = 34\n\nAnswer: \\boxed{34}"
GOOD2 = "5 + 12 = 17\n\n17 * 2 = 34\n\nAnswer: \\boxed{34}"
BAD = "12 + 5 = 18\n\n18 * 2 = 36\n\nAnswer: \\boxed{36}"
JUNK = "twelve plus five is ???"  # unscorable: never used
_SOL = re.compile(r"\[Solution A\]\n(.*)\n\[End of Solution A\]\n\n\[Solution B\]\n(.*)\n\[End of Solution B\]", re.S)
_ONE = re.compile(r"\[Solution\]\n(.*)\n\[End of Solution\]", re.S)


def _mix(**kw):
    args = WarmupArguments(**{"pairs_per_problem": 10, "pointwise_per_problem": 10, "hard_pairs_per_problem": 1,
                              **kw})
    samples = [[GOOD, BAD, JUNK, GOOD2, BAD], [BAD, BAD]]
    labels = [[1, 0, None, 1, 0], [0, 0]]
    return warmup_rows(["Compute (12 + 5) * 2 step by step.", "Compute 3 + 4 step by step."], samples, labels,
                       [GOOD2, None], args)


def test_targets_are_the_checker_ratings():
    assert pairwise_target(1, 0) == "<rating_A>10</rating_A><rating_B>1</rating_B>"
    assert parse_ratings(pairwise_target(0, 1)) == (1, 10)
    assert parse_ratings(pairwise_target(1, 1, high=9, low=2)) == (9, 9)
    assert pointwise_target(0) == "<rating>1</rating>" and pointwise_target(1, high=8) == "<rating>8</rating>"


def test_target_fits_the_verify_completion_limit():
    from twinloop.train.common import load_tokenizer

    tok = load_tokenizer(str(POLICY))
    assert len(tok(pairwise_target(1, 0) + "<|im_end|>").input_ids) <= 64


def test_mix_pairs_solutions_and_pointwise_follow_the_labels():
    rows = _mix()
    kinds = [r["kind"] for r in rows]
    # problem 1: greedy + the other distinct correct sample; problem 2 has none
    sols = [r["completion"][0]["content"] for r in rows if r["kind"] == "solution"]
    assert sorted(sols) == sorted([GOOD, GOOD2])
    truth = {GOOD: 1, GOOD2: 1, BAD: 0}
    pairs = [r for r in rows if r["kind"] == "pairwise"]
    # distinct: {GOOD, GOOD2} x {BAD} + (GOOD, GOOD2) = 3 natural pairs, plus 1 hard negative; problem 2: none
    assert len(pairs) == 4
    hard = 0
    for r in pairs:
        a, b = _SOL.search(r["prompt"][0]["content"]).groups()
        ra, rb = parse_ratings(r["completion"][0]["content"])
        if a in truth and b in truth:
            assert (ra, rb) == (10 if truth[a] else 1, 10 if truth[b] else 1)
            assert truth[a] or truth[b]  # never wrong-wrong
        else:  # a correct sample against itself with one step's result changed: one line differs
            hard += 1
            fake, real = (a, b) if b in truth else (b, a)
            assert truth[real] == 1 and (ra, rb) == ((1, 10) if fake == a else (10, 1))
            assert sum(x != y for x, y in zip(fake.split("\n\n"), real.split("\n\n"))) == 1
    assert hard == 1
    assert all(JUNK not in r["prompt"][0]["content"] and r["completion"][0]["content"] != JUNK for r in rows)
    points = [r for r in rows if r["kind"] == "pointwise"]
    assert len(points) == 2 + 1 + 1 + 1  # problem 1: 2 good, 1 bad (distinct), 1 hard; problem 2: 1 bad (distinct)
    for r in points:
        text = _ONE.search(r["prompt"][0]["content"]).group(1)
        want = truth.get(text, 0)
        assert r["completion"][0]["content"] == pointwise_target(want)
        assert r["prompt"][0]["content"].startswith(POINTWISE_TEMPLATE.split("{prompt}")[0])
    assert kinds.count("solution") + len(pairs) + len(points) == len(rows)


def test_mix_caps_and_seed():
    rows = _mix(pairs_per_problem=1, pointwise_per_problem=1, solutions_per_problem=1, hard_pairs_per_problem=0)
    assert [r["kind"] for r in rows].count("pairwise") == 1
    assert [r["kind"] for r in rows].count("pointwise") == 2
    sols = [r["completion"][0]["content"] for r in rows if r["kind"] == "solution"]
    assert sols == [GOOD2]  # the greedy output comes first
    assert _mix(seed=3) == _mix(seed=3) and _mix(seed=3) != _mix(seed=4)


def test_short_sft_writes_a_loadable_policy(tmp_path):
    """The warm-up's full fine-tune on a few rows (one optimizer step) saves a model and tokenizer a trainer
    can start from, and moves the weights."""
    from safetensors.torch import load_file
    from twinloop.train.pairrl_warmup import train

    args = WarmupArguments(policy_dir=str(POLICY), output_dir=str(tmp_path / "w"), batch_size=8,
                           learning_rate=1e-3)
    log = train(args, _mix())
    assert log[-1]["train_loss"] > 0
    before, after = load_file(str(POLICY / "model.safetensors")), load_file(str(tmp_path / "w/model.safetensors"))
    assert max((before[k] - after[k]).abs().max().item() for k in before) > 0
    assert (tmp_path / "w/tokenizer.json").is_file()


def test_recipes_parse():
    from twinloop.train.common import parse_config
    from twinloop.train.pairrl import parse

    (args,) = parse_config((WarmupArguments,), ["--config", str(REPO / "recipes/arith/pairrl-warmup.yaml")])
    assert args.output_dir == "runs/pairrl-warmup" and args.high == 10 and args.low == 1
    from twinloop.cli import TRAINERS

    assert TRAINERS["pairrl-warmup"] == "twinloop.train.pairrl_warmup"
    script, cfg = parse(["--config", str(REPO / "recipes/arith/pairrl-warm.yaml"), "--verify_coef", "0"])
    assert script.model_name_or_path == args.output_dir and cfg.verify_coef == 0.0 and script.task == "arith"
