"""The Engine contract, run unchanged against all three backends (vLLM offline, vLLM server, transformers)."""
import pytest

from twinloop.infer.engine import EngineError, Request, SamplingConfig

BACKENDS = ["vllm", "openai", "hf"]
CHAT = [{"role": "user", "content": "What is 12 + 30?"}]


@pytest.fixture(params=BACKENDS)
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


def _tokens(results):
    return [[c.token_ids for c in r.completions] for r in results]


def test_seeded_sampling_is_deterministic(engine):
    reqs = [Request(messages=CHAT), Request(text="What is 7 * 8?")]
    s = SamplingConfig(n=2, temperature=1.0, max_tokens=12, seed=123)
    a, b = engine.generate(reqs, s), engine.generate(reqs, s)
    assert _tokens(a) == _tokens(b)
    c = engine.generate(reqs, SamplingConfig(n=2, temperature=1.0, max_tokens=12, seed=999))
    assert _tokens(c) != _tokens(a)


def test_n_samples_are_distinct_and_accounted(engine):
    [res] = engine.generate([Request(messages=CHAT)], SamplingConfig(n=4, temperature=1.0, max_tokens=10, seed=1))
    assert len(res.completions) == 4
    assert len({tuple(c.token_ids) for c in res.completions}) > 1
    assert res.usage.generated_tokens == sum(len(c.token_ids) for c in res.completions)
    assert res.usage.prompt_tokens == len(res.prompt_ids) > 0
    assert all(c.finish_reason in ("stop", "length") for c in res.completions)


def test_stop_string_truncates_and_sets_finish_reason(engine):
    req = [Request(messages=CHAT)]
    [full] = engine.generate(req, SamplingConfig(temperature=0.0, max_tokens=24))
    text = full.completions[0].text
    assert full.completions[0].finish_reason == "length" and len(full.completions[0].token_ids) == 24
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = text.find(stop)
    [r] = engine.generate(req, SamplingConfig(temperature=0.0, max_tokens=24, stop=[stop]))
    assert r.completions[0].finish_reason == "stop"
    assert r.completions[0].text == text[:cut]
    [r2] = engine.generate(req, SamplingConfig(temperature=0.0, max_tokens=24, stop=[stop],
                                               include_stop_str_in_output=True))
    assert r2.completions[0].text == text[:cut + len(stop)]


def test_logprobs_match_transformers(engine, hf_engine):
    [r] = engine.generate([Request(messages=CHAT)], SamplingConfig(temperature=0.0, max_tokens=10, logprobs=0))
    c = r.completions[0]
    ref = hf_engine.continuation_logprobs([r.prompt_ids], [c.token_ids])[0]
    assert len(c.logprobs) == len(ref) == len(c.token_ids)
    assert max(abs(a - b) for a, b in zip(c.logprobs, ref)) < 1e-3
    got = engine.continuation_logprobs([r.prompt_ids], [c.token_ids])[0]
    assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-3


def test_forced_choice_probe(engine, hf_engine):
    [r] = engine.generate([Request(messages=CHAT)], SamplingConfig(max_tokens=1))
    a, b = engine.tokenizer.convert_tokens_to_ids(["5", "6"])
    [res] = engine.generate([Request(prompt_ids=r.prompt_ids)],
                            SamplingConfig(n=8, temperature=1.0, max_tokens=1, allowed_token_ids=[a, b], seed=3))
    assert {c.token_ids[0] for c in res.completions} <= {a, b}
    got = engine.next_token_logprobs([r.prompt_ids], [a, b])[0]
    ref = hf_engine.next_token_logprobs([r.prompt_ids], [a, b])[0]
    assert max(abs(x - y) for x, y in zip(got, ref)) < 1e-3


def test_lora_matches_merged_model(engine, lora_dirs, tiny_model_dir):
    from twinloop.infer.hf_engine import HFEngine

    adapter, merged = lora_dirs
    merged_ref = HFEngine(str(merged))
    base_req, lora_req = Request(messages=CHAT), Request(messages=CHAT, lora=str(adapter))
    out = engine.generate([base_req, lora_req], SamplingConfig(temperature=0.0, max_tokens=8, logprobs=0))
    base_c, lora_c = out[0].completions[0], out[1].completions[0]
    merged_lp = merged_ref.continuation_logprobs([out[1].prompt_ids], [lora_c.token_ids])[0]
    assert max(abs(a - b) for a, b in zip(lora_c.logprobs, merged_lp)) < 1e-3
    # the adapter matters, and the base request in the mixed batch did not get it
    base_ref = HFEngine(str(tiny_model_dir)).continuation_logprobs([out[0].prompt_ids], [base_c.token_ids])[0]
    assert max(abs(a - b) for a, b in zip(base_c.logprobs, base_ref)) < 1e-3
    lp_lora = engine.continuation_logprobs([out[0].prompt_ids], [base_c.token_ids], lora=str(adapter))[0]
    assert max(abs(a - b) for a, b in zip(lp_lora, base_ref)) > 1e-2


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_prefix_reuse_shows_as_cached_tokens(backend, request):
    engine = request.getfixturevalue(f"{backend}_engine")
    prefix = engine.tokenizer("12 + 30 = 42. " * 40).input_ids[:300]
    s = SamplingConfig(temperature=0.0, max_tokens=2)
    engine.generate([Request(prompt_ids=prefix + [7])], s)
    [r] = engine.generate([Request(prompt_ids=prefix + [8])], s)
    assert r.usage.cached_prompt_tokens >= 128  # CPU block size is 128: hits come in whole blocks
    assert r.usage.cached_prompt_tokens <= len(prefix)


def test_hf_engine_reports_no_cache(hf_engine):
    [r] = hf_engine.generate([Request(messages=CHAT)], SamplingConfig(max_tokens=3, temperature=0.0))
    assert r.usage.cached_prompt_tokens == 0


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_p=0.0), dict(n=0), dict(max_tokens=0),
                                 dict(logprobs=-2), dict(allowed_token_ids=[])])
def test_sampling_out_of_range_is_one_line_error(engine, bad):
    with pytest.raises(EngineError) as e:
        engine.generate([Request(text="hi")], SamplingConfig(**bad))
    assert "\n" not in str(e.value)
