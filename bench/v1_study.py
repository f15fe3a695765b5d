"""V1 selection study: the tournament (the policy as its own pairwise judge) against pointwise self-verification,
majority and random selection, on the same N candidates per problem of the arithmetic held-out (test) split.

    python bench/v1_study.py --policy checkpoints/tiny-arith-policy --problems 40 --ns 4,8 --bs 1,2 \
        --out runs/v1-study-base.json

For each N: the tournament runs at each B (comparison budget B·N) through ``infer/search/v1_tournament.py`` with a
``PairwiseVerifier`` on the same engine (the model judges its own samples, order randomised per pair). Its
candidates are reused, unchanged, for the baselines:
- pointwise self-verification: the same model rates each candidate alone (``POINTWISE_TEMPLATE``,
  ``<rating>X</rating>``, 1-10); the best rating wins, ties and unparseable ratings (scored 0) go to the earliest;
- majority vote over the extracted answers (ties to the earliest answer);
- random selection, as its exact expectation (the share of correct candidates);
- best-of-N with a learned ORM, when ``--orm SPEC`` names one (a reward bundle folder or any ``build_reward``
  spec; ties and unscorable to the earliest);
- pass@N (any candidate correct) as the ceiling.
Per problem it reports policy tokens, judge tokens (prompt + generated) and verifier calls, and separately the
verifier's pairwise accuracy: every mixed (correct, wrong) pair of the N = min(ns) candidates, judged once in a
random order (ties and unparseable count ½). Seeded through vLLM. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# the pointwise prompt the PairRL warm-up also trains on (one text for both)
from twinloop.train.pairrl_warmup import POINTWISE_TEMPLATE  # noqa: E402

_RATING = re.compile(r"<rating>\s*(\d{1,3})\s*</rating>")


def parse_rating(text: str) -> int | None:
    """The last ``<rating>`` integer in 1-10, else None."""
    found = _RATING.findall(text or "")
    return int(found[-1]) if found and 1 <= int(found[-1]) <= 10 else None


def earliest_best(scores: list[float]) -> int:
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="checkpoints/tiny-arith-policy")
    ap.add_argument("--problems", type=int, default=40)
    ap.add_argument("--ns", default="4,8")
    ap.add_argument("--bs", default="1,2")
    ap.add_argument("--temperature", type=float, default=1.0, help="candidate sampling (V1: 1.0 for math)")
    ap.add_argument("--max-tokens", type=int, default=128, help="per candidate")
    ap.add_argument("--judge-max-tokens", type=int, default=64)
    ap.add_argument("--both-orders", action="store_true", help="judge every pair as (A, B) and (B, A)")
    ap.add_argument("--judge-lora", default=None, help="peft adapter folder: the judge is this LoRA on the same "
                                                        "engine (default: the policy's own weights)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orm", default=None, help="reward spec for the best-of-N baseline (e.g. an ORM bundle folder)")
    ap.add_argument("--out", default=None, help="JSON file for the numbers")
    args = ap.parse_args(argv)

    from twinloop.infer.search import Budget, Problem, v1_tournament
    from twinloop.infer.search._common import canonical_answer, vote
    from twinloop.infer.vllm_engine import VLLMEngine
    from twinloop.rewards.pairwise import PairwiseVerifier
    from twinloop.train.pairrl_math import VerifyPair, pairwise_accuracy

    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import arith

    ns = [int(x) for x in args.ns.split(",")]
    bs = [float(x) for x in args.bs.split(",")]
    rows = arith.load("test", n=args.problems)
    gold = [canonical_answer(r["answer"]) for r in rows]
    problems = [Problem(prompt=r["prompt"], columns={"answer": r["answer"]}, id=r["id"]) for r in rows]
    engine = VLLMEngine(args.policy, dtype="float32", max_model_len=1024, seed=args.seed,
                        enable_lora=args.judge_lora is not None)
    orm = None
    if args.orm:
        from twinloop.build import build_reward

        orm = build_reward(args.orm, task="arith", engine=engine)
    judge_cfg = SamplingConfig(n=1, temperature=0.0, max_tokens=args.judge_max_tokens)
    report: dict = {"policy": args.policy, "problems": len(rows), "temperature": args.temperature,
                    "judge_temperature": 0.0, "both_orders": args.both_orders, "judge_lora": args.judge_lora,
                    "rows": []}
    n_prob = len(rows)
    per_n_candidates = {}
    for n in ns:
        first = None
        for b in bs:
            verifier = PairwiseVerifier(engine, lora=args.judge_lora, temperature=0.0, max_tokens=args.judge_max_tokens,
                                        both_orders=args.both_orders)
            cfg = v1_tournament.TournamentConfig(temperature=args.temperature, max_tokens=args.max_tokens,
                                                 seed=args.seed, sampling_seed=args.seed,
                                                 comparisons_per_candidate=b)
            res = v1_tournament.run(problems, engine, verifier, Budget(n=n), cfg)
            texts = [[c.text for c in r.candidates] for r in res]
            first = first or (res, texts)
            report["rows"].append({
                "method": "tournament", "N": n, "B": b,
                "accuracy": sum(canonical_answer(r.answer) == g for r, g in zip(res, gold)) / n_prob,
                "policy_tokens": sum(r.usage.generated_tokens for r in res) / n_prob,
                "judge_tokens": sum(r.usage.rm_tokens for r in res) / n_prob,
                "verifier_calls": sum(r.usage.rm_calls for r in res) / n_prob,
                "unparseable_frac": verifier.usage.unparseable / max(1, verifier.usage.model_calls),
                "same_candidates_as_first_B": texts == first[1]})
        res, texts = first
        answers = [[canonical_answer(c.answer) for c in r.candidates] for r in res]
        correct = [[a == g for a in ans] for ans, g in zip(answers, gold)]
        per_n_candidates[n] = (texts, correct)
        policy_tokens = sum(r.usage.generated_tokens for r in res) / n_prob
        # pointwise self-verification on the same candidates
        reqs = [Request(messages=[{"role": "user", "content": POINTWISE_TEMPLATE.format(
            prompt=r["prompt"][-1]["content"], a=t)}], lora=args.judge_lora) for r, ts in zip(rows, texts) for t in ts]
        out = engine.generate(reqs, judge_cfg)
        ratings = [parse_rating(o.completions[0].text if o.completions else "") for o in out]
        judge_tokens = sum((o.usage.prompt_tokens or len(o.prompt_ids)) + o.usage.generated_tokens for o in out)
        hits, k = 0, 0
        for ts, ok in zip(texts, correct):
            scores = [float(ratings[k + j] or 0) for j in range(len(ts))]
            k += len(ts)
            hits += bool(ts) and ok[earliest_best(scores)]
        report["rows"].append({"method": "pointwise", "N": n, "accuracy": hits / n_prob,
                               "policy_tokens": policy_tokens, "judge_tokens": judge_tokens / n_prob,
                               "verifier_calls": len(reqs) / n_prob,
                               "unparseable_frac": sum(r is None for r in ratings) / max(1, len(ratings))})
        if orm is not None:
            flat = [(r["prompt"], t, r["answer"]) for r, ts in zip(rows, texts) for t in ts]
            scores = orm([p for p, _, _ in flat], [t for _, t, _ in flat], answer=[a for _, _, a in flat])
            hits, k = 0, 0
            for ts, ok in zip(texts, correct):
                mine = [-1e30 if scores[k + j] is None else float(scores[k + j]) for j in range(len(ts))]
                k += len(ts)
                hits += bool(ts) and ok[earliest_best(mine)]
            report["rows"].append({"method": f"best-of-N ({args.orm})", "N": n, "accuracy": hits / n_prob,
                                   "policy_tokens": policy_tokens, "judge_tokens": 0.0,
                                   "verifier_calls": len(flat) / n_prob})
        maj = sum(vote(a)[0] == g for a, g in zip(answers, gold)) / n_prob
        rand = sum(sum(ok) / len(ok) for ok in correct if ok) / n_prob
        ceiling = sum(any(ok) for ok in correct) / n_prob
        for name, value in (("majority", maj), ("random (expected)", rand), ("pass@N", ceiling)):
            report["rows"].append({"method": name, "N": n, "accuracy": value, "policy_tokens": policy_tokens,
                                   "judge_tokens": 0.0, "verifier_calls": 0.0})
    # the verifier's pairwise accuracy: every mixed pair of the smallest N's candidates, once, random order
    texts, correct = per_n_candidates[min(ns)]
    rng = random.Random(args.seed)
    items, pairs, swap = [], [], []
    for pi, (ts, ok) in enumerate(zip(texts, correct)):
        for i in range(len(ts)):
            for j in range(i + 1, len(ts)):
                if ok[i] != ok[j]:
                    items.append((rows[pi]["prompt"][-1]["content"], ts[i], ts[j]))
                    pairs.append(VerifyPair(pi, i, j, int(ok[i]), int(ok[j])))
                    swap.append(rng.random() < 0.5)
    verifier = PairwiseVerifier(engine, lora=args.judge_lora, temperature=0.0, max_tokens=args.judge_max_tokens,
                                both_orders=args.both_orders)
    # a pair judged in both orders counts once per presentation
    rated = [r for row in verifier.rate_pairs(items, swap) for r in row] if items else []
    shown = [p for p in pairs for _ in range(verifier.presentations)]
    report["pairwise"] = {"N": min(ns), "mixed_pairs": len(pairs), "judgments": len(rated),
                          "accuracy": pairwise_accuracy(rated, shown),
                          "unparseable_frac": sum(r is None for r in rated) / max(1, len(rated))}
    engine.close()

    print(f"policy {args.policy}, {n_prob} test problems, T={args.temperature}, judge greedy")
    print(f"{'method':<28}{'N':>3}{'B':>5}{'acc':>7}{'policy tok':>12}{'judge tok':>11}{'calls':>7}{'unparsed':>10}")
    for r in report["rows"]:
        b = f"{r['B']:g}" if "B" in r else "-"
        unp = f"{r['unparseable_frac']:.2f}" if "unparseable_frac" in r else "-"
        print(f"{r['method']:<28}{r['N']:>3}{b:>5}{r['accuracy']:>7.3f}{r['policy_tokens']:>12.1f}"
              f"{r['judge_tokens']:>11.1f}{r['verifier_calls']:>7.1f}{unp:>10}")
    pw = report["pairwise"]
    acc = "n/a" if pw["accuracy"] is None else f"{pw['accuracy']:.3f}"
    print(f"verifier pairwise accuracy (N={pw['N']}, {pw['mixed_pairs']} mixed pairs, {pw['judgments']} "
          f"judgments): {acc}, "
          f"unparseable {pw['unparseable_frac']:.2f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
