"""V1 tournament properties over many (N, B): every candidate reaches d_min comparisons when the budget allows it,
and the B·N comparison budget is never exceeded (scripted engine, random but seeded verdicts)."""
import random

import pytest
from scripted_engine import ScriptedEngine
from twinloop.infer.search import v1_tournament
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search.v1_tournament import TournamentConfig
from twinloop.rewards.base import RewardUsage
from twinloop.rewards.pairwise import Judgment, PairwiseVerifier


class RandomVerifier(PairwiseVerifier):
    """Seeded random ratings 1-10, a quarter of them unparseable."""

    __name__ = "random_verifier"

    def __init__(self, seed):
        self.usage = RewardUsage()
        self.rng = random.Random(seed)
        self.both_orders = False

    def judge(self, items):
        out = []
        for _ in items:
            bad = self.rng.random() < 0.25
            out.append(Judgment(None if bad else (self.rng.randint(1, 10), self.rng.randint(1, 10)), ""))
        return out


@pytest.mark.parametrize("n", [2, 3, 4, 5, 7, 8, 16])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_coverage_reaches_d_min_and_budget_holds(n, b):
    script = {"P": [f"s{k} \\boxed{{{k}}}" for k in range(n)], "Q": [f"t{k} \\boxed{{{k}}}" for k in range(n)]}
    cfg = TournamentConfig(answer_fn=last_boxed, comparisons_per_candidate=b, seed=n * 10 + b)
    res = v1_tournament.run([Problem("P"), Problem("Q")], ScriptedEngine(script), RandomVerifier(n + b),
                            Budget(n=n), cfg)
    for r in res:
        pairs = [tuple(c["pair"]) for c in r.trace[0]["comparisons"]]
        assert len(pairs) == r.usage.rm_calls <= round(b * n)  # the budget B·N is never exceeded
        assert len(pairs) == round(b * n)  # ...and, uncapped otherwise, it is spent
        degree = [0] * n
        for i, j in pairs:
            assert i != j and 0 <= i < n and 0 <= j < n
            degree[i] += 1
            degree[j] += 1
        # B >= d_min leaves room for the literal rule; at B = 1 exactly N comparisons would need a perfect schedule,
        # and the rule (closest unseen peer in μ, even one already at d_min) can leave a node at degree 1
        if b * n >= n * min(cfg.d_min, n - 1):
            assert min(degree) >= min(cfg.d_min, n - 1), (degree, pairs)
        assert r.selected is not None and r.answer == str(r.selected)
