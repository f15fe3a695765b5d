"""Random and huge completions through every parser that reads model output in the caller's process.

Counts exceptions (each one a crash in a trainer or a search) and the slowest case. A parser must
return a documented default on junk and parse a 1 MiB completion in linear time.

    python bench/parser_fuzz.py --cases 3000
"""
from __future__ import annotations

import argparse
import random
import signal
import time
from collections.abc import Callable
from typing import Any

TOKENS = ["```", "```python\n", "```py", "\n", " ", "\t", "\\boxed{", "}", "{", "####", "Answer:", "The answer is",
          "Step 1:", "\n\n", "[[", "]]", "Score:", "\\frac{1}{2}", "-", ".", "0", "7", "42", "3.14", "1e400", "é",
          "\ud800", "\x00", "def f(", "):\n    return 1\n", "async def f(x):", "Rating A: 7", "Rating B: 3",
          "\\boxed{\\boxed{", "$", "\\\\", "\r", "nan", "inf", "10/0"]
HUGE_UNIT = ["```", "```python\n", "\\boxed{", "{", " ", "\n", "####", "Step 1:", "[[", "0", "async ", "def f",
             "Rating A:", "\\frac{"]


def parsers() -> dict[str, Callable[[str], Any]]:
    from twinloop.rewards import generative, pairwise, process, verifiable
    from twinloop.rewards.sandbox import build_program, extract_code

    return {
        "sandbox.extract_code+build_program": lambda t: build_program(extract_code(t, "f"), "", "f"),
        "verifiable.last_boxed": verifiable.last_boxed,
        "verifiable.extract_answer": verifiable.extract_answer,
        "verifiable.canonical_answer": verifiable.canonical_answer,
        "verifiable.to_number": verifiable.to_number,
        "process.split_steps": process.split_steps,
        "generative.parse_scores": lambda t: generative.parse_scores(t, 2),
        "pairwise.parse_ratings": pairwise.parse_ratings,
    }


def cases(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 40))) for _ in range(n)]
    texts += [unit * ((1 << 20) // len(unit)) for unit in HUGE_UNIT]  # 1 MiB of one token
    texts += ["```" + " " * (1 << 20), "\\boxed{" + "{" * (1 << 20), "Step 1:" + " " * (1 << 20) + "x"]
    return texts


class _Overtime(Exception):
    pass


def _overtime(*_: Any) -> None:
    raise _Overtime


def fuzz(n: int = 3000, seed: int = 0, cap_s: int = 5) -> dict[str, dict[str, Any]]:
    """Per parser: cases run, exceptions (with the first message), cases stopped after ``cap_s`` seconds
    (a parser that is not linear on a 1 MiB input), slowest case in seconds. Main thread only (SIGALRM)."""
    report = {}
    texts = cases(n, seed)
    previous = signal.signal(signal.SIGALRM, _overtime)
    try:
        for name, parse in parsers().items():
            errors, overtime, first, slowest = 0, 0, "", 0.0
            for text in texts:
                start = time.perf_counter()
                signal.alarm(cap_s)
                try:
                    parse(text)
                except _Overtime:
                    overtime += 1
                except Exception as e:  # noqa: BLE001 - counting them is the point
                    errors += 1
                    first = first or f"{type(e).__name__}: {e}"[:120]
                finally:
                    signal.alarm(0)
                slowest = max(slowest, time.perf_counter() - start)
            report[name] = {"cases": len(texts), "exceptions": errors, "over_cap": overtime, "first": first,
                            "slowest_s": slowest}
    finally:
        signal.signal(signal.SIGALRM, previous)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, row in fuzz(args.cases, args.seed).items():
        print(f"{name:40s} cases {row['cases']:6d}  exceptions {row['exceptions']:4d}  "
              f"over {row['over_cap']}  slowest {row['slowest_s']:.3f} s  {row['first']}")


if __name__ == "__main__":
    main()
