"""V1-PairRL warm-up: a short SFT that teaches the policy the rating formats before PairRL.

The tiny arithmetic policy never writes ``<rating_A>X</rating_A><rating_B>Y</rating_B>``: every verdict is
unparseable, so PairRL's verify role earns reward 0 and gets no gradient. This warm-up is a full fine-tune of a
copy of the policy (TRL ``SFTTrainer``, loss on the completion only) on a mix of
- (a) the policy's own correct solutions (distinct sampled ones, plus its greedy output when correct), so
  generation is not destroyed;
- (b) pairwise rating prompts in the exact ``PAIRWISE_TEMPLATE``, built from pairs of the policy's own samples
  with at least one correct, plus hard negatives (a correct sample against itself with one step's result changed,
  ``rm_data.one_step_negative``); targets from the exact checker (correct -> ``high``, wrong -> ``low``);
- (c) the pointwise prompt the V1 bench uses (``<rating>X</rating>``), so the pointwise baseline is fair.

    python -m twinloop.train.pairrl_warmup --config recipes/arith/pairrl-warmup.yaml
    twinloop train pairrl-warmup --config recipes/arith/pairrl-warmup.yaml

Targets are short (about 44 letter-level tokens), inside PairRL's 64-token verify limit. The ratings say nothing
the model can read off a difficulty prior alone only when both sides come from the same problem; expect the
warm-up judge's within-problem pairwise accuracy near ½ (STACK.md, "Verifiers at tiny scale").
"""
from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twinloop.rewards.pairwise import PAIRWISE_TEMPLATE
from twinloop.train.rm_data import CORRECT, one_step_negative

# the bench's pointwise self-verification prompt (bench/v1_study.py imports it from here)
POINTWISE_TEMPLATE = (
    "You are given a problem and a candidate solution. Check the solution carefully and rate how likely it is to "
    "be correct, from 1 (certainly wrong) to 10 (certainly correct).\n\n"
    "[Problem]\n{prompt}\n\n"
    "[Solution]\n{a}\n[End of Solution]\n\n"
    "After your reasoning, end with exactly: <rating>X</rating>"
)


@dataclass
class WarmupArguments:
    """Warm-up settings; every count and rating is a [check] default."""

    policy_dir: str = field(default="checkpoints/tiny-arith-policy", metadata={"help": "policy to copy"})
    output_dir: str = field(default="runs/pairrl-warmup")
    verifier: str = field(default="arith_outcome", metadata={"help": "the exact checker (reward spec)"})
    train_problems: int = 512
    samples: int = 4
    temperature: float = 1.0
    max_tokens: int = 128
    solutions_per_problem: int = 2
    pairs_per_problem: int = 2
    hard_pairs_per_problem: int = 1
    pointwise_per_problem: int = 2
    high: int = 10
    low: int = 1
    epochs: float = 3.0
    learning_rate: float = 5e-4
    batch_size: int = 16
    max_length: int = 1024
    seed: int = 0


def pairwise_target(label_a: int, label_b: int, high: int = 10, low: int = 1) -> str:
    """The rating completion the exact checker's labels ask for: ``<rating_A>10</rating_A><rating_B>1</rating_B>``."""
    return (f"<rating_A>{high if label_a else low}</rating_A>"
            f"<rating_B>{high if label_b else low}</rating_B>")


def pointwise_target(label: int, high: int = 10, low: int = 1) -> str:
    return f"<rating>{high if label else low}</rating>"


