"""V1 tournament presentation order: the verifier's both_orders is honoured (each pair judged as (A, B)
and (B, A), two verifier calls per comparison), and with it off the shown order is random and seeded."""
from scripted_engine import ScriptedEngine
from test_search_v1 import SCRIPT, ScriptedVerifier
from twinloop.infer.search import v1_tournament
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search.v1_tournament import TournamentConfig
from twinloop.rewards.pairwise import Judgment


class FirstShownWins(ScriptedVerifier):
    """A verifier that only sees position: whatever is shown as A gets 9, B gets 1."""

    def judge(self, items):
        self.items.append(list(items))
        return [Judgment((9, 1), "") for _ in items]


def shown_pairs(ver):
    return [(last_boxed(a), last_boxed(b)) for call in ver.items for _, a, b in call]


def test_both_orders_judges_each_pair_twice_and_cancels_position_bias():
    ver = FirstShownWins(both_orders=True)
    cfg = TournamentConfig(answer_fn=last_boxed, comparisons_per_candidate=1, seed=0)
    [r] = v1_tournament.run([Problem("P")], ScriptedEngine(SCRIPT), ver, Budget(n=4), cfg)
    shown = shown_pairs(ver)
    assert len(shown) == 8 and r.usage.rm_calls == 8  # B·N = 4 comparisons, two presentations each
    assert sorted(shown) == sorted((b, a) for a, b in shown)  # every pair seen in both orders
    assert r.trace[0]["mu"] == [0.5] * 4  # a pure position bias carries no information
    assert all(c["ratings"] == [[9, 1], [1, 9]] for c in r.trace[0]["comparisons"])


def test_both_orders_halves_the_comparisons_an_rm_cap_allows():
    ver = ScriptedVerifier(both_orders=True)
    [r] = v1_tournament.run([Problem("P")], ScriptedEngine(SCRIPT), ver, Budget(n=4, rm_calls=5),
                            TournamentConfig(answer_fn=last_boxed))
    assert r.usage.rm_calls == 4 and len(r.trace[0]["comparisons"]) == 2 and r.stop_reason == "budget"


def test_order_is_random_and_seeded_when_both_orders_is_off():
    def run(seed):
        ver = FirstShownWins()
        [r] = v1_tournament.run([Problem("P")], ScriptedEngine(SCRIPT), ver, Budget(n=4),
                                TournamentConfig(answer_fn=last_boxed, comparisons_per_candidate=3, seed=seed))
        return r, shown_pairs(ver)

    r, shown = run(0)
    index = {a: i for i, a in enumerate(["1", "2", "3", "4"])}
    flipped = [index[a] > index[b] for a, b in shown]
    assert len(shown) == 12 == r.usage.rm_calls and 0 < sum(flipped) < len(flipped)
    assert [c["swapped"] for c in r.trace[0]["comparisons"]] == flipped
    assert run(0)[1] == shown and any(run(s)[1] != shown for s in (1, 2, 3))
