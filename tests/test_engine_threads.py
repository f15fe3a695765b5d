"""An engine built in one thread serves calls from another (HTTP handler threads, thread pools)."""
import threading

import torch

from twinloop.infer.engine import Request, SamplingConfig


def test_engine_called_from_another_thread_with_other_thread_count(vllm_engine):
    s = SamplingConfig(temperature=0.0, max_tokens=4)
    want = vllm_engine.generate([Request(text="What is 2 + 2?")], s)[0].completions[0].token_ids
    got, errors = [], []

    def worker():
        try:
            torch.set_num_threads(1 if vllm_engine._threads != 1 else 2)  # a thread with another OpenMP count
            got.append(vllm_engine.generate([Request(text="What is 2 + 2?")], s)[0].completions[0].token_ids)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=120)
    assert not errors and got == [want]
