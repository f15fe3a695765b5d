"""Verifier-guided iterative refinement on the scripted engine: feedback carries the best attempts and
their scores; the answer is the best-scored attempt of all rounds."""
import pytest
from scripted_engine import ScriptedEngine, TableReward
from twinloop.infer.search import iterative_refine
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search.iterative_refine import RefineConfig, round_sizes

SCRIPT = {"P": ["a \\boxed{1}", "b \\boxed{2}", "c \\boxed{3}"],
          "P\n\nEarlier attempts*": ["better \\boxed{9}", "worse \\boxed{0}"]}
SCORES = {"boxed{1}": 0.2, "boxed{2}": 0.5, "boxed{3}": 0.1, "boxed{9}": 0.9, "boxed{0}": 0.0}


def test_round_sizes():
    assert round_sizes(8, 3) == [3, 3, 2] and round_sizes(2, 4) == [1, 1] and round_sizes(5, 1) == [5]


def test_feedback_shows_best_attempts_and_answer_improves():
    eng, rm = ScriptedEngine(SCRIPT), TableReward(SCORES)
    [r] = iterative_refine.run([Problem("P")], eng, rm, Budget(n=6), RefineConfig(answer_fn=last_boxed, rounds=2))
    assert r.answer == "9" and len(r.candidates) == 6 and r.usage.rm_calls == 6
    feedback = eng.tokenizer.decode(eng.calls[1].prompts[0])
    assert feedback.startswith("P\n\nEarlier attempts") and "[Attempt 1, score 0.50]\nb \\boxed{2}" in feedback
    assert "[Attempt 2, score 0.20]\na \\boxed{1}" in feedback and "c \\boxed{3}" not in feedback
    assert r.trace[1]["shown"] == [0.5, 0.2]
    assert r.usage.generated_tokens == sum(len(c.text) + 1 for c in r.candidates)


def test_rm_budget_stops_scoring():
    [r] = iterative_refine.run([Problem("P")], ScriptedEngine(SCRIPT), TableReward(SCORES), Budget(n=6, rm_calls=4),
                               RefineConfig(answer_fn=last_boxed, rounds=2))
    assert r.budget_exhausted and r.usage.rm_calls == 4
    assert sum(c.score is None for c in r.candidates) == 2 and r.answer == "9"


def test_needs_a_verifier():
    with pytest.raises(ValueError):
        iterative_refine.run([Problem("P")], ScriptedEngine(SCRIPT), None)
