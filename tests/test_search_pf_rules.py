"""Particle filtering's resampling rule on the scripted engine: no resampling once every particle has
finished (the final argmax sees the best finished particle), and finished particles take no part in the
resampling of the live ones."""
import pytest
from scripted_engine import ScriptedEngine, TablePRM
from twinloop.infer.search import epf, particle_filter
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search._particles import ParticleConfig
from twinloop.infer.search.epf import EPFConfig

DONE_AT_ONCE = ["Answer: \\boxed{1}", "Answer: \\boxed{2}", "Answer: \\boxed{3}", "Answer: \\boxed{4}"]
# p(best) = 1.5 / (1.5 + 3 * 1.22) = 0.29 under one more resampling: it would be lost in ~1 of 4 seeds
CLOSE = {"boxed{1}": 0.6, "boxed{2}": 0.55, "boxed{3}": 0.55, "boxed{4}": 0.55}


@pytest.mark.parametrize("resampling", ["multinomial", "systematic"])
def test_best_finished_particle_survives_to_the_final_argmax(resampling):
    runs = []
    for seed in range(24):
        eng, prm = ScriptedEngine({"Q": DONE_AT_ONCE}), TablePRM(CLOSE)
        [r] = particle_filter.run([Problem("Q")], eng, prm, Budget(n=4),
                                  ParticleConfig(answer_fn=last_boxed, seed=seed, resampling=resampling))
        runs.append((r, eng, prm))
    assert [r.answer for r, _, _ in runs] == ["1"] * 24
    for r, eng, prm in runs:
        assert sorted(c.answer for c in r.candidates) == ["1", "2", "3", "4"]
        assert r.trace[0]["genealogy"] == [] and len(eng.calls) == 1 and prm.usage.items == 4


def test_finished_particles_do_not_take_live_slots():
    # a finished particle rated 0.99 against a live one at 0.01: resampled together, both slots would
    # almost surely become the finished particle and "2" would never be written
    script = ["Answer: \\boxed{1}", "go on\n\nAnswer: \\boxed{2}"]
    for seed in range(10):
        eng, prm = ScriptedEngine({"F": script}), TablePRM({"boxed{1}": 0.99, "go on": 0.01, "boxed{2}": 0.5})
        config = ParticleConfig(answer_fn=last_boxed, seed=seed)
        [r] = particle_filter.run([Problem("F")], eng, prm, Budget(n=2), config)
        assert sorted(c.answer for c in r.candidates) == ["1", "2"] and r.answer == "1"
        [g] = r.trace[0]["genealogy"]
        assert g["ancestors"] == [0, 1] and g["live"] == [1]
        assert prm.usage.items == 3 and r.usage.generated_tokens == (len(script[0]) + 1 + len("go on\n\n")
                                                                     + len("Answer: \\boxed{2}") + 1)


def test_epf_anneals_over_the_live_particles_only():
    # three finished particles at 0.99 and one live one: the live population is one particle, ESS = N_live
    script = ["Answer: \\boxed{1}", "Answer: \\boxed{1}", "Answer: \\boxed{1}", "go on\n\nAnswer: \\boxed{2}"]
    eng, prm = ScriptedEngine({"F": script}), TablePRM({"boxed{1}": 0.99, "go on": 0.01, "boxed{2}": 0.5})
    [r] = epf.run([Problem("F")], eng, prm, Budget(n=4), EPFConfig(answer_fn=last_boxed))
    [g] = r.trace[0]["genealogy"]
    assert g["live"] == [3] and g["ancestors"] == [0, 1, 2, 3] and g["temperature"] == 1.0
    assert sorted(c.answer for c in r.candidates) == ["1", "1", "1", "2"]
