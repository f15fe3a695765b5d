"""HFEngine: the padding after a sample's EOS (shorter samples of an n-sample batch) is never returned or
counted as generated, also when the pad token is the EOS token."""
from conftest import POLICY_DIR
from twinloop.infer.engine import Request, SamplingConfig
from twinloop.infer.hf_engine import HFEngine

PROMPT = [{"role": "user", "content": "What is 3 + 4? Put the answer in \\boxed{}."}]


def test_pad_equal_to_eos_adds_no_tokens():
    eng = HFEngine(str(POLICY_DIR))
    sampling = SamplingConfig(n=6, temperature=1.0, max_tokens=64, seed=7)
    [plain] = eng.generate([Request(messages=PROMPT)], sampling)
    eos = eng.tokenizer.eos_token_id
    lengths = [len(c.token_ids) for c in plain.completions]
    assert len(set(lengths)) > 1  # samples of different lengths: the shorter ones were padded
    eng.tokenizer.pad_token_id = eos
    [same] = eng.generate([Request(messages=PROMPT)], sampling)
    assert [c.token_ids for c in same.completions] == [c.token_ids for c in plain.completions]
    assert [c.text for c in same.completions] == [c.text for c in plain.completions]
    for c in same.completions:
        assert eos not in c.token_ids[:-1]
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == eos)
    assert same.usage.generated_tokens == sum(lengths)
