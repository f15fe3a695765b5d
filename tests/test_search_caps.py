"""Budgets are hard caps: on the scripted engine every procedure stops exactly at (never past) its RM-call
and generated-token caps, shrinking the round that would cross them, and reports stop_reason="budget"."""
from scripted_engine import ScriptedEngine, TablePRM
from test_search_grm import SCRIPT as GRM_SCRIPT
from test_search_grm import ScriptedGRM
from twinloop.infer.search import astar, beam_search, dvts, grm_meta_vote, grm_vote, particle_filter
from twinloop.infer.search._common import Budget, Problem, fit_caps, last_boxed
from twinloop.infer.search._particles import ParticleConfig
from twinloop.infer.search._tree import TreeConfig
from twinloop.infer.search.astar import AStarConfig
from twinloop.infer.search.grm_vote import GRMVoteConfig

Q = ["s1 bad\n\nAnswer: \\boxed{0}", "s1 good\n\ns2 good\n\nAnswer: \\boxed{5}",
     "s1 good\n\ns2 bad\n\nAnswer: \\boxed{9}", "s1 meh\n\nAnswer: \\boxed{4}"]
TABLE = {"bad": 0.1, "good": 0.9, "meh": 0.5, "boxed{5}": 0.95, "boxed{9}": 0.2}
FIRST_STEPS = len("s1 bad\n\n") + 2 * len("s1 good\n\n") + len("s1 meh\n\n")  # the first round's tokens


def test_fit_caps_with_numbers():
    assert fit_caps(4, 128, None, None, 1) == (4, 128)
    assert fit_caps(4, 128, 600, 10, 1) == (4, 128)
    assert fit_caps(4, 128, None, 3, 1) == (3, 128)
    assert fit_caps(4, 128, 100, None) == (4, 25)
    assert fit_caps(4, 128, 3, None) == (3, 1)
    assert fit_caps(4, 128, 0, None) == (0, 128) and fit_caps(4, 128, None, 1, 2) == (0, 128)


def test_grm_vote_honours_the_rm_call_cap():
    grm = ScriptedGRM([(7, 4), (5, 6), (8, 3), (1, 9)])
    [r] = grm_vote.run([Problem("P")], ScriptedEngine(GRM_SCRIPT), grm, Budget(n=2, rm_calls=1),
                       GRMVoteConfig(answer_fn=last_boxed, k=4))
    assert r.usage.rm_calls == 1 and [k for _, k in grm.calls] == [1]
    assert r.stop_reason == "budget" and r.budget_exhausted and r.answer == "1"  # one judgment: (7, 4)
    meta = ScriptedGRM([(7, 4), (2, 9), (3, 8)], meta=[0.9, 0.1, 0.2])
    [m] = grm_meta_vote.run([Problem("P")], ScriptedEngine(GRM_SCRIPT), meta, Budget(n=2, rm_calls=5),
                            GRMVoteConfig(answer_fn=last_boxed, k=3))
    assert m.usage.rm_calls == 4 and [k for _, k in meta.calls] == [2] and m.stop_reason == "budget"
    free = ScriptedGRM([(7, 4), (5, 6)])
    [f] = grm_vote.run([Problem("P")], ScriptedEngine(GRM_SCRIPT), free, Budget(n=2, rm_calls=2),
                       GRMVoteConfig(answer_fn=last_boxed, k=2))
    assert f.usage.rm_calls == 2 and f.stop_reason == "done"  # a cap that is not crossed does not bite


def test_beam_search_shrinks_the_round_to_the_rm_cap():
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(TABLE)
    [r] = beam_search.run([Problem("Q")], eng, prm, Budget(n=4, rm_calls=5), TreeConfig(answer_fn=last_boxed, width=2))
    assert r.usage.rm_calls == 5 == prm.usage.items
    assert [(len(c.prompts), c.sampling.n) for c in eng.calls] == [(1, 4), (1, 1)]  # 2 parents x 2 wanted
    assert r.stop_reason == "budget" and r.budget_exhausted and r.text == "s1 good\n\ns2 good\n\n"


def test_dvts_and_astar_never_pass_the_rm_cap():
    for module, config in [(dvts, TreeConfig(answer_fn=last_boxed, width=2)),
                           (astar, AStarConfig(answer_fn=last_boxed, k=2))]:
        for cap in (1, 3, 5, 7):
            prm = TablePRM(TABLE)
            [r] = module.run([Problem("Q")], ScriptedEngine({"Q": Q}), prm, Budget(n=4, rm_calls=cap), config)
            assert prm.usage.items == r.usage.rm_calls <= cap, (module, cap)
            assert r.stop_reason == "budget" or r.usage.rm_calls < cap


def test_particle_filter_shrinks_the_round_to_the_rm_cap():
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(TABLE)
    [r] = particle_filter.run([Problem("Q")], eng, prm, Budget(n=4, rm_calls=6), ParticleConfig(answer_fn=last_boxed))
    assert r.usage.rm_calls == 6 == prm.usage.items
    assert [(len(c.prompts), c.sampling.n) for c in eng.calls] == [(1, 4), (2, 1)]
    assert r.stop_reason == "budget" and r.budget_exhausted


def test_particle_filter_and_beam_never_pass_the_token_cap():
    cap = FIRST_STEPS + 12  # 12 tokens left for the 4 samples of the second round: 3 each
    eng = ScriptedEngine({"Q": Q})
    [r] = particle_filter.run([Problem("Q")], eng, TablePRM(TABLE), Budget(n=4, generated_tokens=cap),
                              ParticleConfig(answer_fn=last_boxed))
    assert r.usage.generated_tokens == cap and eng.calls[1].sampling.max_tokens == 3 and len(eng.calls) == 2
    assert r.stop_reason == "budget" and eng.calls[0].sampling.max_tokens == cap // 4  # room split, steps fit
    eng = ScriptedEngine({"Q": Q})
    [b] = beam_search.run([Problem("Q")], eng, TablePRM(TABLE), Budget(n=4, generated_tokens=cap),
                          TreeConfig(answer_fn=last_boxed, width=2))
    assert b.usage.generated_tokens == cap and [c.sampling.max_tokens for c in eng.calls] == [cap // 4, 3]
    assert b.stop_reason == "budget" and len(eng.calls) == 2