def _row(prompt: str, completion: str, kind: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": completion}], "kind": kind}


def warmup_rows(problems: Sequence[str], samples: Sequence[Sequence[str]], labels: Sequence[Sequence[int | None]],
                greedy: Sequence[str | None], args: WarmupArguments) -> list[dict[str, Any]]:
    """The SFT mix for each problem (its text, the policy's samples, their 0/1 labels, None = unscorable, and its
    greedy output when correct, else None). Pairs hold at least one correct solution; pair order is random; a
    hard negative is a correct sample with one step's result changed, labelled wrong. Shuffled, seeded."""
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    for prompt, texts, ys, best in zip(problems, samples, labels, greedy):
        good = sorted({t for t, y in zip(texts, ys) if y == 1})
        bad = sorted({t for t, y in zip(texts, ys) if y == 0})
        sols = ([best] if best else []) + [t for t in good if t != best]
        rows += [_row(prompt, t, "solution") for t in sols[: args.solutions_per_problem]]
        hard = []
        for t in rng.sample(good, min(len(good), args.hard_pairs_per_problem)):
            made = one_step_negative(t.split("\n\n"), rng)
            if made is not None:
                hard.append((t, "\n\n".join(made[0])))
        pairs = [(a, b, 1, y) for i, a in enumerate(good) for b, y in
                 [(b, 0) for b in bad] + [(b, 1) for b in good[i + 1:]]]
        chosen = rng.sample(pairs, min(len(pairs), args.pairs_per_problem)) + [(a, b, 1, 0) for a, b in hard]
        for a, b, ya, yb in chosen:
            if rng.random() < 0.5:
                a, b, ya, yb = b, a, yb, ya
            rows.append(_row(PAIRWISE_TEMPLATE.format(prompt=prompt, a=a, b=b),
                             pairwise_target(ya, yb, args.high, args.low), "pairwise"))
        singles = [(t, 1) for t in good] + [(t, 0) for t in bad] + [(b, 0) for _, b in hard]
        for t, y in rng.sample(singles, min(len(singles), args.pointwise_per_problem)):
            rows.append(_row(POINTWISE_TEMPLATE.format(prompt=prompt, a=t), pointwise_target(y, args.high, args.low),
                             "pointwise"))
    rng.shuffle(rows)
    return rows


def build_rows(args: WarmupArguments) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sample the policy on the train split (vLLM), label with the exact checker, and build the mix."""
    from twinloop.train.rm_data import make_engine, sample_completions, score_completions

    from twinloop.build import build_reward
    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import arith

    rows = arith.load("train", n=args.train_problems)
    engine = make_engine("vllm", args.policy_dir, seed=args.seed)
    try:
        samples = sample_completions(engine, rows, args.samples, args.temperature, args.max_tokens, args.seed)
        out = engine.generate([Request(messages=list(r["prompt"])) for r in rows],
                              SamplingConfig(n=1, temperature=0.0, max_tokens=args.max_tokens))
        greedy = [o.completions[0].text if o.completions else "" for o in out]
    finally:
        engine.close()
    reward = build_reward(args.verifier, task="arith")
    scores = score_completions(reward, rows, samples)
    greedy_ok = score_completions(reward, rows, [[g] for g in greedy])
    labels = [[None if s is None else int(s >= CORRECT) for s in sc] for sc in scores]
    best = [g if ok[0] is not None and ok[0] >= CORRECT else None for g, ok in zip(greedy, greedy_ok)]
    data = warmup_rows([r["prompt"][-1]["content"] for r in rows], samples, labels, best, args)
    stats = {"problems": len(rows), "sample_accuracy": sum(y == 1 for ys in labels for y in ys)
             / max(1, sum(len(ys) for ys in labels)), "greedy_train_accuracy": sum(b is not None for b in best)
             / max(1, len(rows)), "rows": len(data),
             **{f"rows_{k}": sum(d["kind"] == k for d in data) for k in ("solution", "pairwise", "pointwise")}}
    return data, stats


def train(args: WarmupArguments, data: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Full fine-tune of a copy of the policy on the mix; saves model and tokenizer to ``output_dir``."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    from twinloop.train.common import load_tokenizer

    tok = load_tokenizer(args.policy_dir)
    model = AutoModelForCausalLM.from_pretrained(args.policy_dir, dtype=torch.float32)
    cfg = SFTConfig(output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate,
                    per_device_train_batch_size=args.batch_size, max_length=args.max_length,
                    completion_only_loss=True, lr_scheduler_type="cosine", logging_steps=10,
                    save_strategy="no", report_to="none", seed=args.seed, bf16=False,
                    use_cpu=not torch.cuda.is_available())
    rows = [{k: v for k, v in d.items() if k != "kind"} for d in data]
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.train()
    trainer.save_model(args.output_dir)
    tok.save_pretrained(args.output_dir)
    return trainer.state.log_history


def main(argv: Sequence[str] | None = None) -> int:
    from twinloop.train.common import parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parse_config((WarmupArguments,), argv)
    data, stats = build_rows(args)
    print(json.dumps(stats), flush=True)
    log = train(args, data)
    out = Path(args.output_dir)
    (out / "warmup_report.json").write_text(json.dumps({"args": asdict(args), "data": stats, "log": log}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
