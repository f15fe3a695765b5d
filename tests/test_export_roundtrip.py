"""Reward export and import: every kind round-trips to the same Reward object with the same scores (CPU fp32,
within ``SAME``), the folder is a plain HF folder (AutoModel, TRL), and the manifest catches altered files."""
import json

import pytest
import torch
from twinloop.checkpoints.export import export, load_reward, read_spec
from twinloop.checkpoints.manifest import verify

PROMPTS = ["What is 2 + 3?", [{"role": "user", "content": "What is 7 * 8?"}], "What is 9 - 4?"]
COMPLETIONS = ["2 + 3 = 5\n\nAnswer: 5", "7 * 8 = 56\n\nSo 56.", "\n\n"]  # the last has no step
# Scores of one model before and after a reload: CPU fp32 reductions may run in another order from one call to
# the next (thread scheduling under load gave a 2e-7 difference), so "the same" is within this tolerance.
SAME = {"rel": 1e-5, "abs": 1e-6}


def _classifier(tiny_model_dir, out, cls_name, num_labels, seed):
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels, cfg.architectures, cfg.pad_token_id = num_labels, [cls_name], tok.pad_token_id
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(cfg).float().eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok


@pytest.fixture(scope="module")
def seqcls(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "seqcls"
    return (out, *_classifier(tiny_model_dir, out, "Qwen2ForSequenceClassification", 1, 11))


@pytest.fixture(scope="module")
def tokcls(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "tokcls"
    return (out, *_classifier(tiny_model_dir, out, "Qwen2ForTokenClassification", 2, 12))


def _same_settings(a, b):
    assert type(a) is type(b) and a.settings() == b.settings()


def test_scalar_rm_round_trip_same_scores_and_plain_hf_folder(seqcls, tmp_path):
    from transformers import AutoModelForSequenceClassification
    from twinloop.rewards.scalar import ScalarRM

    src, model, tok = seqcls
    before = ScalarRM(model=model, tokenizer=tok, max_length=48)
    scores = before(PROMPTS, COMPLETIONS)
    out = export(src, tmp_path / "orm", "orm", reward=before, method="ORM", data=["arith pairs"],
                 metrics={"eval_accuracy": 0.75})
    after = load_reward(out)
    _same_settings(before, after)
    assert after(PROMPTS, COMPLETIONS) == pytest.approx(scores, **SAME)
    plain = AutoModelForSequenceClassification.from_pretrained(out)  # no twinloop needed
    assert plain.config.num_labels == 1
    spec = read_spec(out)
    assert spec["kind"] == "orm" and spec["score_range"] == [None, None] and spec["model"]["weights"] == "full"
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "eval_accuracy" in card and "- orm" in card and "arith pairs" in card
    assert "pipeline_tag: text-classification" in card
    assert verify(out) == []


def test_scalar_rm_export_is_a_trl_reward_model_path(seqcls, tmp_path, tiny_model_dir):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from twinloop.rewards.scalar import ScalarRM

    src, model, tok = seqcls
    out = export(src, tmp_path / "orm", "orm")
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=4, report_to=[], use_cpu=True, max_steps=1, bf16=False)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=str(out), args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["What is 1 + 1?"] * 2}))
    trl_rm = trainer.reward_funcs[0]  # TRL loads it as AutoModelForSequenceClassification(num_labels=1)
    assert type(trl_rm).__name__ == "Qwen2ForSequenceClassification" and trl_rm.config.num_labels == 1
    ours = dict(model.named_parameters())
    for name, p in trl_rm.named_parameters():  # same weights, in whatever dtype TRL chose
        torch.testing.assert_close(p.detach(), ours[name].detach().to(p.dtype), rtol=0, atol=0)
    ids = torch.tensor([tok("What is 1 + 1?2" + tok.eos_token).input_ids])
    with torch.no_grad():  # the trainer wraps the RM's forward (mixed precision off here: fp32 throughout)
        trl_logit = float(trl_rm(input_ids=ids).logits[0, 0])
    ours_logit = ScalarRM(model=model, tokenizer=tok)(["What is 1 + 1?"], ["2"])[0]
    assert trl_logit == pytest.approx(ours_logit, abs=1e-6)


