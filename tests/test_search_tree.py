"""Beam search and DVTS with a PRM on the scripted engine: exact selection, token-id prefixes, accounting,
lookahead, budget exhaustion. Also the Stepper's three modes."""
import pytest
from scripted_engine import EOS_ID, ScriptedEngine, TablePRM
from twinloop.infer.engine import Completion, SamplingConfig
from twinloop.infer.search import beam_search, dvts
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search._stepper import EOS, STEP, TRUNCATED, Stepper
from twinloop.infer.search._tree import TreeConfig

Q = ["s1 bad\n\nAnswer: \\boxed{0}", "s1 good\n\ns2 good\n\nAnswer: \\boxed{5}",
     "s1 good\n\ns2 bad\n\nAnswer: \\boxed{9}", "s1 meh\n\nAnswer: \\boxed{4}"]
PRM_TABLE = {"bad": 0.1, "good": 0.9, "meh": 0.5, "boxed{5}": 0.95, "boxed{9}": 0.2}
L = ["x trap\n\ny bad\n\nAnswer: \\boxed{1}", "x ok\n\ny good\n\nAnswer: \\boxed{2}"]


def cfg(**kw):
    return TreeConfig(answer_fn=last_boxed, **kw)


def test_stepper_modes_tell_step_eos_truncation_from_finish_reason():
    s = Stepper()
    assert s.outcome(Completion([1, 2], "a\n\n", "stop")) == STEP
    assert s.outcome(Completion([1, EOS_ID], "a", "stop")) == EOS
    assert s.outcome(Completion([1, 2], "a\n", "length")) == TRUNCATED
    assert s.step_text(Completion([1], "a\n\n", "stop")) == "a" and s.split("a\n\nb\n\n") == ["a", "b"]
    sp = s.sampling(SamplingConfig(stop=["###"]), remaining_tokens=50, n=3)
    assert sp.stop == ["###", "\n\n"] and sp.include_stop_str_in_output and sp.max_tokens == 50 and sp.n == 3
    ids = Stepper(delimiter_ids=[7])
    assert ids.delimiter is None and ids.sampling(SamplingConfig(), 500).stop_token_ids == [7]
    assert ids.outcome(Completion([5, 7], "x", "stop")) == STEP and ids.outcome(Completion([5, 3], "x", "stop")) == EOS
    fixed = Stepper(tokens_per_step=4)
    assert fixed.sampling(SamplingConfig(), 3).max_tokens == 3
    assert fixed.outcome(Completion([1] * 4, "abcd", "length")) == STEP
    assert fixed.outcome(Completion([1, 3], "a", "stop")) == EOS
    with pytest.raises(ValueError):
        Stepper(delimiter="\n", tokens_per_step=3)


def test_beam_search_keeps_top_n_over_m_and_answers_best():
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(PRM_TABLE)
    [r] = beam_search.run([Problem("Q")], eng, prm, Budget(n=4), cfg(width=2))
    assert r.answer == "5" and r.stop_reason == "done" and not r.budget_exhausted
    # step 1: 4 samples; the two "s1 good" are kept and expanded 2 ways; the two "s2 good" likewise.
    assert [c.sampling.n for c in eng.calls] == [4, 2, 2]
    assert [len(c.prompts) for c in eng.calls] == [1, 2, 2]
    assert [s for call in prm.step_calls for s in call][4:6] == [["s1 good", "s2 good"], ["s1 good", "s2 bad"]]
    assert len(r.candidates) == 4 and all(c.finish_reason == "stop" for c in r.candidates)
    assert r.candidates[0].steps == ["s1 good", "s2 good", "Answer: \\boxed{5}"]
    assert r.candidates[0].step_scores == [0.9, 0.9, 0.95]
    # prefixes travel as token ids and hit the (simulated) prefix cache
    assert eng.calls[1].via_ids == [True, True] and r.usage.cached_prompt_tokens > 0
    step_tokens = (len("s1 bad\n\n") + 2 * len("s1 good\n\n") + len("s1 meh\n\n")
                   + 2 * (len("s2 good\n\n") + len("s2 bad\n\n")) + 4 * (len("Answer: \\boxed{5}") + 1))
    assert r.usage.generated_tokens == step_tokens
    assert r.usage.rm_calls == 12 and r.usage.rm_tokens == prm.usage.input_tokens
    assert len(r.trace) == 1 + 12 and r.trace[1]["parent"] == 0


def test_beam_search_never_pools_problems_but_batches_them():
    eng, prm = ScriptedEngine({"Q": Q, "L": L}), TablePRM(PRM_TABLE | {"trap": 0.8, "ok": 0.6})
    res = beam_search.run([Problem("Q"), Problem("L")], eng, prm, Budget(n=4), cfg(width=2))
    assert res[0].answer == "5" and res[1].answer in {"1", "2"}
    assert len(eng.calls[0].prompts) == 2  # both problems in one engine call
    assert all(c.text.startswith("x ") for c in res[1].candidates)  # no candidate crossed problems
    assert res[0].usage.rm_calls + res[1].usage.rm_calls == prm.usage.items


def test_lookahead_ranks_by_rollout():
    table = {"trap": 0.8, "ok": 0.6, "bad": 0.1, "good": 0.9}
    plain = beam_search.run([Problem("L")], ScriptedEngine({"L": L}), TablePRM(table), Budget(n=2), cfg(width=2))[0]
    assert plain.answer == "1"  # "x trap" scores best at step 1 and leads to a bad step
    eng, prm = ScriptedEngine({"L": L}), TablePRM(table)
    ahead = beam_search.run([Problem("L")], eng, prm, Budget(n=2), cfg(width=2, lookahead=1))[0]
    assert ahead.answer == "2"
    assert ahead.usage.rm_calls > plain.usage.rm_calls and any(c.sampling.temperature == 0 for c in eng.calls)


def test_dvts_one_candidate_per_subtree():
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(PRM_TABLE)
    [r] = dvts.run([Problem("Q")], eng, prm, Budget(n=4), cfg(width=2))
    assert len(r.candidates) == 2 and r.answer == "5"
    assert [c.sampling.n for c in eng.calls] == [4, 2, 2] and [len(c.prompts) for c in eng.calls] == [1, 2, 2]


def test_budget_exhaustion_returns_best_partial_marked():
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(PRM_TABLE)
    [r] = beam_search.run([Problem("Q")], eng, prm, Budget(n=4, rm_calls=5), cfg(width=2))
    assert r.budget_exhausted and r.stop_reason == "budget"
    assert {c.finish_reason for c in r.candidates} == {"budget"} and r.text == "s1 good\n\ns2 good\n\n"
    assert r.answer is None and len(eng.calls) == 2


def test_needs_a_process_reward():
    with pytest.raises(ValueError):
        beam_search.run([Problem("Q")], ScriptedEngine({"Q": Q}), lambda p, c: [0.0] * len(c))
