"""Outcome RM: TRL-compatible input ids, and transformers vs vLLM pooling scores on a tiny random classifier."""
import math

import pytest
from twinloop.rewards.scalar import ScalarRM, rm_input_ids


@pytest.fixture(scope="session")
def seqcls_dir(tiny_model_dir, tmp_path_factory):
    """A random tiny Qwen2ForSequenceClassification (num_labels=1) on the tiny model's config and tokenizer."""
    from twinloop.tiny import build_random_head

    return build_random_head(tiny_model_dir, tmp_path_factory.mktemp("rm") / "seqcls", seed=2)


def test_rm_input_ids_match_trl_reward_trainer_format(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = rm_input_ids(tok, "What is 1 + 1? ", "2")
    assert tok.decode(ids) == "What is 1 + 1? 2<|im_end|>"
    chat = [{"role": "user", "content": "What is 1 + 1?"}]
    ids = rm_input_ids(tok, chat, [{"role": "assistant", "content": "2"}])
    assert tok.decode(ids) == "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
    assert rm_input_ids(tok, chat, "2") == ids


@pytest.fixture(scope="session")
def seqcls_pooling_engine(seqcls_dir):
    """Closed only at session end: closing an in-process vLLM engine tears down the parallel state that the
    session's other engines share."""
    from twinloop.infer.vllm_engine import VLLMEngine

    eng = VLLMEngine(str(seqcls_dir), dtype="float32", max_model_len=512, runner="pooling")
    yield eng
    eng.close()


def test_transformers_and_vllm_pooling_agree(seqcls_dir, seqcls_pooling_engine):
    prompts = ["What is 12 + 30? ", "What is 12 + 30? ", [{"role": "user", "content": "What is 7 * 6?"}]]
    completions = ["The answer is 42.", "The answer is 41.", [{"role": "assistant", "content": "7 * 6 = 42"}]]
    hf = ScalarRM.from_pretrained(str(seqcls_dir))
    hf_scores = hf(prompts, completions)
    vl = ScalarRM(engine=seqcls_pooling_engine)
    vl_scores = vl(prompts, completions)
    assert vl_scores == pytest.approx(hf_scores, abs=1e-4)
    assert len({round(s, 4) for s in hf_scores}) == 3  # a random head still separates the inputs
    assert hf.usage.model_calls == 3 and hf.usage.input_tokens == vl.usage.input_tokens > 0


def test_sigmoid_option_and_errors(seqcls_dir):
    raw = ScalarRM.from_pretrained(str(seqcls_dir))
    prob = ScalarRM(model=raw.model, tokenizer=raw.tokenizer, sigmoid=True)
    x = raw(["p "], ["c"])[0]
    assert prob(["p "], ["c"])[0] == pytest.approx(1 / (1 + math.exp(-x)))
    with pytest.raises(ValueError):
        ScalarRM(model=raw.model)
    with pytest.raises(ValueError):
        ScalarRM()


class NanEngine:
    tokenizer = None

    def classify(self, prompts):
        return [[float("nan")] for _ in prompts]


def test_non_finite_logit_falls_back(tiny_model_dir):
    from transformers import AutoTokenizer

    rm = ScalarRM(engine=NanEngine(), tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), fallback=-1.0)
    assert rm(["p"], ["c"]) == [-1.0] and rm.usage.unparseable == 1
