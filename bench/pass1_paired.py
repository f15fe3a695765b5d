"""Generation pass@1 of policies on the arithmetic held-out (test) split, per problem, and paired comparisons.

    python bench/pass1_paired.py run --policy runs/pairrl-l1 --out runs/pass1-l1.json [--problems 200 --k 8]
    python bench/pass1_paired.py compare runs/pass1-l0.json runs/pass1-l1.json

``run`` writes, per problem, greedy correctness and the mean accuracy of ``k`` samples at T = 1.0 (vLLM, seeded).
``compare`` prints, for B against A: greedy accuracies with the sign test on the problems where they differ
(two-sided, exact binomial), and the mean sampled accuracies with the paired standard error of the difference.
One policy per process (vLLM engines are not reopened in one process). Not a test.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign-test p value for ``wins`` against ``losses`` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_diff(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of b - a and its standard error (sample s.d. / sqrt(n))."""
    d = [y - x for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
    return mean, math.sqrt(var / n)


def run(args: argparse.Namespace) -> int:
    from twinloop.infer.search._common import canonical_answer
    from twinloop.infer.vllm_engine import VLLMEngine

    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import arith

    rows = arith.load("test", n=args.problems)
    gold = [canonical_answer(r["answer"]) for r in rows]
    engine = VLLMEngine(args.policy, dtype="float32", max_model_len=1024, seed=args.seed)
    reqs = [Request(messages=list(r["prompt"])) for r in rows]
    greedy = engine.generate(reqs, SamplingConfig(n=1, temperature=0.0, max_tokens=args.max_tokens))
    sampled = engine.generate(reqs, SamplingConfig(n=args.k, temperature=1.0, max_tokens=args.max_tokens,
                                                   seed=args.seed))
    engine.close()
    g = [int(bool(o.completions) and canonical_answer(arith.boxed_int(o.completions[0].text)) == a)
         for o, a in zip(greedy, gold)]
    s = [sum(canonical_answer(arith.boxed_int(c.text)) == a for c in o.completions) / max(1, len(o.completions))
         for o, a in zip(sampled, gold)]
    report = {"policy": args.policy, "problems": len(rows), "k": args.k, "greedy": g, "sampled": s,
              "greedy_accuracy": sum(g) / len(g), "sampled_accuracy": sum(s) / len(s)}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    json.dump(report, open(args.out, "w"))
    print(f"{args.policy}: greedy {report['greedy_accuracy']:.3f}, mean of {args.k} samples "
          f"{report['sampled_accuracy']:.3f} on {len(rows)} test problems")
    return 0


def compare(args: argparse.Namespace) -> int:
    a, b = (json.load(open(p)) for p in (args.a, args.b))
    if len(a["greedy"]) != len(b["greedy"]):
        raise SystemExit("the two reports cover different problems")
    wins = sum(y > x for x, y in zip(a["greedy"], b["greedy"]))
    losses = sum(y < x for x, y in zip(a["greedy"], b["greedy"]))
    d, se = paired_diff(a["sampled"], b["sampled"])
    print(f"A {a['policy']}  B {b['policy']}  ({len(a['greedy'])} problems)")
    print(f"greedy  A {a['greedy_accuracy']:.3f}  B {b['greedy_accuracy']:.3f}  B better on {wins}, worse on "
          f"{losses} (sign test p = {sign_test(wins, losses):.3g})")
    print(f"sampled A {a['sampled_accuracy']:.3f}  B {b['sampled_accuracy']:.3f}  "
          f"B - A = {d:+.3f} ± {se:.3f} (paired s.e.)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--policy", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--problems", type=int, default=200)
    r.add_argument("--k", type=int, default=8)
    r.add_argument("--max-tokens", type=int, default=128)
    r.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args(argv)
    return run(args) if args.cmd == "run" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
