"""Paired comparison of two methods on the same problems: discordant counts and the exact sign test."""
from __future__ import annotations

from collections.abc import Sequence
from math import comb


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(problems only ``a`` got right, problems only ``b`` got right); ties carry no information."""
    if len(a) != len(b):
        raise ValueError(f"paired results differ in length: {len(a)} and {len(b)}")
    return sum(x and not y for x, y in zip(a, b)), sum(y and not x for x, y in zip(a, b))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least this uneven | each discordant pair is a fair coin)."""
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be >= 0, got {wins} and {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(rows_a: Sequence[dict], rows_b: Sequence[dict]) -> dict:
    """Sign test of two result-row lists (``problem_id``, ``correct``) over the problems both have."""
    a = {str(r["problem_id"]): bool(r["correct"]) for r in rows_a}
    b = {str(r["problem_id"]): bool(r["correct"]) for r in rows_b}
    ids = sorted(set(a) & set(b))
    wins, losses = discordant([a[i] for i in ids], [b[i] for i in ids])
    return {"problems": len(ids), "wins": wins, "losses": losses, "p": sign_test(wins, losses)}


def pair_accuracy(groups: Sequence[tuple[Sequence[float], Sequence[bool]]]) -> dict[str, float]:
    """Within-problem pair accuracy: over every (correct, wrong) pair of samples of the same problem, the share
    the scores order right (ties count ½). Never across problems, where difficulty alone separates scores."""
    right = ties = n = 0
    for scores, ok in groups:
        for s_good, g in zip(scores, ok):
            if not g:
                continue
            for s_bad, b in zip(scores, ok):
                if b:
                    continue
                n += 1
                right += 1.0 if s_good > s_bad else 0.5 if s_good == s_bad else 0.0
                ties += s_good == s_bad
    return {"pair_accuracy": right / n if n else float("nan"), "ties": ties / n if n else float("nan"), "pairs": n}
