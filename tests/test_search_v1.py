"""V1 tournament: pair scheduling with numbers, then the tournament on the scripted engine with a
scripted pairwise verifier (exact winner, comparison budget B·N, accounting)."""
import random

import pytest
from scripted_engine import ScriptedEngine
from twinloop.infer.search import v1_tournament
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search.v1_tournament import TournamentConfig, coverage_pairs, deficit_pairs, swiss_pairs
from twinloop.rewards.base import RewardUsage
from twinloop.rewards.pairwise import Judgment, PairwiseVerifier, mu_scores

QUALITY = {"1": 3, "2": 9, "3": 6, "4": 1}
SCRIPT = {"P": [f"try \\boxed{{{k}}}" for k in QUALITY], "R": ["r \\boxed{3}", "r \\boxed{4}"]}


class ScriptedVerifier(PairwiseVerifier):
    """Rates each solution by the quality of its boxed answer; ``None`` ratings for 'bad' answers. Only
    ``judge`` is scripted: ``rate_pairs`` (presentation orders) is PairwiseVerifier's own."""

    __name__ = "scripted_verifier"

    def __init__(self, unparseable=(), both_orders=False):
        self.usage = RewardUsage()
        self.items = []
        self.unparseable = set(unparseable)
        self.both_orders = both_orders

    def judge(self, items):
        self.items.append(list(items))
        out = []
        for _, a, b in items:
            self.usage.input_tokens += len(a) + len(b)
            ra, rb = QUALITY[last_boxed(a)], QUALITY[last_boxed(b)]
            bad = last_boxed(a) in self.unparseable or last_boxed(b) in self.unparseable
            out.append(Judgment(None if bad else (ra, rb), ""))
        return out


def test_pair_schedules_with_numbers():
    pairs = coverage_pairs(5, random.Random(0))
    assert len(pairs) == 2 and len({x for p in pairs for x in p}) == 4 and all(i < j for i, j in pairs)
    assert deficit_pairs(4, [1, 1, 1, 1], {(0, 1), (2, 3)}, [1.0, 0.0, 0.5, 0.5], 2) == [(0, 2), (1, 3)]
    assert deficit_pairs(3, [2, 2, 2], set(), [0.5] * 3, 2) == []
    assert swiss_pairs([0.9, 0.1, 0.5, 0.6], {(0, 3)}, 2, 5) == [(0, 2), (1, 3)]
    assert swiss_pairs([0.9, 0.1, 0.5, 0.6], set(), 2, 1) == [(0, 3)]


def test_tournament_picks_best_within_comparison_budget():
    ver = ScriptedVerifier()
    cfg = TournamentConfig(answer_fn=last_boxed, comparisons_per_candidate=2)
    res = v1_tournament.run([Problem("P"), Problem("R")], ScriptedEngine(SCRIPT), ver, Budget(n=4), cfg)
    assert res[0].answer == "2" and res[1].answer == "3"
    assert res[0].usage.rm_calls == 8 and res[1].usage.rm_calls == 8  # B·N = 2·4 comparisons each
    assert sum(r.usage.rm_tokens for r in res) == ver.usage.input_tokens
    mu = res[0].trace[0]["mu"]
    assert mu.index(max(mu)) == 1 and res[0].candidates[1].score == max(mu)
    # every round judged both problems' pairs in one verifier call while both had budget left
    assert any({p[0] for p in call} == {"P", "R"} for call in ver.items)


def test_unparseable_verdicts_spend_budget_but_add_nothing():
    ver = ScriptedVerifier(unparseable={"4"})
    [r] = v1_tournament.run([Problem("P")], ScriptedEngine(SCRIPT), ver, Budget(n=4),
                            TournamentConfig(answer_fn=last_boxed, comparisons_per_candidate=1))
    assert r.usage.rm_calls == 4 and r.answer == "2"
    comparisons, mu = r.trace[0]["comparisons"], r.trace[0]["mu"]
    with_bad = [c for c in comparisons if 3 in c["pair"]]  # candidate 3 wrote "4": every verdict on it fails
    assert with_bad and all(x is None for c in with_bad for x in c["ratings"])  # they were spent...
    assert all(x is not None for c in comparisons if 3 not in c["pair"] for x in c["ratings"])
    assert mu[3] == 0.5  # ...and taught nothing: 3 keeps the never-compared default
    # μ is computed from the parsed verdicts alone (a failed verdict is not a tie)
    parsed = [(*c["pair"], *map(float, x)) for c in comparisons for x in c["ratings"] if x is not None]
    assert mu == pytest.approx(mu_scores(4, parsed))


def test_rm_call_cap_stops_the_tournament():
    [r] = v1_tournament.run([Problem("P")], ScriptedEngine(SCRIPT), ScriptedVerifier(), Budget(n=4, rm_calls=3),
                            TournamentConfig(answer_fn=last_boxed))
    assert r.usage.rm_calls == 3 and r.budget_exhausted and r.stop_reason == "budget"
