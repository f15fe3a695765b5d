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
