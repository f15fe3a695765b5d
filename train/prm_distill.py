"""Distil the no-oracle recompute verifier into a learned token-classification PRM (no oracle anywhere).

The policy's own samples are labelled step by step by recomputation + operand consistency
(``twinloop.tasks._arith_routes.recompute_operands_reward`` on the policy engine): a step is good while every
step so far passed. Hard negatives: each fully verified sample also appears with one step's result changed
(by ±1, ±2 or ±10), labelled bad from that step on; it differs from a verified sample in that one step.
Training is twinloop's PRM trainer (``train.prm.train_prm``). Reported on held-out dev samples: within-problem
pair accuracy (a correct against a wrong sample of the same problem; gold answers used only here) of the
learned PRM and of the recompute verifier it was distilled from.

    python -m twinloop.train.prm_distill --output_dir runs/rm/prm-recompute
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twinloop.train.rm_data import DELTAS, one_step_negatives, perturb_step  # noqa: F401  (re-exported)


def prefix_labels(step_scores: Sequence[float], threshold: float = 0.5) -> list[int]:
    """1 while every step so far scored at least ``threshold``, then 0 (what "this prefix is still good" means)."""
    out, ok = [], True
    for s in step_scores:
        ok = ok and s >= threshold
        out.append(int(ok))
    return out


def labelled_samples(engine: Any, verifier: Any, rows: Sequence[dict[str, Any]], n: int, temperature: float,
                     max_tokens: int, seed: int, delimiter: str = "\n\n") -> list[dict[str, Any]]:
    """``n`` policy samples per row with recompute step labels (and the gold outcome, for evaluation only)."""
    from twinloop.rewards.process import split_steps
    from twinloop.train.rm_data import sample_completions

    from twinloop.tasks import arith

    comps = sample_completions(engine, rows, n, temperature, max_tokens, seed=seed)
    items = [(i, r, split_steps(c, delimiter)) for i, (r, cs) in enumerate(zip(rows, comps)) for c in cs]
    items = [(i, r, s) for i, r, s in items if s]
    scores = verifier.step_scores([r["prompt"] for _, r, _ in items], [s for _, _, s in items])
    out = []
    for (i, r, steps), row in zip(items, scores):
        labels = prefix_labels(row)
        if arith.boxed_int(steps[-1]) is None:  # no answer: the response as a whole is not good
            labels[-1] = 0
        out.append({"prompt": list(r["prompt"]), "steps": [s.strip() for s in steps], "labels": labels,
                    "problem": i, "expression": r["expression"], "answer": arith.boxed_int(steps[-1]),
                    "correct": str(arith.boxed_int(steps[-1])) == str(r["answer"])})
    return out


def held_out_pair_accuracy(score_rows: Sequence[float], examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Within-problem pair accuracy of response scores on held-out samples (gold outcome per sample)."""
    from twinloop.infer.paired import pair_accuracy

    groups: dict[int, tuple[list[float], list[bool]]] = {}
    for s, e in zip(score_rows, examples):
        g = groups.setdefault(e["problem"], ([], []))
        g[0].append(s)
        g[1].append(bool(e["correct"]))
    return pair_accuracy(list(groups.values()))


