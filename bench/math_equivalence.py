"""Agreement with the expected verdict on tests/data/math_equivalence.jsonl: twinloop's MathReward against
math-verify's own ``verify(parse(gold), parse(completion))`` (default configs), per category and in total.

    python bench/math_equivalence.py [--show-disagreements]
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

COLUMNS = ("twinloop", "math_verify", "math_verify_wrapped")
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_equivalence.jsonl"


def load_cases(path: Path = DATA) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def math_verify_verdict(gold: str, completion: str, wrap_gold: bool = False) -> bool:
    """math-verify alone, as its README uses it; a raise counts as False. ``wrap_gold`` puts a plain gold
    (no ``$``, box or ``####``) in ``$...$`` first, as its README's gold examples are written."""
    from math_verify import parse, verify

    if wrap_gold and not any(m in gold for m in ("$", "\\boxed", "\\(", "\\[", "####")):
        gold = f"${gold}$"
    try:
        return bool(verify(parse(gold), parse(completion)))
    except BaseException:  # noqa: BLE001 - its TimeoutException is a BaseException
        return False


def twinloop_verdict(reward, gold: str, completion: str) -> bool:
    return reward(["p"], [completion], answer=[gold])[0] == 1.0


def agreement(cases: list[dict]) -> dict[str, dict[str, list[bool]]]:
    """Per category: lists of hits (verdict == expected) for ``twinloop`` and ``math_verify``."""
    from twinloop.rewards.verifiable import MathReward

    reward = MathReward()
    hits: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {k: [] for k in COLUMNS})
    for case in cases:
        case["twinloop"] = twinloop_verdict(reward, case["gold"], case["completion"])
        case["math_verify"] = math_verify_verdict(case["gold"], case["completion"])
        case["math_verify_wrapped"] = math_verify_verdict(case["gold"], case["completion"], wrap_gold=True)
        for k in COLUMNS:
            hits[case["category"]][k].append(case[k] == case["expected"])
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show-disagreements", action="store_true")
    args = parser.parse_args()
    cases = load_cases()
    start = time.time()
    hits = agreement(cases)
    print("| category | n | twinloop MathReward | verify(parse(gold), parse(pred)) | same, gold in $...$ |")
    print("|---|---|---|---|---|")
    for name, h in sorted(hits.items()):
        n = len(h["twinloop"])
        print(f"| {name} | {n} | " + " | ".join(f"{sum(h[k]) / n:.3f}" for k in COLUMNS) + " |")
    n = len(cases)
    total = [sum(x for h in hits.values() for x in h[k]) / n for k in COLUMNS]
    print(f"| **all** | {n} | " + " | ".join(f"**{t:.3f}**" for t in total) + " |")
    print(f"({time.time() - start:.1f} s)")
    if args.show_disagreements:
        for case in cases:
            if case["twinloop"] != case["expected"] or case["math_verify_wrapped"] != case["expected"]:
                print(json.dumps({k: (v[:80] if isinstance(v, str) else v) for k, v in case.items()}))


if __name__ == "__main__":
    main()
