"""The tiny arithmetic policy: its data pipeline and tokenizer (fast), a 2-step build through the CLI, and
the shipped checkpoint's greedy accuracy band through vLLM."""
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from twinloop.infer.engine import Request, SamplingConfig
from twinloop.rewards.verifiable import extract_answer

from twinloop import tinyworld
from twinloop.cli import main
from twinloop.tasks import arith

SHIPPED = Path(tinyworld.DEFAULT_OUT)


@pytest.fixture(scope="module")
def tokenizer():
    from twinloop.tiny import train_tokenizer

    return train_tokenizer(tinyworld.tokenizer_corpus(arith.load("train", n=500)), vocab_size=512)


def test_tokenizer_round_trips_chat_and_solutions(tokenizer):
    row = arith.load("test", n=1)[0]
    prefix = tinyworld.chat_prefix(tokenizer, row["prompt"])
    assert prefix == f"<|im_start|>user\n{row['prompt'][0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(row["solution"], add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == row["solution"]
    assert tokenizer.eos_token == "<|im_end|>" and len(tokenizer) <= 512


def test_encoding_masks_prompt_and_padding(tokenizer):
    rows = arith.load("train", n=8)
    examples = tinyworld.encode_rows(tokenizer, rows)
    ids, prompt_len = examples[0]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[prompt_len:-1]) == rows[0]["solution"]
    input_ids, mask, labels = tinyworld.collate(examples[:3], tokenizer.pad_token_id)
    assert input_ids.shape[1] % 8 == 0 and input_ids.shape[1] >= max(len(e[0]) for e in examples[:3])
    for i, (ids, prompt_len) in enumerate(examples[:3]):
        assert int(mask[i].sum()) == len(ids)
        assert (labels[i, :prompt_len] == -100).all() and (labels[i, len(ids):] == -100).all()
        assert labels[i, prompt_len:len(ids)].tolist() == ids[prompt_len:]


def test_length_buckets_and_schedule():
    examples = [([0] * n, 1) for n in random.Random(0).sample(range(10, 200), 96)]
    batches = tinyworld.length_bucketed_batches(examples, batch_size=8, bucket_batches=4, rng=random.Random(0))
    assert len(batches) == 12 and all(len(b) == 8 for b in batches)
    spreads = [max(len(e[0]) for e in b) - min(len(e[0]) for e in b) for b in batches]
    assert max(spreads) < 90  # sorted within buckets of 32: far tighter than random batches
    assert tinyworld.cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert tinyworld.cosine_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert tinyworld.cosine_lr(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert tinyworld.cosine_lr(100, 100, 1.0, 10) == pytest.approx(0.0)


def test_build_command_end_to_end_on_a_few_steps(tmp_path):
    out = tmp_path / "policy"
    code = main(["tinyworld", "build", "--out", str(out), "--steps", "2", "--batch-size", "4", "--hidden", "64",
                 "--heads", "2", "--layers", "1", "--intermediate", "64", "--eval-size", "0", "--warmup", "1"])
    assert code == 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "README.md", "build_stats.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "build_stats.json").read_text())["config"]["steps"] == 2
    # Loaders (transformers, vLLM) must tokenize exactly as training did: the saved model is a llama, because
    # transformers 5 swaps in a digit-splitting Qwen2Tokenizer for every qwen2 checkpoint.
    from transformers import AutoTokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    text = "Compute (55 + 22) * 3 step by step.\n\n55 + 22 = 77"
    as_trained = TokenizersBackend.from_pretrained(out)(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == as_trained
    assert main(["tinyworld", "build", "--out", str(out), "--steps", "0"]) == 2  # bad input: one-line error


@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="tiny policy not built yet")
def test_shipped_checkpoint_is_small_and_documented():
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 20 * 2**20
    assert "tinyworld build" in (SHIPPED / "README.md").read_text()


def test_shipped_policy_greedy_accuracy_band_and_diverse_samples(policy_engine):
    rows = arith.load("test")
    assert len(rows) == 200
    requests = [Request(messages=r["prompt"]) for r in rows]
    greedy = policy_engine.generate(requests, SamplingConfig(temperature=0.0, max_tokens=128))
    reward = arith.ArithOutcomeReward()
    texts = [g.completions[0].text for g in greedy]
    scores = reward([r["prompt"] for r in rows], texts, answer=[r["answer"] for r in rows])
    accuracy = sum(scores) / len(rows)
    assert 0.2 <= accuracy <= 0.7, accuracy
    sampled = policy_engine.generate(requests[:40], SamplingConfig(n=8, temperature=1.0, max_tokens=128))
    distinct = [len(Counter(extract_answer(c.text) for c in s.completions)) for s in sampled]
    assert sum(d > 1 for d in distinct) >= 10  # sampling at T = 1 gives different final answers
