"""Finish reasons: a backend's "abort" stays "abort" (never "stop", which means EOS), from vLLM offline
outputs and from an OpenAI-compatible server, and the search treats an aborted step as cut short."""
from types import SimpleNamespace

from fake_openai_server import FakeServer
from scripted_engine import CharTokenizer
from twinloop.infer.engine import Completion, Request, SamplingConfig, finish_reason
from twinloop.infer.openai_engine import OpenAIEngine
from twinloop.infer.search._stepper import EOS, TRUNCATED, Stepper
from twinloop.infer.vllm_engine import VLLMEngine


def test_finish_reason_mapping():
    assert [finish_reason(r) for r in ("stop", "length", "abort", None, "error")] == [
        "stop", "length", "abort", "abort", "abort"]


def test_vllm_output_abort_is_kept():
    out = SimpleNamespace(prompt_token_ids=[5, 6], num_cached_tokens=0, outputs=[
        SimpleNamespace(token_ids=[7], text="a", finish_reason="abort", logprobs=None),
        SimpleNamespace(token_ids=[7, 3], text="a", finish_reason="stop", logprobs=None)])
    res = VLLMEngine._to_result(out, SamplingConfig(n=2))
    assert [c.finish_reason for c in res.completions] == ["abort", "stop"]


def test_openai_server_abort_is_kept():
    def reply(prompt, body):
        return [{"index": 0, "text": "x", "token_ids": [120], "finish_reason": "abort"},
                {"index": 1, "text": "x", "token_ids": [120, 3], "finish_reason": "stop"}]

    server = FakeServer(reply)
    try:
        eng = OpenAIEngine(server.url, CharTokenizer(), retries=0)
        [res] = eng.generate([Request(prompt_ids=[1, 2])], SamplingConfig(n=2, max_tokens=4))
        assert [c.finish_reason for c in res.completions] == ["abort", "stop"]
    finally:
        server.close()


def test_an_aborted_step_is_not_eos():
    s = Stepper()
    assert s.outcome(Completion([1], "half a st", "abort")) == TRUNCATED
    assert s.outcome(Completion([1, 3], "done", "stop")) == EOS
    assert Stepper(tokens_per_step=4).outcome(Completion([1], "a", "abort")) == TRUNCATED