def best_of_n_accuracy(scores: Sequence[float], examples: Sequence[dict[str, Any]], problems: int) -> float:
    """Held-out best-of-N: per problem the highest-scored sample (ties: the earliest), right or wrong; problems
    with no sample count as wrong."""
    best: dict[int, tuple[float, bool]] = {}
    for s, e in zip(scores, examples):
        if e["problem"] not in best or s > best[e["problem"]][0]:
            best[e["problem"]] = (s, bool(e["correct"]))
    return sum(ok for _, ok in best.values()) / problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy_dir", default="checkpoints/tiny-arith-policy")
    ap.add_argument("--output_dir", default="runs/rm/prm-recompute")
    ap.add_argument("--train_problems", type=int, default=400)
    ap.add_argument("--eval_problems", type=int, default=200)
    ap.add_argument("--samples_per_problem", type=int, default=4)
    ap.add_argument("--eval_samples", type=int, default=8, help="held-out samples per problem (best-of-N there)")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max_tokens", type=int, default=160)
    ap.add_argument("--learning_rate", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForTokenClassification
    from twinloop.rewards.process import TokenClassifierPRM, aggregate
    from twinloop.train.gppo import load_tokenizer
    from twinloop.train.prm import PRMConfig, PRMScriptArguments, train_prm, with_exact_labels
    from twinloop.train.rm_data import make_engine

    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import arith
    from twinloop.tasks._arith_routes import recompute_operands_reward

    torch.set_num_threads(1)
    engine = make_engine("vllm", args.policy_dir, seed=args.seed)
    verifier = recompute_operands_reward(engine)
    train = labelled_samples(engine, verifier, arith.load("train", n=args.train_problems, seed=99),
                             args.samples_per_problem, args.temperature, args.max_tokens, args.seed)
    train_tokens = verifier.usage.output_tokens + verifier.usage.input_tokens
    dev = arith.load("dev", n=args.eval_problems)
    held = labelled_samples(engine, verifier, dev, args.eval_samples, args.temperature, args.max_tokens,
                            args.seed + 1)
    held_tokens = verifier.usage.output_tokens + verifier.usage.input_tokens - train_tokens
    greedy = engine.generate([Request(messages=list(r["prompt"])) for r in dev],
                             SamplingConfig(n=1, temperature=0.0, max_tokens=args.max_tokens))
    greedy_acc = sum(str(arith.boxed_int(g.completions[0].text)) == str(r["answer"]) for g, r in zip(greedy, dev))
    recompute_scores = [aggregate(verifier.step_scores([e["prompt"]], [e["steps"]])[0], "min") for e in held]
    engine.close()
    negatives = one_step_negatives(train, args.seed)
    with_exact_labels("arith", held)  # held-out exact step labels: evaluation only
    script = PRMScriptArguments(policy_dir=args.policy_dir, aggregation="min")
    cfg = PRMConfig(output_dir=args.output_dir, learning_rate=args.learning_rate, num_train_epochs=args.epochs,
                    use_cpu=True, bf16=False, save_strategy="no", report_to=[], seed=args.seed, logging_steps=50)
    export, metrics = train_prm(script, cfg, train + negatives, held)
    model = AutoModelForTokenClassification.from_pretrained(export).eval()
    prm = TokenClassifierPRM(model=model, tokenizer=load_tokenizer(export), aggregation="min")
    prm_scores = [aggregate(r, "min") for r in prm.step_scores([e["prompt"] for e in held], [e["steps"] for e in held])]
    n_dev = len(dev)
    votes: dict[int, Counter] = {}
    for e in held:
        votes.setdefault(e["problem"], Counter())[e["answer"]] += e["answer"] is not None
    majority = sum(bool(v) and str(v.most_common(1)[0][0]) == str(dev[p]["answer"]) for p, v in votes.items())
    labels = [lab for e in train for lab in e["labels"]]
    report = {**metrics, "train_samples": len(train), "hard_negatives": len(negatives),
              "train_good_step_rate": sum(labels) / max(1, len(labels)),
              "verifier_tokens_labelling_train": train_tokens,
              f"held_out_best_of_{args.eval_samples}": {
                  "greedy": greedy_acc / n_dev, "majority": majority / n_dev,
                  "recompute+operands": best_of_n_accuracy(recompute_scores, held, n_dev),
                  "distilled_prm": best_of_n_accuracy(prm_scores, held, n_dev),
                  "recompute_verifier_tokens_per_problem": held_tokens / n_dev,
                  "prm_input_tokens_per_problem": prm.usage.input_tokens / n_dev},
              "held_out_pair_accuracy_prm": held_out_pair_accuracy(prm_scores, held),
              "held_out_pair_accuracy_recompute": held_out_pair_accuracy(recompute_scores, held)}
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    Path(args.output_dir, "distill_metrics.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
