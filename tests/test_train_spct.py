"""SPCT trainer: the RFT phase on an oracle judge (filter, hinted attempt, acceptance rates), the recipe, and one
short end-to-end run of every phase on the shipped tiny policy (transformers engine), whose exported GRM bundle
carries its meta RM and votes as the live objects did."""
import json
import random
from pathlib import Path

import pytest
from twinloop.rewards.generative import parse_scores
from twinloop.train import spct
from twinloop.train.spct_data import Item, template_judgment, truth_reward

from twinloop.contracts import Completion, Result, Usage

REPO = Path(__file__).resolve().parents[1]
POLICY = str(REPO / "checkpoints" / "tiny-arith-policy")
EXPR = "(17 + 25) * 3 - 40"
GOOD = "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 40 = 86\n\nAnswer: \\boxed{86}"
BAD = "17 + 25 = 42\n\n42 * 3 = 124\n\n124 - 40 = 84\n\nAnswer: \\boxed{84}"


class OracleJudge:
    """A judge engine for the RFT logic: per query, its non-hinted samples are right ``pattern`` times out of
    three (template judgment) and otherwise reversed; a hinted prompt gets a right judgment when ``hint_ok``."""

    tokenizer = None

    def __init__(self, items, patterns, hint_ok):
        self.items, self.patterns, self.hint_ok, self.calls = items, patterns, hint_ok, []

    def generate(self, requests, sampling):
        self.calls.append((len(requests), sampling.n))
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            q = next(i for i, it in enumerate(self.items) if it.query in prompt)
            it = self.items[q]
            order = sorted(range(len(it.responses)), key=lambda k: prompt.index(it.responses[k]))
            right = template_judgment(EXPR, [it.responses[k] for k in order], [it.rewards[k] for k in order])
            wrong = right.replace("10", "0").replace("\\boxed{", "\\boxed{10, ") if len(order) > 1 else "Scores: x"
            hinted = "The best response is" in prompt
            texts = [right if (self.hint_ok[q] if hinted else s < self.patterns[q]) else wrong
                     for s in range(sampling.n)]
            out.append(Result([1], [Completion([1], t, "stop") for t in texts], Usage(1, 0, 1)))
        return out


def _items():
    good_other = "25 + 17 = 42\n\n42 * 3 = 126\n\n126 - 40 = 86\n\nAnswer: \\boxed{86}"
    return [Item(f"Compute {EXPR} step by step. #{q}", EXPR, [GOOD if q != 3 else good_other, BAD],
                 [1.0, truth_reward(EXPR, BAD)]) for q in range(4)]


def test_rft_phase_keeps_correct_samples_drops_easy_items_and_tries_one_hint(tmp_path, monkeypatch):
    items = _items()
    trained = []
    monkeypatch.setattr(spct, "train_sft", lambda cfg, rows, out, start, epochs, lr: trained.append(rows))
    engine = OracleJudge(items, patterns=[3, 1, 0, 0], hint_ok=[True, True, True, False])
    cfg = spct.SPCTConfig(output_dir=str(tmp_path), n_rft=3)
    report = spct.run_rft(cfg, engine, items, "adapter", tmp_path)
    # item 0: all 3 right -> too easy (no hint); item 1: 1 kept + hint; item 2: 0 + hint; item 3: nothing
    assert engine.calls == [(4, 3), (3, 1)]
    assert report["too_easy"] == 1 and report["nonhinted_kept"] == 1 and report["hinted_tried"] == 3
    assert report["nonhinted_acceptance"] == pytest.approx(1 / 9)
    assert report["hinted_acceptance"] == pytest.approx(2 / 3) and report["sft_rows"] == 3
    [rows] = trained
    assert len(rows) == 3
    for row in rows:  # trained under the plain prompt (no hint), every kept judgment correct for its order
        prompt = row["prompt"][0]["content"]
        assert "The best response is" not in prompt
        it = next(i for i in items if i.query in prompt)
        order = sorted(range(2), key=lambda k: prompt.index(it.responses[k]))
        scores = parse_scores(row["completion"][0]["content"], 2)
        assert scores[order.index(0)] > scores[order.index(1)]
    assert json.loads((tmp_path / "report.json").read_text()) == report


