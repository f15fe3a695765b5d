"""Adaptive self-evaluation probe: P("No") from a two-token forced choice, fake and real engines."""
import math

import pytest
from twinloop.rewards.selfeval import SELF_EVAL_QUESTION, SelfEvalProbe


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


class FixedLogprobEngine:
    """next_token_logprobs returns scripted (first token, second token) logprobs in turn."""

    def __init__(self, tokenizer, rows):
        self.tokenizer, self.rows, self.calls = tokenizer, list(rows), []

    def next_token_logprobs(self, prefixes, token_ids, lora=None):
        self.calls.append((list(prefixes), list(token_ids), lora))
        return [self.rows.pop(0) for _ in prefixes]


def test_p_no_is_renormalised_over_the_two_tokens(tokenizer):
    eng = FixedLogprobEngine(tokenizer, [(math.log(0.06), math.log(0.02)),  # (No, Yes): P(No) = 0.75
                                         (-math.inf, -2.0),
                                         (float("nan"), -math.inf)])
    probe = SelfEvalProbe(eng, lora="adapter-dir")
    chat = [{"role": "user", "content": "What is 2+2?"}]
    out = probe(["What is 2+2?", chat, "x"], ["4", [{"role": "assistant", "content": "5"}], "y"])
    assert out == pytest.approx([0.75, 0.0, 0.5])
    assert probe.usage.unparseable == 1 and probe.usage.model_calls == 3 and probe.usage.calls == 1
    prefixes, token_ids, lora = eng.calls[0]
    assert token_ids == [probe.no_id, probe.yes_id] and lora == "adapter-dir"
    text = tokenizer.decode(prefixes[1])
    assert text.endswith(f"<|im_start|>user\n{SELF_EVAL_QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>assistant\n5<|im_end|>" in text
    assert probe.usage.input_tokens == sum(len(p) for p in prefixes)


def test_plain_text_probe_and_p_better(tokenizer):
    eng = FixedLogprobEngine(tokenizer, [(math.log(0.2), math.log(0.8))])
    probe = SelfEvalProbe(eng, chat=False)
    assert probe.p_better(["Q: 1+1? "], ["2"]) == pytest.approx([0.8])
    assert tokenizer.decode(eng.calls[0][0][0]) == f"Q: 1+1? 2\n\n{SELF_EVAL_QUESTION}\n"
    assert probe.p_no([], []) == []


def test_same_first_token_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="same token"):
        SelfEvalProbe(FixedLogprobEngine(tokenizer, []), yes="Nah", no="No")


def test_real_engines_agree(vllm_engine, hf_engine):
    prompts = ["What is 12 + 30?", [{"role": "user", "content": "What is 7 * 6?"}]]
    responses = ["12 + 30 = 42. The answer is 42.", "7 * 6 = 43"]
    v = SelfEvalProbe(vllm_engine).p_no(prompts, responses)
    h = SelfEvalProbe(hf_engine).p_no(prompts, responses)
    assert all(0.0 < p < 1.0 for p in v)
    assert v == pytest.approx(h, abs=1e-4)
