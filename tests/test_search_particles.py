"""Particle filtering and ePF: the pure resampling/annealing maths with numbers, then the loop on the
scripted engine (finished particles never revived, genealogy, accounting, budget exhaustion)."""
import math

import pytest
from scripted_engine import EOS_ID, ScriptedEngine, TablePRM
from twinloop.infer.search import epf, particle_filter
from twinloop.infer.search._common import Budget, Problem, last_boxed
from twinloop.infer.search._particles import ParticleConfig, modulate
from twinloop.infer.search._resampling import (
    effective_sample_size,
    epf_temperature,
    logit_weight,
    multinomial_resample,
    normalized_entropy,
    softmax,
    systematic_resample,
)
from twinloop.infer.search.epf import EPFConfig

Q = ["s1 bad\n\nAnswer: \\boxed{0}", "s1 good\n\ns2 good\n\nAnswer: \\boxed{5}",
     "s1 good\n\ns2 bad\n\nAnswer: \\boxed{9}", "s1 meh\n\nAnswer: \\boxed{4}"]
EXACT = {"bad": 0.0, "meh": 0.0, "good": 1.0, "boxed{5}": 1.0, "boxed{9}": 0.0, "boxed{0}": 0.0, "boxed{4}": 0.0}
E = ["a bad\n\nAnswer: \\boxed{1}", "a good\n\nAnswer: \\boxed{2}", "a bad2\n\nAnswer: \\boxed{3}",
     "a bad3\n\nAnswer: \\boxed{4}"]


def test_logit_weight_and_softmax():
    assert logit_weight(0.5) == 0.0 and logit_weight(0.9) == pytest.approx(math.log(9))
    assert logit_weight(1.0) == pytest.approx(math.log((1 - 1e-7) / 1e-7)) == -logit_weight(0.0)
    assert softmax([0.0, math.log(3)]) == pytest.approx([0.25, 0.75])
    r3 = math.sqrt(3)
    assert softmax([0.0, math.log(3)], 2.0) == pytest.approx([1 / (1 + r3), r3 / (1 + r3)])
    assert softmax([5.0, -5.0], math.inf) == [0.5, 0.5]


def test_resampling_schemes_with_numbers():
    assert multinomial_resample([0.2, 0.5, 0.3], [0.1, 0.2, 0.69, 0.71, 0.99]) == [0, 1, 1, 2, 2]
    assert systematic_resample([0.1, 0.6, 0.3], 3, 0.5) == [1, 1, 2]  # positions 1/6, 1/2, 5/6
    assert systematic_resample([0.5, 0.25, 0.25], 4, 0.9) == [0, 0, 1, 2]
    assert systematic_resample([2.0, 0.0], 3, 0.3) == [0, 0, 0]  # unnormalised weights are fine
    with pytest.raises(ValueError):
        systematic_resample([0.0, 0.0], 2, 0.1)


def test_ess_entropy_and_epf_rules():
    assert effective_sample_size([0.5, 0.5]) == pytest.approx(2.0)
    assert normalized_entropy([0.25] * 4) == pytest.approx(1.0) and normalized_entropy([1.0]) == 0.0
    logw = [math.log(97), 0.0, 0.0, 0.0]  # p = (0.97, 0.01, 0.01, 0.01)
    rho = (1 / (0.97 ** 2 + 3 * 0.01 ** 2)) / 4
    assert epf_temperature(logw, 1, 10, "ess") == pytest.approx(0.9 / rho)
    h = -(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01)) / math.log(4)
    assert epf_temperature(logw, 1, 10, "entropy") == pytest.approx(1 / (h + (1 - h) * 0.1))
    assert epf_temperature(logw, 5, 10, "ess") == 1.0  # τ = 0.5: no annealing
    assert epf_temperature([0.0, math.log(9)], 0, 10, "ess") == 1.0  # ρ = 0.61 >= 0.5
    assert epf_temperature(logw, 1, 10, "none") == 1.0
    assert modulate(1.0, 3.0, "mean") == 2.0 and modulate(1.0, 3.0, "replace") == 3.0
    assert modulate(1.0, 3.0, "none") == 1.0


@pytest.mark.parametrize("module,config", [(particle_filter, ParticleConfig(answer_fn=last_boxed)),
                                           (particle_filter, ParticleConfig(answer_fn=last_boxed,
                                                                            resampling="systematic")),
                                           (epf, EPFConfig(answer_fn=last_boxed))])