def test_bundle_dir_and_recipe_name_one_reward():
    assert spct.bundle_dir(["grm:runs/x/grm"], Path("r")) == "runs/x/grm"
    assert spct.bundle_dir(["runs/y/grm"], Path("r")) == "runs/y/grm"
    assert spct.bundle_dir([], Path("r")) == "r/grm"
    from twinloop.infer.eval_config import parse_eval_args

    from twinloop.recipe import section

    recipe = str(REPO / "recipes/arith/spct.yaml")
    train = section(recipe, "train")
    assert train["reward_funcs"] == [parse_eval_args(["--recipe", recipe])["reward"]]
    cfg = spct.SPCTConfig(**{k: v for k, v in train.items() if k != "task"})
    assert str(spct.Paths(cfg).bundle) == "runs/spct-tiny-arith/grm" and cfg.rl_beta == 0.08
    assert cfg.rl_generations == 4 and cfg.n_rft == 3
    with pytest.raises(ValueError, match="phase"):
        spct.SPCTConfig(phase="nope")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Every phase, in order, on 3 queries of the tiny policy (transformers engine, 8-token judgments)."""
    root = tmp_path_factory.mktemp("spct")
    bundle = root / "bundle"
    cfg = spct.SPCTConfig(output_dir=str(root / "run"), reward_funcs=[f"grm:{bundle}"], engine="hf",
                          policy_dir=POLICY, train_queries=3, samples_per_query=3, test_share=0.34, sft_epochs=1,
                          sft_batch_size=4, judge_max_tokens=8, rl_max_steps=1, rl_prompts_per_step=1, meta_k=2,
                          meta_epochs=1, voting_k=2)
    return cfg, spct.run_phases(cfg), bundle


def test_every_phase_end_to_end_on_the_tiny_policy(smoke_run):
    import torch
    from twinloop.checkpoints.export import load_reward, read_spec
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.rewards.generative import GenerativeReward
    from twinloop.train.common import load_tokenizer

    cfg, done, bundle = smoke_run
    paths = spct.Paths(cfg)
    report = json.loads((paths.data / "report.json").read_text())
    assert report["queries_shared"] == 0 and report["train"]["queries"] + report["test"]["queries"] <= 3
    assert report["train"]["items"] == done["data"]["train"]["items"] > 0
    # the separate judge: the policy plus the phrase tokens, fully fine-tuned in every phase
    assert len(load_tokenizer(str(paths.judge0))) > len(load_tokenizer(POLICY))
    assert (paths.sft / "model.safetensors").is_file() and not (paths.sft / "adapter_config.json").exists()
    assert done["rft"]["nonhinted_sampled"] == 3 * report["train"]["items"]
    assert (paths.rl / "model.safetensors").is_file() and done["rl"]["steps"] == 1
    assert done["meta"]["examples"] == 2 * report["train"]["multi"]
    spec = read_spec(bundle)
    assert spec["kind"] == "grm" and spec["model"]["weights"] == "full" and spec["call"]["meta_rm"] == "meta_rm"
    assert read_spec(bundle / "meta_rm")["kind"] == "meta"

    policy_engine = HFEngine(POLICY, tokenizer=load_tokenizer(POLICY), dtype="float32")
    live = GenerativeReward(HFEngine(str(paths.rl), tokenizer=load_tokenizer(str(paths.rl)), dtype="float32"), k=2,
                            max_tokens=8, mode="group", seed=3, meta_rm=load_reward(paths.meta_export))
    # given the policy's engine (as twinloop eval gives it), the separate judge still runs on its own weights
    loaded = load_reward(bundle, engine=policy_engine, seed=3, max_tokens=8)
    assert loaded.meta_rm is not None and loaded.lora is None and loaded.engine is not policy_engine
    votes = []
    for grm in (live, loaded):
        torch.manual_seed(0)
        random.seed(0)
        votes.append(grm.vote(f"Compute {EXPR} step by step.", [GOOD, BAD]))
    a, b = votes
    assert [j.text for j in a.judgments] == [j.text for j in b.judgments]
    assert [j.order for j in a.judgments] == [j.order for j in b.judgments]
    assert a.totals == b.totals and a.best == b.best
    # meta-guided votes over parseable judgments (8-token samples never parse): the same kept judgments
    from twinloop.rewards.generative import Judgment

    query = f"Compute {EXPR} step by step."
    fixed = [Judgment(list(sc), f"Analysis: sample {x}\nScores: \\boxed{{{sc[order[0]]}, {sc[order[1]]}}}", order)
             for x, (sc, order) in enumerate([((9, 2), [0, 1]), ((3, 8), [1, 0]), ((5, 6), [0, 1]), ((7, 1), [1, 0])])]
    for k_meta in (1, 2):
        live.k_meta = loaded.k_meta = k_meta
        va, vb = live._tally(query, [GOOD, BAD], fixed), loaded._tally(query, [GOOD, BAD], fixed)
        assert va.totals == vb.totals and va.best == vb.best and va.used == vb.used == k_meta
    prompts = ["p"] * 4
    texts = [j.text for j in fixed]
    assert loaded.meta_rm(prompts, texts) == pytest.approx(live.meta_rm(prompts, texts), abs=1e-6)


def test_phase2_under_accelerate_launch_with_2_processes(smoke_run):
    """Phase 2 alone, DDP over gloo on 2 CPU processes, from the smoke run's SFT adapter: one optimizer step."""
    import os
    import socket
    import subprocess
    import sys

    cfg, _, _ = smoke_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(cfg.output_dir)
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "recipes/accelerate/cpu2.yaml",
            "--main_process_port", str(port), "-m", "twinloop.train.spct", "--config", "recipes/arith/spct.yaml",
            "--phase", "rl", "--engine", "hf", "--output_dir", str(out), "--judge_max_tokens", "8",
            "--rl_max_steps", "1", "--rl_prompts_per_step", "1", "--reward_funcs", "grm:unused"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    log = json.loads((out / "rl" / "train_log.json").read_text())
    assert [r["step"] for r in log if "loss" in r] == [1]
    assert json.loads((out / "rl" / "report.json").read_text())["steps"] == 1


