"""CTRL: the trainer's config rules, the evaluation's win-rate estimators, and a 2-process CPU run end to end."""
import itertools
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from twinloop.rewards.calibrated import transform_oracles
from twinloop.train.ctrl_eval import mean_ci, paired_margin, procedure_win_rate, win_rates

REPO = Path(__file__).resolve().parents[1]


def _brute_force(policy, reference, n, procedure):
    keep = {"plain": lambda d: d[0], "bon": max, "won": min}[procedure]
    n = 1 if procedure == "plain" else n
    total = count = 0.0
    for a in itertools.product(policy, repeat=n):
        for b in itertools.product(reference, repeat=n):
            x, y = keep(a), keep(b)
            total += 1.0 if x > y else 0.5 if x == y else 0.0
            count += 1
    return total / count


@pytest.mark.parametrize("procedure", ["plain", "bon", "won"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_procedure_win_rate_is_exact_over_the_empirical_laws(procedure, n):
    policy, reference = [0.2, 0.5, 0.5, 1.0], [0.0, 0.5, 0.7]
    assert procedure_win_rate(policy, reference, n, procedure) == pytest.approx(
        _brute_force(policy, reference, n, procedure), abs=1e-12)


def test_same_distribution_wins_half_and_order_matters():
    rng = np.random.default_rng(0)
    x = list(rng.integers(0, 4, 20) / 3)
    for proc in ("plain", "bon", "won"):
        assert procedure_win_rate(x, x, 8, proc) == pytest.approx(0.5, abs=1e-12)
    better, worse = [1.0, 1.0, 0.5], [0.5, 0.0, 0.0]
    assert procedure_win_rate(better, worse, 4, "bon") > 0.9 and procedure_win_rate(worse, better, 4, "won") < 0.1
    with pytest.raises(ValueError):
        procedure_win_rate(x, x, 2, "median")


def test_sampled_win_rates_approach_the_closed_forms():
    """A policy drawn from the aligned law p(u) ∝ e^{Φ(u)/β} against a U[0, 1] reference (C under π_ref)."""
    rng = np.random.default_rng(1)
    t, beta, k = 6.0, 150.0, 20000
    grid = (np.arange(100000) + 0.5) / 100000
    w = np.exp(np.exp(t * grid) / beta - np.exp(t) / beta)
    pol = grid[np.searchsorted(np.cumsum(w) / w.sum(), rng.random(k))]
    ref = rng.random(k)
    exact = transform_oracles("bon", t, beta, 4)
    got = win_rates([pol], [ref], [4])
    assert got["plain"]["mean"] == pytest.approx(exact["w_std"], abs=0.01)
    assert got["bon@4"]["mean"] == pytest.approx(exact["w_bon"], abs=0.01)
    assert got["won@4"]["mean"] == pytest.approx(exact["w_won"], abs=0.01)
    assert exact["w_bon"] > exact["w_std"] > 0.6  # not the reference; the BoN transform gains most under BoN


def test_confidence_intervals():
    ci = mean_ci([0.4, 0.6, 0.5, 0.7])
    assert ci["mean"] == pytest.approx(0.55) and ci["se"] == pytest.approx(np.std([0.4, 0.6, 0.5, 0.7], ddof=1) / 2)
    assert ci["lo"] == pytest.approx(0.55 - 1.96 * ci["se"]) and ci["hi"] == pytest.approx(0.55 + 1.96 * ci["se"])
    assert paired_margin([0.6, 0.7], [0.5, 0.5])["mean"] == pytest.approx(0.15)


def test_config_insists_on_kl_and_no_std_scaling(tmp_path):
    from twinloop.rewards.calibrated import transform_for_decoding, unit_beta
    from twinloop.train.ctrl import CTRLConfig

    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    cfg = CTRLConfig(**base, decoding="best_of_n", decoding_n=4, kl_budget=0.5)
    plan = transform_for_decoding("best_of_n", 4, kl_budget=0.5)
    assert cfg.scale_rewards == "none" and cfg.plan["transform"] == "bon"
    assert cfg.beta == pytest.approx(unit_beta(plan["rl_beta"], "bon", plan["t"])) and cfg.beta > 0
    ident = CTRLConfig(**base, reward_mode="calibrated", kl_budget=0.5)
    assert ident.plan["transform"] == "none" and ident.beta == pytest.approx(plan_beta_identity())
    assert CTRLConfig(**base, reward_mode="raw", beta=0.2).beta == 0.2
    assert CTRLConfig(**base, decoding="worst_of_n", decoding_n=8, ctrl_t=3.0).plan["t"] == 3.0
    for bad in ({"scale_rewards": "group"}, {"beta": 0.0}, {"reward_mode": "bon"}, {"decoding": "beam_search"}):
        with pytest.raises(ValueError):
            CTRLConfig(**base, **bad)


def plan_beta_identity():
    from twinloop.rewards.calibrated import beta_for_kl

    return beta_for_kl("none", 0.0, 0.5)


def test_orm_recipe_names_the_learned_orm_as_the_base_reward_in_one_spec():
    """recipes/arith/ctrl-orm.yaml: the ORM bundle's spec is the base reward of the calibrated reward the trainer
    builds and of the study's win rates (nothing is loaded: the bundle lives under runs/, absent in CI)."""
    from twinloop.train.ctrl import calibrated_spec, parse

    from twinloop.recipe import read

    script, cfg = parse(["--config", "recipes/arith/ctrl-orm.yaml", "--output_dir", "unused"])
    assert script.reward_funcs == ["runs/rm/orm/rm(sigmoid=True)"] == [read("recipes/arith/ctrl-orm.yaml")["reward"]]
    spec = calibrated_spec(script.reward_funcs[0], cfg, script.model_name_or_path)
    assert spec.startswith("calibrated(base='runs/rm/orm/rm(sigmoid=True)', decoding='best_of_n', n=4,")
    assert "m=32," in spec and cfg.plan["t"] == pytest.approx(12.75) and cfg.beta > 0


def test_twinloop_train_knows_ctrl():
    from twinloop.cli import TRAINERS

    assert TRAINERS["ctrl"] == "twinloop.train.ctrl"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ctrl_run_moves_the_best_of_n_win_rate(tmp_path):
    """2 CPU processes (DDP over gloo) on the shipped tiny policy with the recipe's base reward, trained on one
    training prompt whose reference rarely reaches its top reward (task_seed 1: rewards 0 / 0.2 / 0.4 with the top
    in ~11% of samples): references drawn once by the main process and cached, Φ(Ĉ) rewards, β > 0, a saved
    policy, and its best-of-4 win rate against the reference on that prompt (exact plug-in over K = 128 samples a
    side) well above the unchanged policy's with the same seeds.

    Five runs of this setting (training seeds 0-4, 2 processes, evaluated in a fresh process with K = 128-256):
    trained 0.76-0.88, unchanged 0.39-0.56, margin +0.29..+0.38; the threshold +0.15 sits well inside that spread
    and above the unchanged policy's own spread across seeds (0.39-0.56). lr 1e-3 for 10 steps was faster but a coin
    toss: 2 of 5 runs gained +0.28/+0.35, 3 collapsed onto the middle reward and lost -0.12."""
    from twinloop.train.ctrl_eval import evaluate

    from twinloop.recipe import read

    recipe = "recipes/arith/ctrl.yaml"
    out, cache, policy = tmp_path / "run", tmp_path / "refs", "checkpoints/tiny-arith-policy"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/cpu2.yaml",
            "--main_process_port", str(_free_port()), "-m", "twinloop.train.ctrl",
            "--config", recipe, "--output_dir", str(out), "--reference_cache", str(cache),
            "--task_seed", "1", "--train_size", "1", "--reference_m", "16", "--per_device_train_batch_size", "16",
            "--num_generations", "32", "--max_completion_length", "64", "--learning_rate", "3e-4",
            "--max_steps", "20", "--ctrl_t", "3", "--logging_steps", "1", "--save_strategy", "no",
            "--disable_tqdm", "true"]
    res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    plan = json.loads((out / "ctrl_plan.json").read_text())
    assert plan["transform"] == "bon" and plan["n"] == 4 and plan["t"] == 3.0 and plan["beta_used"] > 0
    files = list(cache.glob("references-*.json"))
    assert len(files) == 1  # one sampling key, written by one process
    stored = json.loads(files[0].read_text())
    assert len(stored["samples"]) == 1 and all(len(v) == 16 for v in stored["samples"].values())
    assert stored["fields"]["temperature"] == 1.0 and stored["fields"]["max_tokens"] == 64
    assert stored["fields"]["model"].startswith("sha256:")
    logs = [json.loads(line.replace("'", '"')) for line in res.stdout.splitlines() + res.stderr.splitlines()
            if line.startswith("{'loss'")]
    assert len(logs) == 20 and all(math.isfinite(float(r["loss"])) for r in logs)
    assert float(logs[-1]["kl"]) > 0  # the policy moved and the KL term sees it
    ev = evaluate([str(out), str(REPO / policy)], str(REPO / policy), reward_spec=read(REPO / recipe)["reward"],
                  split="train", task_seed=1, n_problems=1, k=128, max_tokens=64, budgets=[4], seed=7)
    trained, unchanged = (ev["policies"][p]["win"]["bon@4"]["mean"] for p in (str(out), str(REPO / policy)))
    assert trained - unchanged > 0.15, (trained, unchanged)


def test_study_flags_margins_table_and_plot(tmp_path):
    from twinloop.train.ctrl_study import margins, method_flags, plot, table

    assert method_flags("ctrl-won8") == ["--reward_mode", "ctrl", "--decoding", "worst_of_n", "--decoding_n", "8"]
    assert method_flags("raw") == ["--reward_mode", "raw"]
    with pytest.raises(ValueError):
        method_flags("ctrl-median4")
    ref = [[0.0, 0.5], [0.5, 1.0]]

    def point(scores, kl):
        return {"kl": mean_ci([kl, kl]), "win": win_rates(scores, ref, [4]), "per_prompt": {"scores": scores}}

    study = {"eval": {"reference_scores": ref},
             "points": {"calibrated": {"20": point([[0.5, 1.0], [1.0, 1.0]], 0.2)},
                        "ctrl-bon4": {"20": point([[1.0, 1.0], [1.0, 1.0]], 0.3)}}}
    rows = margins(study, "ctrl-bon4", "calibrated", "bon@4")
    expected = (procedure_win_rate([1.0, 1.0], ref[0], 4, "bon") - procedure_win_rate([0.5, 1.0], ref[0], 4, "bon")) / 2
    assert len(rows) == 1 and rows[0]["mean"] == pytest.approx(expected) and rows[0]["kl_a"] == pytest.approx(0.3)
    assert "| ctrl-bon4 | 20 | 0.300" in table(study, [4])
    plot(study, tmp_path / "p.png", [4])
    assert (tmp_path / "p.png").stat().st_size > 0


def test_study_t_sweep_points_plot_and_reused_evaluations(tmp_path):
    from twinloop.train.ctrl_study import method_flags, plot_t_sweep, reusable_points, sweep_points

    assert method_flags("ctrl-bon4-t12.75")[-2:] == ["--ctrl_t", "12.75"]
    assert "--ctrl_t" not in method_flags("ctrl-bon4")
    ref = [[0.0, 0.5], [0.5, 1.0]]

    def point(scores, kl):
        return {"kl": mean_ci([kl, kl + 0.1]), "win": win_rates(scores, ref, [4]), "per_prompt": {"scores": scores}}

    low, high = point([[0.5, 0.5], [0.5, 1.0]], 0.1), point([[1.0, 1.0], [1.0, 1.0]], 0.4)
    study = {"points": {"ctrl-bon4-t25": {"20": point(ref, 0.0), "40": high}, "ctrl-bon4-t3": {"40": low},
                        "ctrl-bon8-t3": {"40": low}, "calibrated": {"40": low}}}
    assert [(t, p is high) for t, p in sweep_points(study, 4)] == [(3.0, False), (25.0, True)]  # last step, by t
    summary = plot_t_sweep(study, tmp_path / "sweep.png", 4, 0.5)
    assert summary["analytical_t"] == pytest.approx(12.75) and [r["t"] for r in summary["measured"]] == [3.0, 25.0]
    assert summary["measured"][1]["bon@4"]["mean"] == pytest.approx(high["win"]["bon@4"]["mean"])
    assert (tmp_path / "sweep.png").stat().st_size > 0
    settings = {"reference": "ref", "task": "arith", "reward": "r", "split": "dev", "n_problems": 2, "k": 2,
                "temperature": 1.0, "max_tokens": 96, "budgets": [4]}
    (tmp_path / "study.json").write_text(json.dumps({"eval": {**settings, "reference_scores": ref},
                                                     "points": {"a": {"40": high}, "b": {"40": low}}}))
    policies = {"a": [("40", "out/a/checkpoint-40")], "b": [("40", "out/b/checkpoint-40")],
                "c": [("40", "out/c/checkpoint-40")]}
    found, scores = reusable_points(tmp_path / "study.json", settings, policies, fresh={"b"})
    assert found == {"out/a/checkpoint-40": high} and scores == ref  # b was retrained, c is new
    assert reusable_points(tmp_path / "study.json", {**settings, "split": "test"}, policies, set()) == ({}, None)


def test_tie_aware_oracle_on_the_worked_example_and_in_the_continuous_limit():
    from twinloop.rewards.calibrated import beta_for_kl, unit_transform
    from twinloop.train.ctrl_ties import aligned_law, reference_law, tie_aware_curve, tie_aware_point

    values, q, c_hat = reference_law([0.4, 0.1, 0.9, 0.4])
    assert list(values) == [0.1, 0.4, 0.9] and list(q) == [0.25, 0.5, 0.25]
    assert list(c_hat) == [0.125, 0.5, 0.875]  # Ĉ(0.4) = 0.5 as in the worked example
    p, kl = aligned_law(q, np.zeros(3), 1.0)
    assert np.allclose(p, q) and kl == pytest.approx(0.0, abs=1e-12)
    flat = tie_aware_point([(q, c_hat)], [np.zeros(3)], 0.5, 4)
    assert flat["win"]["mean"] == pytest.approx(0.5, abs=1e-12)  # Φ ≡ 0 cannot move: ½ whatever the budget
    # all rewards distinct: Ĉ is uniform and the exact discrete answer approaches the continuous closed form
    curve = tie_aware_curve([list(np.arange(4000.0))], [6.0], 0.5, 4)
    point = curve["points"][0]
    rl_beta = beta_for_kl("bon", 6.0, 0.5, 4)
    exact = transform_oracles("bon", 6.0, rl_beta, 4)
    assert point["kl"] == pytest.approx(0.5, rel=1e-3)
    assert point["win"]["mean"] == pytest.approx(exact["w_bon"], abs=2e-3)
    assert point["beta"] == pytest.approx(rl_beta / (math.exp(6.0) - 1.0), rel=1e-2)  # the unit-range β
    assert curve["identity"]["win"]["mean"] < point["win"]["mean"]  # the BoN transform wins under BoN
    # a coarse law: the best outcome ties, so its Ĉ is below 1 and its unit BoN reward at t = 12.75 is small
    _, _, coarse = reference_law([0.0] * 8 + [1.0] * 8)
    assert coarse[-1] == 0.75 and unit_transform(coarse[-1], "bon", 12.75) < 0.05


def test_tie_aware_oracle_calibrates_on_the_first_m_references():
    from twinloop.train.ctrl_ties import tie_aware_curve

    scores = [[0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0]]
    full = tie_aware_curve(scores, [3.0], 0.3, 4)
    coarse = tie_aware_curve(scores, [3.0], 0.3, 4, calibrate_m=4)
    # against the first 4 (all 0.0), 0.5 and 1.0 both beat every reference (Ĉ = 1): the calibrated reward cannot
    # prefer the top value, so the converged policy gains less at the same KL, and the transform no longer matters
    assert coarse["points"][0]["kl"] == pytest.approx(0.3, rel=1e-6)
    assert coarse["points"][0]["win"]["mean"] < full["points"][0]["win"]["mean"] - 0.05
    assert coarse["points"][0]["win"]["mean"] == pytest.approx(coarse["identity"]["win"]["mean"], abs=1e-9)
    assert full["points"][0]["win"]["mean"] > full["identity"]["win"]["mean"] + 0.01