def test_particles_follow_the_exact_prm(module, config):
    eng, prm = ScriptedEngine({"Q": Q}), TablePRM(EXACT)
    [r] = module.run([Problem("Q")], eng, prm, Budget(n=4), config)
    assert r.answer == "5" and r.stop_reason == "all_finished" and len(r.candidates) == 4
    gen = r.trace[0]["genealogy"]
    assert all(len(g["ancestors"]) == 4 for g in gen) and len(gen) == 2  # no resampling once all finished
    # finished particles are never extended again: no prompt carries an EOS token
    assert all(EOS_ID not in ids for call in eng.calls for ids in call.prompts)
    assert eng.calls[1].via_ids and all(eng.calls[1].via_ids) and r.usage.cached_prompt_tokens > 0
    assert r.usage.rm_calls == prm.usage.items and r.usage.generated_tokens > 0


def test_finished_particles_keep_weight_and_stay_finished():
    f = ["Answer: \\boxed{1}", "go on\n\nAnswer: \\boxed{2}"]
    eng, prm = ScriptedEngine({"F": f}), TablePRM({"boxed{1}": 0.9, "go on": 0.5, "boxed{2}": 0.6})
    [r] = particle_filter.run([Problem("F")], eng, prm, Budget(n=2), ParticleConfig(answer_fn=last_boxed, seed=3))
    first = r.trace[0]["genealogy"][0]
    assert first["logw"] == pytest.approx([math.log(9), 0.0])
    assert all(c.finish_reason == "stop" for c in r.candidates)
    assert prm.usage.items == 2 + sum(1 for g in r.trace[0]["genealogy"][:1] for a in g["ancestors"] if a == 1)
    assert r.answer == "1"  # the finished particle's weight (0.9) beats "2" (0.6) at the final argmax


def test_epf_anneals_when_weights_collapse():
    eng, prm = ScriptedEngine({"E": E}), TablePRM(EXACT)
    [r] = epf.run([Problem("E")], eng, prm, Budget(n=4), EPFConfig(answer_fn=last_boxed))
    first = r.trace[0]["genealogy"][0]
    assert first["temperature"] == pytest.approx(4.0)  # ESS = 1, ρ = 1/4, τ = 0: T = (1 - 0)/ρ
    entropy = epf.run([Problem("E")], ScriptedEngine({"E": E}), TablePRM(EXACT), Budget(n=4),
                      EPFConfig(answer_fn=last_boxed, anneal="entropy"))[0]
    assert entropy.trace[0]["genealogy"][0]["temperature"] > 1.0


class RecordingEngine(ScriptedEngine):
    """The scripted engine, keeping each call's completions (to tell the look-ahead calls apart)."""

    def __init__(self, script):
        super().__init__(script)
        self.outputs = []

    def generate(self, requests, sampling):
        results = super().generate(requests, sampling)
        self.outputs.append([c for r in results for c in r.completions])
        return results


def test_lookahead_costs_one_step_and_one_prm_call_per_particle():
    plain_eng, plain_prm = RecordingEngine({"Q": Q}), TablePRM(EXACT)
    plain = epf.run([Problem("Q")], plain_eng, plain_prm, Budget(n=4), EPFConfig(answer_fn=last_boxed))[0]
    eng, prm = RecordingEngine({"Q": Q}), TablePRM(EXACT)
    ahead = epf.run([Problem("Q")], eng, prm, Budget(n=4), EPFConfig(answer_fn=last_boxed, lookahead="mean"))[0]
    assert ahead.answer == "5"
    # plain: the first sample (n = 4), then one step per round for the 4 particles in rounds 0 and 1.
    # ahead: before each of those two resamplings, one more call: one step for each of the 4 particles.
    assert [len(c.prompts) for c in plain_eng.calls] == [1, 4, 4]
    assert [len(c.prompts) for c in eng.calls] == [1, 4, 4, 4, 4]
    lookahead = [eng.calls[1], eng.calls[3]]
    assert all(c.sampling.n == 1 and c.sampling.stop == ["\n\n"] for c in lookahead)  # exactly one step each
    assert ahead.usage.engine_requests == plain.usage.engine_requests + 8
    assert ahead.usage.rm_calls == plain.usage.rm_calls + 8 == 20 and prm.usage.items == 20
    lookahead_tokens = sum(len(c.token_ids) for i in (1, 3) for c in eng.outputs[i])
    other_tokens = sum(len(c.token_ids) for i in (0, 2, 4) for c in eng.outputs[i])
    assert lookahead_tokens > 0 and ahead.usage.generated_tokens == lookahead_tokens + other_tokens
    assert plain.usage.generated_tokens == sum(len(c.token_ids) for out in plain_eng.outputs for c in out)


def test_particle_budget_exhaustion():
    [r] = particle_filter.run([Problem("Q")], ScriptedEngine({"Q": Q}), TablePRM(EXACT), Budget(n=4, rm_calls=4),
                              ParticleConfig(answer_fn=last_boxed))
    assert r.budget_exhausted and r.stop_reason == "budget" and r.usage.rm_calls == 4
    assert r.text.startswith("s1 good") and r.answer is None
