"""GRM voting@k and meta-RM-guided voting as selectors on the scripted engine (SPCT worked example)."""
import pytest
from scripted_engine import ScriptedEngine
from twinloop.infer.search import grm_meta_vote, grm_vote
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search.grm_vote import GRMVoteConfig
from twinloop.rewards.base import RewardUsage
from twinloop.rewards.generative import Judgment

SCRIPT = {"P": ["first \\boxed{1}", "second \\boxed{2}"]}


class ScriptedGRM:
    """Returns the given un-permuted score lists (one per judgment) for every item; meta RM optional."""

    __name__ = "scripted_grm"

    def __init__(self, lists, meta=None, k_meta=None):
        self.lists, self.k_meta, self.binary = lists, k_meta, False
        self.usage = RewardUsage()
        self.calls = []
        self.meta_rm = None
        if meta is not None:
            usage = RewardUsage()

            def meta_rm(prompts, texts):
                usage.input_tokens += len(prompts)
                return [meta[int(t)] for t in texts]

            meta_rm.usage = usage
            self.meta_rm = meta_rm

    def judge_many(self, items, k=None):
        self.calls.append((list(items), k))
        self.usage.output_tokens += 10 * k * len(items)
        return [[Judgment(list(s) if s else None, str(i), [1, 0]) for i, s in enumerate(self.lists[:k])]
                for _ in items]


def cfg(k):
    return GRMVoteConfig(answer_fn=last_boxed, k=k)


def test_voting_at_k_worked_example():
    grm = ScriptedGRM([(7, 4), (5, 6), (8, 3)])
    [r] = grm_vote.run([Problem("P")], ScriptedEngine(SCRIPT), grm, Budget(n=2), cfg(3))
    assert [c.score for c in r.candidates] == [20.0, 13.0] and r.answer == "1" and r.selected == 0
    assert r.usage.rm_calls == 3 and r.usage.rm_tokens == 30 and grm.calls[0][1] == 3
    assert len(r.trace) == 3 and r.trace[1]["scores"] == [5, 6]


def test_invalid_judgments_do_not_vote():
    grm = ScriptedGRM([None, (2, 9), None])
    [r] = grm_vote.run([Problem("P")], ScriptedEngine(SCRIPT), grm, Budget(n=2), cfg(3))
    assert r.answer == "2"
    none = ScriptedGRM([None, None])
    [r] = grm_vote.run([Problem("P")], ScriptedEngine(SCRIPT), none, Budget(n=2), cfg(2))
    assert r.answer is None and r.selected is None


def test_meta_guided_vote_keeps_top_judgments():
    lists = [(7, 4), (2, 9), (3, 8)]
    plain = grm_vote.run([Problem("P")], ScriptedEngine(SCRIPT), ScriptedGRM(lists), Budget(n=2),
                         GRMVoteConfig(answer_fn=last_boxed, k=3))[0]
    assert plain.answer == "2"  # S* = (12, 21)
    grm = ScriptedGRM(lists, meta=[0.9, 0.1, 0.2])
    [r] = grm_meta_vote.run([Problem("P")], ScriptedEngine(SCRIPT), grm, Budget(n=2),
                            GRMVoteConfig(answer_fn=last_boxed, k=3))
    assert r.answer == "1" and [c.score for c in r.candidates] == [7.0, 4.0]  # k_meta = 3 // 2 = 1
    assert r.usage.rm_calls == 6  # 3 judgments + 3 meta scores
    with pytest.raises(ValueError, match="meta_rm"):
        grm_meta_vote.run([Problem("P")], ScriptedEngine(SCRIPT), ScriptedGRM(lists), Budget(n=2))
