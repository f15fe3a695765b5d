"""Greedy against majority@16 on the arithmetic task, by sampling temperature and operation count (prints tables).

    python bench/voting_study.py [--checkpoint checkpoints/tiny-arith-policy] [--n 300]

1. The dev split (200 problems): greedy, then for each T majority@16, pass@16 (= best-of-16 with the verifiable
   reward) and distinct answers per 16 samples. This is where a voting temperature may be chosen.
2. Fresh problem sets with a fixed number of operations (seed 1000 + ops: neither dev nor test), ``--n`` each:
   greedy against majority@16 at each T.

Seeded through vLLM; the numbers in the shipped model card come from this script. Not a test.
"""
from __future__ import annotations

import argparse
import random
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/tiny-arith-policy")
    ap.add_argument("--n", type=int, default=300, help="problems per fresh operation-count set")
    ap.add_argument("--temperatures", default="0.3,0.5,0.7,1.0")
    ap.add_argument("--ops", default="2,3,4", help="operation counts of the fresh sets")
    ap.add_argument("--max-tokens", type=int, default=160)
    args = ap.parse_args(argv)

    from twinloop.infer.engine import Request, SamplingConfig
    from twinloop.infer.search._common import canonical_answer, vote

    from twinloop.build import build_engine
    from twinloop.tasks import arith

    temps = [float(t) for t in args.temperatures.split(",")]
    engine = build_engine(f"vllm:{args.checkpoint}", dtype="float32", max_model_len=1024, seed=0)

    def answers(rows, n, temperature):
        res = engine.generate([Request(messages=r["prompt"]) for r in rows],
                              SamplingConfig(n=n, temperature=temperature, max_tokens=args.max_tokens, seed=0))
        return [[arith.boxed_int(c.text) for c in o.completions] for o in res]

    def scores(rows, temperature):
        """(majority@16, pass@16, distinct answers per problem) at ``temperature``."""
        maj = hit = distinct = 0
        for got, row in zip(answers(rows, 16, temperature), rows):
            winner, tally = vote([None if a is None else str(a) for a in got])
            gold = canonical_answer(row["answer"])
            maj += winner == gold
            hit += gold in tally
            distinct += len(tally)
        return maj / len(rows), hit / len(rows), distinct / len(rows)

    def greedy(rows):
        return sum(a[0] == int(r["answer"]) for a, r in zip(answers(rows, 1, 0.0), rows)) / len(rows)

    dev = arith.load("dev")
    print(f"\ndev split ({len(dev)} problems): greedy {greedy(dev):.3f}")
    print(f"{'T':>5}{'majority@16':>13}{'pass@16':>9}{'distinct/16':>13}")
    for t in temps:
        maj, hit, distinct = scores(dev, t)
        print(f"{t:>5}{maj:>13.3f}{hit:>9.3f}{distinct:>13.1f}")

    print(f"\nfresh sets of {args.n} problems (greedy, then majority@16 at each T)")
    print(f"{'ops':>4}{'greedy':>8}" + "".join(f"{'T=' + str(t):>9}" for t in temps))
    for ops in (int(o) for o in args.ops.split(",")):
        rng = random.Random(1000 + ops)
        cfg = arith.ArithConfig(max_ops=max(ops, arith.ArithConfig().max_ops))
        rows = [arith.make_row(arith.generate_problem(rng, cfg, num_ops=ops), i, "fresh") for i in range(args.n)]
        cells = "".join(f"{scores(rows, t)[0]:>9.3f}" for t in temps)
        print(f"{ops:>4}{greedy(rows):>8.3f}{cells}", flush=True)
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
