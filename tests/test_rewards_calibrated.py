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
    prompt_seed,
    sampling_key,
    transform,
    transform_for_decoding,
    transform_oracles,
    unit_beta,
    unit_transform,
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
    for t in (40.0, 60.0):  # worst-of-N at large t needs β < 1e-6 of Φ's spread
        b = beta_for_kl("won", t, 0.5, n=8)
        assert transform_oracles("won", t, b, 8, grid=4000)["kl"] == pytest.approx(0.5, rel=1e-6)


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
    eng = CountingEngine()
    refs = ReferenceSamples(eng, tmp_path, m=4, model_id="some/model")
    chat = [{"role": "user", "content": "hi"}]
    got = refs.get(["a", chat, "a"])
    assert got == [["0", "1", "2", "3"]] * 3 and eng.calls == 2
    stored = json.loads(refs.path.read_text())
    assert set(stored["samples"]) == {prompt_key("a"), prompt_key(chat)} and stored["fields"]["model"] == "some/model"
    again = ReferenceSamples(eng, tmp_path, m=4, model_id="some/model")
    assert again.get(["a", chat]) == got[:2] and eng.calls == 2  # served from disk
    bigger = ReferenceSamples(eng, tmp_path, m=6, model_id="some/model")
    assert bigger.get(["a"]) == [["0", "1", "2", "3", "0", "1"]] and eng.calls == 3  # topped up
    hotter = ReferenceSamples(eng, tmp_path, m=4, model_id="some/model", temperature=0.7)
    assert hotter.path != refs.path and hotter.get(["a"]) == [["0", "1", "2", "3"]] and eng.calls == 4  # not reused
    with pytest.raises(ValueError):
        ReferenceSamples(eng, tmp_path, m=0, model_id="some/model")
    with pytest.raises(ValueError, match="model_id"):
        ReferenceSamples(eng, tmp_path, m=4)  # this engine does not name its model


class SeedRecordingEngine(CountingEngine):
    """Records the seed of every request it samples."""

    def __init__(self):
        super().__init__()
        self.seeds = []

    def generate(self, requests, sampling):
        self.seeds.append(sampling.seed)
        return super().generate(requests, sampling)


def test_each_prompt_draws_its_references_with_its_own_seed(tmp_path):
    eng = SeedRecordingEngine()
    refs = ReferenceSamples(eng, tmp_path / "a", m=4, model_id="some/model", seed=7)
    refs.get(["x", "y"])
    want = [prompt_seed(7, prompt_key("x")), prompt_seed(7, prompt_key("y"))]
    assert eng.seeds == want and want[0] != want[1]  # not one stream shared by all prompts
    assert prompt_seed(8, prompt_key("x")) != want[0]  # the run's seed enters
    again = SeedRecordingEngine()
    ReferenceSamples(again, tmp_path / "b", m=4, model_id="some/model", seed=7).get(["y", "x"])
    assert again.seeds == want[::-1]  # a prompt's seed does not depend on its neighbours or their order
    more = SeedRecordingEngine()
    ReferenceSamples(more, tmp_path / "a", m=6, model_id="some/model", seed=7).get(["x"])
    assert more.seeds == [want[0] + 4]  # a top-up starts past the samples already drawn
    unseeded = SeedRecordingEngine()
    plain = ReferenceSamples(unseeded, tmp_path / "a", m=4, model_id="some/model")
    plain.get(["x"])
    assert unseeded.seeds == [None] and plain.path != refs.path
    assert refs.fields["seed"] == 7 and refs.fields["seeding"].startswith("per-prompt")  # the scheme is in the key


def test_best_t_default_grid_widens_past_its_edge():
    from twinloop.rewards.calibrated import t_curve

    bon8 = best_t(8, "bon", kl_budget=0.5)
    assert 30.0 < bon8["t"] < 60.0  # the old grid stopped at 30, which is not the optimum for best-of-8
    around = {r["t"]: r["win_rate"] for r in t_curve(8, "bon", 0.5, [30.0, bon8["t"] - 0.25, bon8["t"] + 0.25])}
    assert bon8["win_rate"] > around[30.0] and all(bon8["win_rate"] >= w - 1e-12 for w in around.values())
    assert best_t(4, "bon", kl_budget=0.5)["t"] == pytest.approx(12.75)  # interior optima are unchanged
    assert best_t(8, "bon", kl_budget=0.5, ts=[10.0, 30.0])["t"] == 30.0  # an explicit grid is searched as given


