"""V1 tournament properties over many (N, B, seed): every candidate reaches d_min comparisons whenever the budget
allows it (B = 1 included: exactly N comparisons), and the B·N comparison budget is never exceeded (scripted engine,
random but seeded verdicts, a quarter unparseable)."""
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


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9, 12, 16])
@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coverage_reaches_d_min_and_budget_holds(n, b, seed):
    script = {"P": [f"s{k} \\boxed{{{k}}}" for k in range(n)], "Q": [f"t{k} \\boxed{{{k}}}" for k in range(n)]}
    cfg = TournamentConfig(answer_fn=last_boxed, comparisons_per_candidate=b, seed=seed * 100 + n * 10 + b)
    res = v1_tournament.run([Problem("P"), Problem("Q")], ScriptedEngine(script), RandomVerifier(seed + n + b),
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
        if 2 * b * n >= n * min(cfg.d_min, n - 1):  # enough comparisons (2 degrees each) for all to reach d_min
            assert min(degree) >= min(cfg.d_min, n - 1), (degree, pairs)
        assert r.selected is not None and r.answer == str(r.selected)


def test_deficit_round_swaps_two_leftovers_into_a_pair():
    from twinloop.infer.search.v1_tournament import deficit_pairs

    seen = {(0, 1), (2, 3), (4, 5)}  # the coverage couples
    mu = [0.5, 0.7, 0.5, 0.7, 0.0, 1.0]
    # greedy by μ pairs (0, 2) and (1, 3); 4 and 5 are left, already compared: (0, 2) becomes (0, 4), (2, 5)
    assert deficit_pairs(6, [1] * 6, seen, mu, 2) == [(0, 4), (2, 5), (1, 3)]
    # a peer below d_min is preferred over a closer one that already has d_min
    assert deficit_pairs(3, [2, 1, 0], {(0, 1)}, [0.9, 0.5, 0.9], 2) == [(1, 2)]
