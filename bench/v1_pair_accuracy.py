"""The verifier's within-problem pairwise accuracy of several judges on the SAME mixed pairs.

    python bench/v1_pair_accuracy.py sample --policy runs/pairrl-warmup --problems 100 --out runs/pairs.json
    python bench/v1_pair_accuracy.py judge --judge runs/pairrl-warm-l1 --pairs runs/pairs.json

``sample`` draws 4 candidates per test problem at T = 1.0 and keeps every mixed (correct, wrong) pair; ``judge``
rates each pair in both orders (greedy, 64 tokens) and prints the accuracy (a verdict that ranks the correct side
higher counts 1, a tie or unparseable ½; a pair scores the mean of its two orders; s.e. over pairs), the
share of ties, unparseable verdicts and the commonest verdicts.
One engine per process. Not a test.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def verdict_score(ratings: tuple[int, int] | None, label_a: int, label_b: int) -> float:
    """1 when the correct side is rated higher, 0 when lower, ½ for a tie or no verdict."""
    if ratings is None or ratings[0] == ratings[1]:
        return 0.5
    return float((ratings[0] > ratings[1]) == (label_a > label_b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=["sample", "judge"])
    ap.add_argument("--policy", default="runs/pairrl-warmup")
    ap.add_argument("--judge")
    ap.add_argument("--pairs", default="runs/v1-pairs.json")
    ap.add_argument("--out")
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from twinloop.infer.search._common import canonical_answer
    from twinloop.infer.vllm_engine import VLLMEngine
    from twinloop.rewards.pairwise import PairwiseVerifier

    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import arith

    if args.cmd == "sample":
        rows = arith.load("test", n=args.problems)
        eng = VLLMEngine(args.policy, dtype="float32", max_model_len=1024, seed=args.seed)
        out = eng.generate([Request(messages=list(r["prompt"])) for r in rows],
                           SamplingConfig(n=4, temperature=1.0, max_tokens=128, seed=args.seed))
        eng.close()
        pairs = []
        for r, o in zip(rows, out):
            cs = [c.text for c in o.completions]
            ok = [canonical_answer(arith.boxed_int(c)) == canonical_answer(r["answer"]) for c in cs]
            pairs += [{"problem": r["prompt"][-1]["content"], "a": cs[i], "b": cs[j], "y": [int(ok[i]), int(ok[j])]}
                      for i in range(len(cs)) for j in range(i + 1, len(cs)) if ok[i] != ok[j]]
        json.dump({"policy": args.policy, "problems": len(rows), "pairs": pairs}, open(args.out or args.pairs, "w"))
        print(f"{len(pairs)} mixed pairs from {len(rows)} problems")
        return 0
    data = json.load(open(args.pairs))
    eng = VLLMEngine(args.judge, dtype="float32", max_model_len=1024, seed=args.seed)
    v = PairwiseVerifier(eng, temperature=0.0, max_tokens=64, both_orders=True)
    rated = v.rate_pairs([(p["problem"], p["a"], p["b"]) for p in data["pairs"]])
    eng.close()
    # one score per pair (the mean of its two presentations), so the s.e. is over pairs
    scores = [sum(verdict_score(r, *p["y"]) for r in rs) / len(rs) for p, rs in zip(data["pairs"], rated)]
    flat = [r for rs in rated for r in rs]
    n = len(scores)
    mean = sum(scores) / n
    se = (sum((s - mean) ** 2 for s in scores) / max(1, n - 1) / n) ** 0.5
    report = {"judge": args.judge, "pairs": len(data["pairs"]), "judgments": len(flat), "accuracy": mean, "se": se,
              "ties": sum(r is not None and r[0] == r[1] for r in flat) / len(flat),
              "unparseable": sum(r is None for r in flat) / len(flat),
              "common": [[str(k), c] for k, c in collections.Counter(flat).most_common(5)]}
    print(json.dumps(report))
    if args.out:
        json.dump(report, open(args.out, "w"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
