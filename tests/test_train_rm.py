"""Reward-model trainers: preference pairs and Monte-Carlo step labels from policy samples, ORM (TRL
RewardTrainer) and PRM (token classification) training, export, and reload as twinloop Reward objects."""
import json
import re

import pytest
import torch
from transformers import TrainerCallback
from twinloop.infer.engine import Completion, Result, Usage

from twinloop.tasks.arith import ArithOutcomeReward, load, split_steps, step_correctness

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(request, tmp_path_factory):
    try:
        return str(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from twinloop.tiny import build_random_tiny

        return str(build_random_tiny(tmp_path_factory.mktemp("tiny") / "model"))


def _wrong(row, j):
    """The gold solution with step j's result off by one and a wrong final answer."""
    steps = split_steps(row["solution"])
    steps[j] = re.sub(r"= (-?\d+)$", lambda m: f"= {int(m.group(1)) + 1}", steps[j])
    steps[-1] = f"Answer: \\boxed{{{int(row['answer']) + 1}}}"
    return "\n\n".join(steps)


class LossLog(TrainerCallback):
    """Keeps every logged training loss."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.seen.append(logs["loss"])


class OracleEngine:
    """An Engine double for MC labelling: from a prefix whose steps are all correct it continues with the gold
    solution; from any other prefix it answers wrongly. Its MC labels must equal exact prefix correctness."""

    def __init__(self, tokenizer, rows):
        self.tokenizer = tokenizer
        self.gold = {r["expression"]: split_steps(r["solution"]) for r in rows}
        self.calls = 0

    def generate(self, requests, sampling):
        self.calls += 1
        out = []
        for req in requests:
            text = self.tokenizer.decode(req.prompt_ids)
            expr = re.search(r"Compute (.*) step by step\.", text).group(1)
            steps = split_steps(text.split("assistant\n", 1)[1])
            ok = all(x == 1.0 for x in step_correctness(expr, steps))
            cont = "\n\n".join(self.gold[expr][len(steps):]) if ok else "Answer: \\boxed{-1}"
            comps = [Completion(token_ids=[], text=cont, finish_reason="stop") for _ in range(sampling.n)]
            out.append(Result(prompt_ids=list(req.prompt_ids), completions=comps, usage=Usage()))
        return out


def test_preference_pairs_chosen_correct_rejected_wrong():
    from twinloop.train.rm_data import preference_pairs, score_completions

    rows = load("train", n=3, seed=7)
    comps = [[r["solution"], _wrong(r, 0), r["solution"], "no answer here"] for r in rows]
    scores = score_completions(ArithOutcomeReward(), rows, comps)
    assert scores[0] == [1.0, 0.0, 1.0, 0.0]
    pairs = preference_pairs(rows, comps, scores, max_pairs_per_prompt=4)
    assert len(pairs) == 3 * 2  # one distinct correct text x two distinct wrong texts per prompt
    reward = ArithOutcomeReward()
    for p in pairs:
        answer = next(r["answer"] for r in rows if r["prompt"] == p["prompt"])
        assert reward([p["prompt"]], [p["chosen"]], answer=[answer]) == [1.0]
        assert reward([p["prompt"]], [p["rejected"]], answer=[answer]) == [0.0]
    assert preference_pairs(rows, [[r["solution"]] for r in rows], [[1.0]] * 3) == []  # no wrong sample


def test_mc_step_labels_match_exact_prefix_correctness(tiny_dir):
    from twinloop.train.common import load_tokenizer
    from twinloop.train.prm import with_exact_labels
    from twinloop.train.rm_data import mc_step_labels

    rows = load("train", n=4, seed=3)
    engine = OracleEngine(load_tokenizer(tiny_dir), rows)
    comps = [[r["solution"], _wrong(r, 1)] for r in rows]
    examples = with_exact_labels("arith",
                                 mc_step_labels(engine, ArithOutcomeReward(), rows, comps, rollouts=2))
    assert engine.calls == 1  # every prefix's rollouts in one batch
    assert len(examples) == 8
    for e in examples:
        assert e["labels"] == e["exact"]
        assert all(r in (0.0, 1.0) for r in e["rates"])
    assert examples[0]["labels"] == [1] * len(examples[0]["steps"])
    assert examples[1]["labels"][:2] == [1, 0] and examples[1]["labels"][-1] == 0


def test_orm_trains_exports_and_reloads_as_scalar_rm(tiny_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification
    from twinloop.rewards.scalar import ScalarRM
    from twinloop.train.common import load_tokenizer
    from twinloop.train.orm import ORMConfig, ORMScriptArguments, pair_accuracy, train_orm
    from twinloop.train.rm_data import hard_negative_pairs, preference_pairs, score_completions

    def pairs_for(split, n, seed, hard=0):
        rows = load(split, n=n, seed=seed)
        comps = [[r["solution"], "I think\n\nAnswer: \\boxed{0}"] for r in rows]
        scores = score_completions(ArithOutcomeReward(), rows, comps)
        return preference_pairs(rows, comps, scores), [{**p, "hard": True} for p in
                                                       hard_negative_pairs(rows[:hard], comps, scores, 1)]

    (train, train_hard), (held_out, held_hard) = pairs_for("train", 24, 1, hard=4), pairs_for("dev", 12, 2, hard=12)
    script = ORMScriptArguments(policy_dir=tiny_dir, export_dir=str(tmp_path / "rm"))
    cfg = ORMConfig(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=8,
                    num_train_epochs=3, learning_rate=1e-3, save_strategy="no", logging_steps=1, seed=0,
                    disable_tqdm=True)
    export, metrics = train_orm(script, cfg, train + train_hard, held_out + held_hard)
    assert metrics["train_pair_accuracy"] >= 0.9 and metrics["eval_pair_accuracy"] >= 0.9
    assert (metrics["train_hard_pairs"], metrics["eval_pairs"], metrics["eval_hard_pairs"]) == (4, 12, 12)
    spec = json.loads((tmp_path / "rm" / "twinloop_reward.json").read_text())
    assert spec["kind"] == "orm" and spec["reward_class"] == "twinloop.rewards.scalar:ScalarRM"
    assert "ORM" in (tmp_path / "rm" / "README.md").read_text()
    a, b = (ScalarRM(model=AutoModelForSequenceClassification.from_pretrained(export).eval(),
                     tokenizer=load_tokenizer(export)) for _ in range(2))
    prompts, comps = [p["prompt"] for p in held_out], [p["chosen"] for p in held_out]
    assert a(prompts, comps) == pytest.approx(b(prompts, comps), rel=1e-5, abs=1e-6)  # CPU fp32 reductions
    assert pair_accuracy(a, held_out) == metrics["eval_pair_accuracy"]
    assert pair_accuracy(a, held_hard) == metrics["eval_hard_pair_accuracy"]  # the hard pairs, reported apart


def test_prm_trains_exports_and_reloads_as_token_classifier_prm(tiny_dir, tmp_path):
    from transformers import AutoModelForTokenClassification
    from twinloop.rewards.process import TokenClassifierPRM
    from twinloop.train.common import load_tokenizer
    from twinloop.train.prm import PRMConfig, PRMScriptArguments, step_accuracy, train_prm, with_exact_labels
    from twinloop.train.rm_data import mc_step_labels

    def examples(split, n, seed):
        rows = load(split, n=n, seed=seed)
        engine = OracleEngine(load_tokenizer(tiny_dir), rows)
        comps = [[r["solution"], _wrong(r, 0)] for r in rows]
        return with_exact_labels("arith", mc_step_labels(engine, ArithOutcomeReward(), rows, comps,
                                                                         rollouts=1))

    train, held_out = examples("train", 16, 1), examples("dev", 8, 2)
    # the oracle continues a prefix correctly exactly when every step so far is right: its Monte-Carlo labels
    # must be the exact prefix labels, step by step (gold chains all 1, chains wrong from step 0 all 0)
    assert all(e["labels"] == e["exact"] for e in train + held_out)
    assert all(all(e["labels"]) for e in held_out[::2]) and not any(any(e["labels"]) for e in held_out[1::2])
    script = PRMScriptArguments(policy_dir=tiny_dir, export_dir=str(tmp_path / "prm"))
    cfg = PRMConfig(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=8,
                    num_train_epochs=4, learning_rate=2e-3, save_strategy="no", logging_steps=1, seed=0,
                    disable_tqdm=True)
    losses = LossLog()
    export, metrics = train_prm(script, cfg, train, held_out, callbacks=[losses])
    assert len(losses.seen) == 4 * 4 and losses.seen[-1] < losses.seen[0]  # 4 epochs of 4 batches; it learns
    base_rate = sum(lab for e in held_out for lab in e["labels"]) / sum(len(e["labels"]) for e in held_out)
    assert metrics["train_step_accuracy_mc"] > max(base_rate, 1 - base_rate)  # beats the majority label
    spec = json.loads((tmp_path / "prm" / "twinloop_reward.json").read_text())
    assert spec["kind"] == "prm" and spec["settings"]["delimiter"] == "\n\n"
    prm = TokenClassifierPRM(model=AutoModelForTokenClassification.from_pretrained(export).eval(),
                             tokenizer=load_tokenizer(export), **spec["settings"])
    assert step_accuracy(prm, held_out) == metrics["eval_step_accuracy_mc"]
    prompts = [e["prompt"] for e in held_out[:2]]
    scores = prm(prompts, ["\n\n".join(e["steps"]) for e in held_out[:2]])
    per_step = prm.step_scores(prompts, [e["steps"] for e in held_out[:2]])
    assert [len(x) for x in per_step] == [len(e["steps"]) for e in held_out[:2]]
    assert scores == pytest.approx([min(x) for x in per_step], rel=1e-5, abs=1e-6)  # the exported min aggregation


# ------------------------------------------------------------------------------ hard negatives
class SolutionEngine(OracleEngine):
    """Chat requests get the gold solution and one wrong sample, alternately; prefix requests go to the oracle."""

    def generate(self, requests, sampling):
        if requests and requests[0].messages is None:
            return super().generate(requests, sampling)
        out = []
        for req in requests:
            expr = re.search(r"Compute (.*) step by step\.", req.messages[-1]["content"]).group(1)
            gold = self.gold[expr]
            wrong = list(gold)
            wrong[-1] = "Answer: \\boxed{-7}"
            texts = ["\n\n".join(gold) if i % 2 == 0 else "\n\n".join(wrong) for i in range(sampling.n)]
            comps = [Completion(token_ids=[], text=t, finish_reason="stop") for t in texts]
            out.append(Result(prompt_ids=[], completions=comps, usage=Usage()))
        return out


def test_hard_negative_pairs_differ_from_a_correct_sample_in_one_step():
    from twinloop.train.rm_data import hard_negative_pairs, score_completions

    rows = load("train", n=3, seed=7)
    comps = [[r["solution"], _wrong(r, 0), r["solution"], f"Answer: \\boxed{{{r['answer']}}}"] for r in rows]
    scores = score_completions(ArithOutcomeReward(), rows, comps)
    pairs = hard_negative_pairs(rows, comps, scores, per_prompt=2, seed=1)
    # per prompt two distinct correct texts: the solution, and a bare answer with no equation (no negative)
    assert len(pairs) == 3
    for row, p in zip(rows, pairs):
        chosen, rejected = split_steps(p["chosen"][0]["content"]), split_steps(p["rejected"][0]["content"])
        assert chosen == split_steps(row["solution"]) and len(rejected) == len(chosen)
        changed = [k for k, (a, b) in enumerate(zip(chosen, rejected)) if a != b]
        assert len(changed) == 1 and changed[0] < len(chosen) - 1  # an equation step, not the answer
        assert step_correctness(row["expression"], rejected)[changed[0]] == 0.0
    assert hard_negative_pairs(rows, comps, scores, per_prompt=0) == []
    assert hard_negative_pairs(rows, [[_wrong(r, 0)] for r in rows], [[0.0]] * 3, per_prompt=2) == []


def test_orm_and_prm_data_add_hard_negatives_when_asked(tiny_dir):
    from twinloop.train.common import load_tokenizer
    from twinloop.train.orm import ORMScriptArguments, build_pairs
    from twinloop.train.prm import PRMScriptArguments, build_examples

    rows = load("train", n=6)
    engine = SolutionEngine(load_tokenizer(tiny_dir), rows + load("dev", n=6))
    plain = build_pairs(ORMScriptArguments(samples_per_problem=2), "train", 6, engine, ArithOutcomeReward(), 0)
    both = build_pairs(ORMScriptArguments(samples_per_problem=2, hard_negatives=1), "train", 6, engine,
                       ArithOutcomeReward(), 0)
    assert len(plain) == 6 and not any(p.get("hard") for p in plain)
    hard = [p for p in both if p.get("hard")]
    assert len(both) == 12 and len(hard) == 6
    assert all(p["chosen"] == q["chosen"] for p, q in zip(hard, plain))  # the correct sample is the chosen side

    script = PRMScriptArguments(samples_per_problem=2, rollouts=1, hard_negatives=True)
    train = build_examples(script, "train", 6, engine, ArithOutcomeReward(), 0)
    negatives = [e for e in train if e.get("negative")]
    assert len(train) == 12 + 6 and len(negatives) == 6  # one per all-good sample (the gold solutions)
    for e in negatives:  # MC labels (the oracle engine) agree with exact correctness on the changed copies too
        assert e["labels"] == e["exact"] and 0 in e["labels"]
    held = build_examples(script, "dev", 6, engine, ArithOutcomeReward(), 1)
    assert len(held) == 12 and not any(e.get("negative") for e in held)  # held-out data stay as sampled