def test_lora_judge_warm_up_and_export(tmp_path):
    """``judge: lora`` keeps the judge a LoRA on the policy: the warm-up writes an adapter and the bundle is a
    ``lora`` export that loads on the policy's engine."""
    from twinloop.checkpoints.export import load_reward, read_spec
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.train.common import load_tokenizer

    bundle = tmp_path / "bundle"
    cfg = spct.SPCTConfig(output_dir=str(tmp_path / "run"), reward_funcs=[f"grm:{bundle}"], engine="hf",
                          judge="lora", policy_dir=POLICY, train_queries=2, samples_per_query=3, test_share=0.0,
                          sft_epochs=1, sft_batch_size=4, judge_max_tokens=8)
    for phase in ("data", "sft", "export"):
        spct.run_phases(spct.SPCTConfig(**{**cfg.__dict__, "phase": phase}))
    paths = spct.Paths(cfg)
    assert (paths.sft / "adapter_config.json").is_file() and not paths.judge0.exists()
    assert read_spec(bundle)["model"]["weights"] == "lora"
    engine = HFEngine(POLICY, tokenizer=load_tokenizer(POLICY), dtype="float32")
    loaded = load_reward(bundle, engine=engine, max_tokens=8)
    assert loaded.engine is engine and loaded.lora == str(bundle)