def _model_folder(path, weights=b"w" * 64, config='{"hidden_size": 8}'):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config)
    (path / "model.safetensors").write_bytes(weights)
    return str(path)


def test_cache_key_changes_with_the_model_the_sampling_and_the_lora(tmp_path):
    model = _model_folder(tmp_path / "m")
    base = dict(model=model, temperature=1.0, top_p=1.0, max_tokens=64, stop=None, lora=None, seed=None)
    key = sampling_key(**base)[0]
    assert sampling_key(**base)[0] == key  # deterministic
    assert sampling_key(**{**base, "model": _model_folder(tmp_path / "copy")})[0] == key  # same files, same key
    changes = {
        "weights": {"model": _model_folder(tmp_path / "w", weights=b"v" + b"w" * 63)},
        "config": {"model": _model_folder(tmp_path / "c", config='{"hidden_size": 16}')},
        "model name": {"model": "other/model"},
        "temperature": {"temperature": 0.7},
        "top_p": {"top_p": 0.9},
        "max_tokens": {"max_tokens": 65},
        "stop": {"stop": ["\n"]},
        "lora": {"lora": _model_folder(tmp_path / "adapter", weights=b"a" * 8)},
        "seed": {"seed": 0},
    }
    keys = {name: sampling_key(**{**base, **change})[0] for name, change in changes.items()}
    for name, changed in keys.items():
        assert changed != key, name
    assert len(set(keys.values())) == len(keys)
    other_lora = sampling_key(**{**base, "lora": _model_folder(tmp_path / "adapter2", weights=b"b" * 8)})[0]
    assert other_lora != keys["lora"]  # the adapter's weights, not its presence


def test_transform_follows_the_decoding_spec():
    bon = transform_for_decoding("best_of_n", 4, kl_budget=0.5)
    chosen = best_t(4, "bon", kl_budget=0.5)
    assert bon["transform"] == "bon" and bon["t"] == pytest.approx(chosen["t"]) and bon["t"] > 1.0
    assert transform_oracles("bon", bon["t"], bon["rl_beta"], 4, grid=4000)["kl"] == pytest.approx(0.5, rel=1e-4)
    won = transform_for_decoding("worst_of_n", 8, kl_budget=0.5)
    assert won["transform"] == "won" and won["t"] > 1.0
    plain = transform_for_decoding("sampling", 1, kl_budget=0.5)
    assert plain["transform"] == "none"
    assert transform_oracles("none", 0.0, plain["rl_beta"], 1, grid=4000)["kl"] == pytest.approx(0.5, rel=1e-4)
    assert transform_for_decoding("best_of_n", 1)["transform"] == "none"  # best-of-1 is plain sampling
    assert transform_for_decoding("best_of_n", 4, t=3.0)["t"] == 3.0  # an explicit t wins
    assert transform_for_decoding("best_of_n", 4)["kl_budget"] == 0.5  # the documented default budget
    with pytest.raises(ValueError, match="beam_search"):
        transform_for_decoding("beam_search", 4)


def test_unit_range_transform_values():
    assert unit_transform(0.0, "bon", 5.0) == 0.0 and unit_transform(1.0, "won", 5.0) == pytest.approx(1.0)
    assert unit_transform(0.5, "bon", 5.0) == pytest.approx((math.exp(2.5) - 1) / (math.exp(5) - 1))
    assert unit_transform(0.5, "won", 5.0) == pytest.approx((1 - math.exp(-2.5)) / (1 - math.exp(-5)))
    # the same aligned policy: Φ/β and Φ_unit/β_unit differ by a constant only
    b = unit_beta(40.0, "bon", 5.0)
    assert transform_oracles("bon", 5.0, 40.0, 4)["w_bon"] == pytest.approx(
        aligned_policy_oracles(lambda u: (np.exp(5 * u) - 1) / (math.exp(5) - 1), b, 4)["w_bon"], abs=1e-9)


def _sample_aligned(phi, beta, size, rng, grid=200000):
    """Draws from p(u) ∝ e^{Φ(u)/β} on [0, 1] by inverse CDF on a fine grid."""
    u = (np.arange(grid) + 0.5) / grid
    logp = phi(u) / beta
    p = np.exp(logp - logp.max())
    cdf = np.cumsum(p) / p.sum()
    return u[np.searchsorted(cdf, rng.random(size))] + (rng.random(size) - 0.5) / grid


