"""Closing one in-process vLLM engine leaves the others working (they share vLLM's parallel state)."""
from twinloop.infer.engine import Request, SamplingConfig


def test_closing_a_second_engine_keeps_the_first_alive(vllm_engine, tiny_model_dir):
    from twinloop.infer.vllm_engine import VLLMEngine

    s = SamplingConfig(temperature=0.0, max_tokens=4)
    before = vllm_engine.generate([Request(text="What is 2 + 2?")], s)[0].completions[0].token_ids
    other = VLLMEngine(str(tiny_model_dir), dtype="float32", max_model_len=256)
    assert other.generate([Request(text="What is 2 + 2?")], s)[0].completions[0].token_ids == before
    other.close()
    after = vllm_engine.generate([Request(text="What is 2 + 2?")], s)[0].completions[0].token_ids
    assert after == before
