"""CTRL calibration: worked example, the closed-form oracles, the t chooser, reference caching, the wrapper."""
import json
import math

import numpy as np
import pytest
from twinloop.infer.engine import Completion, Result, Usage
from twinloop.rewards.calibrated import (
    CalibratedReward,
    ReferenceSamples,
    aligned_policy_oracles,
    best_t,
    beta_for_kl,
    bon_transform,
    calibrate,
    prompt_key,
    transform,
    transform_oracles,
    won_transform,
)


def test_worked_example():
    u = calibrate(0.4, [0.1, 0.4, 0.4, 0.9])
    assert u == 0.5
    assert bon_transform(u, 5) == pytest.approx(12.18, abs=5e-3)
    assert won_transform(u, 5) == pytest.approx(-0.082, abs=5e-4)
    assert transform(u, "none", 5) == 0.5
    with pytest.raises(ValueError):
        transform(u, "best", 5)
    with pytest.raises(ValueError):
        calibrate(0.4, [])


def test_calibrate_extremes_and_ties():
    assert calibrate(1.0, [0.0, 0.5]) == 1.0
    assert calibrate(-1.0, [0.0, 0.5]) == 0.0
    assert calibrate(0.5, [0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_zero_transform_gives_one_half(n):
    o = aligned_policy_oracles(lambda u: np.zeros_like(u), beta=0.7, n=n)
    assert o["kl"] == pytest.approx(0.0, abs=1e-12)
    for key in ("w_std", "w_bon", "w_won"):
        assert o[key] == pytest.approx(0.5, abs=1e-6)


def test_oracles_closed_form_for_linear_phi():
    # Φ(u) = u, β = 1: p(u) = e^u / (e - 1), so W_std = 1/(e-1) and KL = ∫ p log p has a closed form.
    e = math.e
    o = aligned_policy_oracles(lambda u: u, beta=1.0, n=1)
    assert o["w_std"] == pytest.approx(1 / (e - 1), abs=1e-7)
    assert o["w_bon"] == pytest.approx(o["w_std"], abs=1e-7) and o["w_won"] == pytest.approx(o["w_std"], abs=1e-7)
    kl = 1 / (e - 1) - math.log(e - 1)  # E_p[u] - log Z
    assert o["kl"] == pytest.approx(kl, abs=1e-7)
    with pytest.raises(ValueError):
        aligned_policy_oracles(lambda u: u, beta=0.0, n=1)


def test_sharp_transform_stays_a_probability():
    o = transform_oracles("bon", t=30.0, beta=1e-3, n=8)
    for key in ("w_std", "w_bon", "w_won"):
        assert 0.0 <= o[key] <= 1.0 + 1e-9


def test_beta_for_kl_hits_the_budget():
    b = beta_for_kl("won", 6.0, 0.3, n=4)
    assert transform_oracles("won", 6.0, b, 4, grid=4000)["kl"] == pytest.approx(0.3, rel=1e-6)


def test_t_chooser_beats_the_calibrated_baseline_at_equal_kl():
    ts = np.linspace(0.5, 20.0, 40)
    identity_beta = beta_for_kl("none", 0.0, 0.5)
    for procedure in ("bon", "won"):
        chosen = best_t(4, procedure, kl_budget=0.5, ts=ts)
        baseline = transform_oracles("none", 0.0, identity_beta, 4, grid=4000)[f"w_{procedure}"]
        assert chosen["kl"] == pytest.approx(0.5, rel=1e-6)
        assert chosen["win_rate"] > baseline + 0.03
        assert chosen["t"] > 1.0


def test_t_chooser_for_plain_win_rate_prefers_the_identity():
    # N = 1 is the plain win rate, for which the identity transform of C is optimal: the exponential
    # family can only approach it as t -> 0.
    chosen = best_t(1, "bon", kl_budget=0.5, ts=[0.25, 2.0, 8.0])
    baseline = transform_oracles("none", 0.0, beta_for_kl("none", 0.0, 0.5), 1, grid=4000)["w_std"]
    assert chosen["t"] == 0.25 and chosen["win_rate"] <= baseline + 1e-6


def test_t_chooser_with_beta_trades_win_rate_against_kl():
    loose = best_t(4, "bon", beta=0.01, ts=[2.0, 8.0, 16.0])
    tight = best_t(4, "bon", beta=1.0, ts=[2.0, 8.0, 16.0])
    assert loose["kl"] > tight["kl"] and loose["win_rate"] > tight["win_rate"]
    with pytest.raises(ValueError):
        best_t(4, "bon")
    with pytest.raises(ValueError):
        best_t(4, "median", beta=1.0)


class CountingEngine:
    """Returns completions "0", "1", ... per request; counts generate calls."""

    tokenizer = None

    def __init__(self):
        self.calls = 0

    def generate(self, requests, sampling):
        self.calls += 1
        return [Result(prompt_ids=[0] * 3,
                       completions=[Completion([1], str(j), "stop") for j in range(sampling.n)],
                       usage=Usage(prompt_tokens=3, generated_tokens=sampling.n)) for _ in requests]


def test_reference_samples_cached_on_disk(tmp_path):
    path = tmp_path / "refs.json"
    eng = CountingEngine()
    refs = ReferenceSamples(eng, path, m=4)
    chat = [{"role": "user", "content": "hi"}]
    got = refs.get(["a", chat, "a"])
    assert got == [["0", "1", "2", "3"]] * 3 and eng.calls == 2
    assert set(json.loads(path.read_text())) == {prompt_key("a"), prompt_key(chat)}
    again = ReferenceSamples(eng, path, m=4)
    assert again.get(["a", chat]) == got[:2] and eng.calls == 2  # served from disk
    bigger = ReferenceSamples(eng, path, m=6)
    assert bigger.get(["a"]) == [["0", "1", "2", "3", "0", "1"]] and eng.calls == 3  # topped up
    with pytest.raises(ValueError):
        ReferenceSamples(eng, path, m=0)


def test_calibrated_reward_wraps_any_scalar_reward():
    def numeric(prompts, completions, **cols):  # a scalar reward: the number written, None if not a number
        out = []
        for c in completions:
            text = c[-1]["content"] if isinstance(c, list) else c
            try:
                out.append(float(text))
            except ValueError:
                out.append(None)
        return out

    refs = {prompt_key("p"): ["0.1", "0.4", "0.4", "0.9"], prompt_key("q"): ["oops"]}
    lookups = []

    def references(prompts):
        lookups.append(list(prompts))
        return [refs[prompt_key(p)] for p in prompts]

    plain = CalibratedReward(numeric, references)
    comps = ["0.4", [{"role": "assistant", "content": "1.0"}], "x", "0.4"]
    assert plain(["p", "p", "p", "q"], comps) == [0.5, 1.0, None, None]
    assert plain.usage.unparseable == 2
    assert plain(["p"], ["0.05"]) == [0.0] and len(lookups) == 1  # reference rewards memoised per prompt

    bon = CalibratedReward(numeric, references, transform="bon", t=5.0)
    won = CalibratedReward(numeric, references, transform="won", t=5.0)
    assert bon(["p"], ["0.4"])[0] == pytest.approx(12.18, abs=5e-3)
    assert won(["p"], ["0.4"])[0] == pytest.approx(-0.082, abs=5e-4)
    with pytest.raises(ValueError):
        CalibratedReward(numeric, references, transform="exp")
