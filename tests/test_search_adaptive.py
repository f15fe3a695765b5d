"""Adaptive self-evaluation on the scripted engine: growing batches, early stop, pruning of partials."""
import pytest
from scripted_engine import ScriptedEngine
from twinloop.infer.search import adaptive_selfeval
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search.adaptive_selfeval import AdaptiveConfig, batch_sizes
from twinloop.rewards.base import RewardUsage

SCRIPT = {"P": ["bad \\boxed{1}", "good \\boxed{2}", "ok \\boxed{3}", "meh \\boxed{4}"],
          "Q": ["meh \\boxed{4}", "bad \\boxed{1}"]}


class ScriptedProbe:
    __name__ = "scripted_probe"

    def __init__(self, table=None, default=0.3):
        self.table = table or {"good": 0.1, "ok": 0.4, "bad": 0.8, "meh": 0.6}
        self.default = default
        self.usage = RewardUsage()
        self.seen = []

    def p_better(self, prompts, responses):
        self.seen.append(list(responses))
        self.usage.input_tokens += sum(len(r) for r in responses)
        return [next((v for k, v in self.table.items() if k in r), self.default) for r in responses]


def cfg(**kw):
    return AdaptiveConfig(answer_fn=last_boxed, **kw)


def test_batch_sizes():
    assert batch_sizes(8, 1, 2.0) == [1, 2, 4, 1]
    assert batch_sizes(16, 1, 2.0) == [1, 2, 4, 8, 1] and batch_sizes(3, 4, 2.0) == [3]
    assert batch_sizes(5, 2, 1.0) == [2, 2, 1]


def test_stops_once_confident():
    eng, probe = ScriptedEngine(SCRIPT), ScriptedProbe()
    res = adaptive_selfeval.run([Problem("P"), Problem("Q")], eng, probe, Budget(n=8), cfg())
    p, q = res
    assert p.answer == "2" and len(p.candidates) == 3 and p.stop_reason == "confident"  # 1 + 2 samples
    assert q.stop_reason == "max_samples" and len(q.candidates) == 8 and q.answer == "4"  # never below 0.2
    assert [c.sampling.n for c in eng.calls] == [1, 2, 4, 1]
    assert [len(c.prompts) for c in eng.calls] == [2, 2, 1, 1]  # P stopped after round 2
    assert all(eng.calls[1].via_ids)  # later batches reuse the prompt ids
    assert p.usage.rm_calls == 3 and q.usage.rm_calls == 8
    assert p.usage.rm_tokens + q.usage.rm_tokens == probe.usage.input_tokens
    assert [t["best_p_better"] for t in p.trace] == pytest.approx([0.8, 0.1])


def test_prunes_partial_responses():
    eng, probe = ScriptedEngine(SCRIPT), ScriptedProbe()
    [r] = adaptive_selfeval.run([Problem("P")], eng, probe, Budget(n=4), cfg(first_batch=4, prune_tokens=3,
                                                                          threshold=0.0))
    assert probe.seen[0] == ["bad", "goo", "ok ", "meh"]  # partials of 3 tokens
    assert sorted(c.text for c in r.candidates) == ["good \\boxed{2}", "ok \\boxed{3}"]  # bad, meh pruned
    assert r.trace[0] == {"pruned": 2} and r.answer == "2"
    assert r.usage.generated_tokens == 4 * 3 + (len("good \\boxed{2}") - 3 + 1) + (len("ok \\boxed{3}") - 3 + 1)


def test_needs_a_probe():
    with pytest.raises(ValueError):
        adaptive_selfeval.run([Problem("P")], ScriptedEngine(SCRIPT), None)
