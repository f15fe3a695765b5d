"""Choosing the recompute scorer on the dev split (never on test): N samples per problem at T = 0.7, scored by
recomputation (agreement or expected agreement), operand consistency, and both; min / prod / mean over steps;
best-of-N with ties to the earliest sample or to the majority answer, weighted majority, and within-problem
pair accuracy. Greedy and majority for reference.

    python bench/recompute_selection.py --n 8 --problems 200      (about a minute on one core)
"""
from __future__ import annotations

import argparse
import os
from collections import Counter

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def pick(answers, scores, tie: str) -> int:
    counts = Counter(a for a in answers if a is not None)
    if tie == "majority":
        return max(range(len(answers)), key=lambda k: (scores[k], counts.get(answers[k], -1), -k))
    return max(range(len(answers)), key=lambda k: (scores[k], -k))


def weighted_vote(answers, scores):
    tally: Counter = Counter()
    for a, s in zip(answers, scores):
        if a is not None:
            tally[a] += s
    return max(tally, key=lambda a: (tally[a], -answers.index(a))) if tally else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--policy", default="checkpoints/tiny-arith-policy")
    args = ap.parse_args()

    from twinloop.infer.paired import pair_accuracy
    from twinloop.infer.vllm_engine import VLLMEngine
    from twinloop.rewards.process import aggregate, split_steps

    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import arith
    from twinloop.tasks._arith_routes import operands_reward, recompute_reward

    n = args.n
    eng = VLLMEngine(args.policy, dtype="float32", max_model_len=1024, seed=0)
    rows = arith.load("dev", n=args.problems)
    prompts = [Request(messages=r["prompt"]) for r in rows]
    res = eng.generate(prompts, SamplingConfig(n=n, temperature=0.7, max_tokens=160, seed=0))
    greedy = eng.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=160))
    items = [(r, c.text) for r, o in zip(rows, res) for c in o.completions]
    steps = [split_steps(t) for _, t in items]
    keep = [j for j, s in enumerate(steps) if s]
    kept_prompts, kept_steps = [items[j][0]["prompt"] for j in keep], [steps[j] for j in keep]
    recomputed = {}
    for mode in ("agree", "expected"):
        reward = recompute_reward(eng, expected=mode == "expected")
        recomputed[mode] = dict(zip(keep, reward.step_scores(kept_prompts, kept_steps)))
        print(f"{mode}: verifier generated {reward.usage.output_tokens / len(rows):.1f} and uncached prompt "
              f"{reward.usage.input_tokens / len(rows):.1f} tokens per problem")
    operands = dict(zip(keep, operands_reward().step_scores(kept_prompts, kept_steps)))
    eng.close()
    gold = [int(r["answer"]) for r in rows]
    answers = [arith.boxed_int(t) for _, t in items]
    print(f"greedy {sum(arith.boxed_int(g.completions[0].text) == a for g, a in zip(greedy, gold)) / len(rows):.3f}")
    maj = sum(weighted_vote(answers[i * n:(i + 1) * n], [1.0] * n) == gold[i] for i in range(len(rows)))
    print(f"majority@{n} {maj / len(rows):.3f}")

    def report(name, step_rows, how):
        scores = [aggregate(step_rows[j], how) if j in step_rows else 0.0 for j in range(len(items))]
        first = tie_maj = wmaj = 0
        groups = []
        for i in range(len(rows)):
            a, s = answers[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]
            first += a[pick(a, s, "first")] == gold[i]
            tie_maj += a[pick(a, s, "majority")] == gold[i]
            wmaj += weighted_vote(a, s) == gold[i]
            groups.append((s, [x == gold[i] for x in a]))
        pa = pair_accuracy(groups)
        k = len(rows)
        print(f"{name:<26} best-of-{n} {first / k:.3f} (majority ties {tie_maj / k:.3f}) weighted majority "
              f"{wmaj / k:.3f} pair accuracy {pa['pair_accuracy']:.3f} (ties {pa['ties']:.2f}, {pa['pairs']} pairs)")

    for mode, step_rows in recomputed.items():
        both = {j: [min(a, b) for a, b in zip(step_rows[j], operands[j])] for j in step_rows}
        for how in ("min", "prod", "mean"):
            report(f"recompute {mode} {how}", step_rows, how)
            report(f"+operands {mode} {how}", both, how)
    report("operands min", operands, "min")


if __name__ == "__main__":
    main()