@pytest.mark.parametrize("merge", [False, True])
def test_scalar_rm_lora_adapter_kept_or_merged(tiny_model_dir, tmp_path, merge):
    """A SEQ_CLS LoRA (score head in modules_to_save): kept, the same scores; merged, the folder is a plain
    classifier whose scores differ only by the merge arithmetic."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from twinloop.rewards.scalar import ScalarRM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(13)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    base.config.pad_token_id = tok.pad_token_id
    peft_model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    before = ScalarRM(model=peft_model.eval(), tokenizer=tok)
    scores = before(PROMPTS, COMPLETIONS)
    out = export(tmp_path / "adapter", tmp_path / "orm", "orm", merge_lora=merge)
    after = load_reward(out)
    assert read_spec(out)["model"]["weights"] == ("full" if merge else "lora")
    if merge:
        assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
        assert after(PROMPTS, COMPLETIONS) == pytest.approx(scores, abs=1e-5)
    else:
        assert after(PROMPTS, COMPLETIONS) == pytest.approx(scores, **SAME)


def test_meta_rm_round_trip_and_grm_carries_it(seqcls, lora_dirs, tmp_path):
    from twinloop.rewards.generative import GenerativeReward, format_grm_prompt
    from twinloop.rewards.scalar import ScalarRM

    src, model, tok = seqcls
    meta = ScalarRM(model=model, tokenizer=tok, sigmoid=True)
    judge_prompts = [format_grm_prompt("What is 2 + 3?", ["5", "6"])] * 2
    judgments = ["Specific Criteria: c\nAnalysis: a\nScores: \\boxed{9, 2}", "Scores: \\boxed{3, 3}"]
    scores = meta(judge_prompts, judgments)
    meta_out = export(src, tmp_path / "meta", "meta", reward=meta)
    loaded = load_reward(meta_out)
    assert loaded(judge_prompts, judgments) == pytest.approx(scores, **SAME)
    assert read_spec(meta_out)["score_range"] == [0.0, 1.0]
    assert "GRM judging prompt" in read_spec(meta_out)["call"]["input"]

    _, merged = lora_dirs
    grm_out = export(merged, tmp_path / "grm", "grm", settings={"k": 2, "k_meta": 1}, meta_rm=meta_out)
    grm = load_reward(grm_out)
    assert isinstance(grm, GenerativeReward) and isinstance(grm.meta_rm, ScalarRM)
    assert grm.meta_rm(judge_prompts, judgments) == pytest.approx(scores, **SAME)
    assert read_spec(grm_out)["call"]["meta_rm"] == "meta_rm" and verify(grm_out) == []
    with pytest.raises(ValueError, match="'meta' export"):
        export(merged, tmp_path / "grm2", "grm", meta_rm=grm_out)


def test_token_classifier_prm_round_trip(tokcls, tmp_path):
    from twinloop.rewards.process import TokenClassifierPRM

    src, model, tok = tokcls
    before = TokenClassifierPRM(model=model, tokenizer=tok, aggregation="min", fallback=-1.0)
    scores = before(PROMPTS, COMPLETIONS)
    steps = before.step_scores(PROMPTS[:2], [["2 + 3 = 5", "Answer: 5"], ["7 * 8 = 56"]])
    out = export(src, tmp_path / "prm", "prm", reward=before)
    after = load_reward(out)
    _same_settings(before, after)
    assert after(PROMPTS, COMPLETIONS) == pytest.approx(scores, **SAME) and scores[2] == -1.0
    after_steps = after.step_scores(PROMPTS[:2], [["2 + 3 = 5", "Answer: 5"], ["7 * 8 = 56"]])
    assert [len(x) for x in after_steps] == [2, 1]
    assert [x for row in after_steps for x in row] == pytest.approx([x for row in steps for x in row], **SAME)
    call = read_spec(out)["call"]
    assert call["step_delimiter"] == "\n\n" and call["aggregation"] == "min"


def test_trainer_output_spec_is_read_and_carried_into_the_export(tokcls, tmp_path):
    """A trainer writes the same twinloop_reward.json an export holds (write_trainer_bundle, one format):
    load_reward reads that folder as is, and export keeps its settings."""
    import shutil

    from twinloop.checkpoints.spec import write_trainer_bundle
    from twinloop.rewards.process import TokenClassifierPRM

    src = tmp_path / "prm-run"
    shutil.copytree(tokcls[0], src)
    trained = TokenClassifierPRM(model=tokcls[1], tokenizer=tokcls[2], aggregation="prod")
    write_trainer_bundle(src, trained, "prm")
    direct = load_reward(src)
    assert isinstance(direct, TokenClassifierPRM) and direct.aggregation == "prod"
    out = export(src, tmp_path / "prm", "prm")
    assert read_spec(out)["settings"]["aggregation"] == "prod"
    assert load_reward(out)(PROMPTS, COMPLETIONS) == pytest.approx(direct(PROMPTS, COMPLETIONS), **SAME)


def test_token_id_delimiter_and_yes_no_probe_prm_round_trip(tiny_model_dir, hf_engine, tmp_path):
    from twinloop.rewards.process import YesNoProbePRM

    newline = hf_engine.tokenizer("\n", add_special_tokens=False).input_ids[0]
    before = YesNoProbePRM(hf_engine, delimiter=newline, aggregation="mean", question="\nCorrect?\n")
    scores = before(PROMPTS, ["2 + 3 = 5\nAnswer: 5", "56", "x"])
    out = export(tiny_model_dir, tmp_path / "probe", "prm", reward=before)
    assert read_spec(out)["settings"]["delimiter"] == newline  # the constructor argument as given
    after = load_reward(out)
    assert after.tag_ids == [newline]
    _same_settings(before, after)
    assert after(PROMPTS, ["2 + 3 = 5\nAnswer: 5", "56", "x"]) == pytest.approx(scores, **SAME)


def _grm_texts(reward, seed=0):
    torch.manual_seed(seed)
    vote = reward.vote("What is 2 + 3?", ["5", "6"], k=2)
    torch.manual_seed(seed)
    return [j.text for j in vote.judgments], reward(["What is 2 + 3?"] * 2, ["5", "6"])


@pytest.mark.parametrize("merge", [False, True])
def test_grm_round_trip_from_lora_adapter(lora_dirs, tiny_model_dir, tmp_path, merge):
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.rewards.generative import GenerativeReward

    adapter, merged = lora_dirs
    if merge:  # the same maths before and after: merged weights, or the base with the adapter applied
        before = GenerativeReward(HFEngine(str(merged)), k=2, max_tokens=8, mode="group", seed=5)
    else:
        before = GenerativeReward(HFEngine(str(tiny_model_dir)), lora=str(adapter), k=2, max_tokens=8,
                                  mode="group", seed=5)
    expected = _grm_texts(before)
    out = export(adapter, tmp_path / "grm", "grm", reward=before, merge_lora=merge)
    spec = read_spec(out)
    assert spec["model"]["weights"] == ("full" if merge else "lora")
    assert spec["model"]["base_model"] == str(tiny_model_dir)  # provenance; a LoRA export loads on it
    assert spec["call"]["voting_k"] == 2 and "\\boxed" in spec["call"]["parser"]
    after = load_reward(out, seed=5)
    _same_settings(before, after)
    assert after.lora == (None if merge else str(out))
    texts, scores = _grm_texts(after)
    assert texts == expected[0] and scores == expected[1]


def test_pairwise_round_trip(lora_dirs, tmp_path):
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.rewards.pairwise import PairwiseVerifier

    _, merged = lora_dirs
    before = PairwiseVerifier(HFEngine(str(merged)), max_tokens=6, both_orders=True)
    items = [("What is 2 + 3?", "5", "6"), ("What is 1 + 1?", "3", "2")]
    texts = [j.text for j in before.judge(items)]
    prefs = before.preferences(items)
    out = export(merged, tmp_path / "pair", "pairwise", reward=before)
    after = load_reward(out)
    _same_settings(before, after)
    assert [j.text for j in after.judge(items)] == texts and after.preferences(items) == prefs
    assert read_spec(out)["call"]["rating_format"] == "<rating_A>X</rating_A><rating_B>Y</rating_B>"


def test_manifest_reports_truncated_altered_and_unlisted_files_by_name(seqcls, tmp_path):
    out = export(seqcls[0], tmp_path / "orm", "orm")
    assert verify(out) == []
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    card = out / "README.md"
    card.write_text(card.read_text().replace("orm", "ORM"))
    (out / "extra.txt").write_text("x")
    problems = verify(out)
    assert any(p.startswith("model.safetensors: truncated") for p in problems)
    assert "README.md: altered (sha256 differs)" in problems
    assert "extra.txt: not in the manifest" in problems
    with pytest.raises(ValueError, match="model.safetensors: truncated"):
        load_reward(out)


def test_export_and_load_errors(seqcls, tokcls, tmp_path):
    src = seqcls[0]
    with pytest.raises(ValueError, match="needs a causal_lm model"):
        export(src, tmp_path / "x", "grm")
    with pytest.raises(ValueError, match="has no setting"):
        export(src, tmp_path / "x", "orm", settings={"aggregation": "min"})
    with pytest.raises(ValueError, match="aggregation must be one of"):
        export(tokcls[0], tmp_path / "x", "prm", settings={"aggregation": "median"})
    with pytest.raises(ValueError, match="kind must be one of"):
        export(src, tmp_path / "x", "scalar")
    with pytest.raises(FileNotFoundError, match="not found"):
        export(tmp_path / "missing", tmp_path / "x", "orm")
    out = export(src, tmp_path / "orm", "orm")
    with pytest.raises(ValueError, match="not empty"):
        export(src, out, "orm")
    with pytest.raises(FileNotFoundError, match="twinloop_reward.json"):
        load_reward(src)
    (out / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        load_reward(out, check_manifest=False)
    assert not list(tmp_path.glob(".*staging*"))  # failed exports leave nothing behind


ZERO3_SCRIPT = r'''
import os, sys, torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import deepspeed, torch.distributed as dist
from safetensors.torch import save_file
from transformers import AutoConfig, Qwen2ForSequenceClassification
torch.set_num_threads(1)
deepspeed.init_distributed(dist_backend="gloo")
cfg = AutoConfig.from_pretrained(sys.argv[1])
torch.manual_seed(0)
model = Qwen2ForSequenceClassification(cfg)
ds = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}, "zero_force_ds_cpu_optimizer": False,
      "zero_allow_untested_optimizer": True}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), config=ds)
engine.backward(engine(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.sum())
engine.step()
engine.save_checkpoint(sys.argv[2])
with deepspeed.zero.GatheredParameters(list(model.parameters())):
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
save_file(weights, sys.argv[2] + "/expected.bin.st")
engine.destroy(); dist.destroy_process_group()
'''


def test_deepspeed_zero3_checkpoint_exports_consolidated(seqcls, tmp_path):
    """A real one-process ZeRO-3 checkpoint (partitioned parameters, ~10 s) exports to full fp32 weights."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    src = seqcls[0]
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy(src / name, ckpt / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "zero3.py"
    script.write_text(ZERO3_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(src), str(ckpt), str(port)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    expected = load_file(str(ckpt / "expected.bin.st"))
    (ckpt / "expected.bin.st").unlink()
    assert (ckpt / "latest").is_file()
    out = export(tmp_path, tmp_path / "exported", "orm")  # the trainer output folder: picks checkpoint-1
    model = AutoModelForSequenceClassification.from_pretrained(out)
    got = model.state_dict()
    assert set(expected) <= set(got)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    assert not torch.equal(got["score.weight"], seqcls[1].state_dict()["score.weight"])  # a step happened
    assert verify(out) == []


def test_cli_export_and_verify(seqcls, tmp_path, capsys):
    from twinloop import export_cli, verify_cli

    out = tmp_path / "orm"
    argv = ["--checkpoint", str(seqcls[0]), "--kind", "orm", "--out", str(out), "--setting", "sigmoid=true",
            "--metric", "eval_accuracy=0.5", "--data", "arith"]
    assert _run(export_cli, argv) == 0
    assert json.loads((out / "twinloop_reward.json").read_text())["settings"]["sigmoid"] is True
    assert _run(verify_cli, [str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    (out / "tokenizer.json").write_text("{}")
    assert _run(verify_cli, [str(out)]) == 1
    assert "FAILED tokenizer.json: truncated" in capsys.readouterr().out


def _run(module, argv):
    import argparse

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))