@pytest.mark.parametrize("kind,t,beta,n", [("bon", 6.0, 2.0, 4), ("won", 6.0, 0.05, 8), ("none", 0.0, 0.3, 4)])
def test_closed_form_win_rates_match_monte_carlo(kind, t, beta, n):
    rng = np.random.default_rng(0)
    phi = {"bon": lambda u: np.exp(t * u), "won": lambda u: -np.exp(-t * u), "none": lambda u: u}[kind]
    draws = 100000
    pol = _sample_aligned(phi, beta, (draws, n), rng)
    ref = rng.random((draws, n))  # C ~ U[0, 1] under π_ref
    mc = {"w_std": (pol[:, 0] > ref[:, 0]).mean(), "w_bon": (pol.max(1) > ref.max(1)).mean(),
          "w_won": (pol.min(1) > ref.min(1)).mean()}
    exact = transform_oracles(kind, t, beta, n)
    for key, value in mc.items():
        se = math.sqrt(exact[key] * (1 - exact[key]) / draws)
        assert value == pytest.approx(exact[key], abs=4 * se + 1e-4), key
    assert exact["w_bon"] != pytest.approx(0.5, abs=0.02)  # the policy is not the reference


def test_calibrated_reward_from_a_recipe_spec(tmp_path):
    from twinloop.build import build_reward

    class NamedEngine(CountingEngine):  # names its model; answers "\\boxed{0}", "\\boxed{1}", ...
        model = "named/model"

        def generate(self, requests, sampling):
            return [Result(prompt_ids=r.prompt_ids, completions=[Completion(c.token_ids, f"\\boxed{{{c.text}}}", "stop")
                                                                 for c in r.completions], usage=r.usage)
                    for r in super().generate(requests, sampling)]

    eng = NamedEngine()
    spec = ("calibrated(base='numeric', decoding='best_of_n', n=4, kl_budget=0.5, m=3, max_tokens=8, "
            f"cache_dir={str(tmp_path)!r}, unit_range=True)")
    reward = build_reward(spec, engine=eng)
    plan = transform_for_decoding("best_of_n", 4, kl_budget=0.5)
    assert (reward.kind, reward.exponent) == ("bon", plan["t"]) and reward.rl_beta == pytest.approx(plan["rl_beta"])
    scores = reward(["What is 1 + 1?"] * 3, ["\\boxed{1}", "\\boxed{2}", "\\boxed{5}"], answer=["1"] * 3)
    # references "0", "1", "2" score 0, 1, 0 against answer 1: Ĉ = 5/6, 1/3, 1/3 for the three completions
    expected = [unit_transform(u, "bon", plan["t"]) for u in (5 / 6, 1 / 3, 1 / 3)]
    assert scores == pytest.approx(expected)
    assert eng.calls == 1 and reward.references.fields["max_tokens"] == 8
    rebuilt = build_reward(reward.spec(), engine=eng)
    assert rebuilt(["What is 1 + 1?"], ["\\boxed{1}"], answer=["1"]) == pytest.approx(expected[:1])
    assert eng.calls == 1  # the rebuilt reward reads the same disk cache
    with pytest.raises(ValueError, match="engine"):
        build_reward("calibrated(base='numeric', transform='none')")
    with pytest.raises(ValueError, match="contradicts"):
        build_reward("calibrated(base='numeric', transform='won', decoding='best_of_n', n=4)", engine=eng)
    with pytest.raises(ValueError, match="needs t"):
        build_reward("calibrated(base='numeric', transform='bon')", engine=eng)


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


def test_t_curve_peaks_where_best_t_says():
    from twinloop.rewards.calibrated import t_curve

    ts = list(np.linspace(1.0, 20.0, 20))
    curve = t_curve(4, "bon", 0.5, ts)
    peak = max(curve, key=lambda r: r["win_rate"])
    assert peak["t"] == best_t(4, "bon", kl_budget=0.5, ts=ts)["t"]
    assert curve[0]["win_rate"] < peak["win_rate"] - 0.01 and 1.0 < peak["t"] < 20.0  # an interior maximum
