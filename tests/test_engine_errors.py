"""Bad input gets a one-line, actionable EngineError; vLLM stays out of `import twinloop`; weight sync works."""
import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.infer.engine import EngineError, Request, SamplingConfig

REPO = Path(__file__).resolve().parents[1]


def _one_line(exc):
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def test_missing_model_folder(tmp_path):
    from twinloop.infer.vllm_engine import VLLMEngine

    with pytest.raises(EngineError) as e:
        VLLMEngine(str(tmp_path / "nope"))
    assert "does not exist" in _one_line(e)


def test_folder_without_config(tmp_path):
    from twinloop.infer.hf_engine import HFEngine

    with pytest.raises(EngineError) as e:
        HFEngine(str(tmp_path))
    assert "config.json" in _one_line(e)


@pytest.mark.parametrize("make", ["vllm", "hf", "server"])
def test_wrong_dtype(make, tiny_model_dir):
    from twinloop.infer.hf_engine import HFEngine
    from twinloop.infer.openai_engine import OpenAIEngine
    from twinloop.infer.vllm_engine import VLLMEngine

    ctor = {"vllm": VLLMEngine, "hf": HFEngine, "server": OpenAIEngine.start}[make]
    with pytest.raises(EngineError) as e:
        ctor(str(tiny_model_dir), dtype="fp33")
    assert "dtype" in _one_line(e)


def test_unreachable_server_fails_fast(tiny_model_dir):
    import time

    from twinloop.infer.openai_engine import OpenAIEngine, free_port

    t = time.monotonic()
    with pytest.raises(EngineError) as e:
        OpenAIEngine(f"http://127.0.0.1:{free_port()}", str(tiny_model_dir))
    assert "no vLLM server answers" in _one_line(e)
    assert time.monotonic() - t < 15


def test_server_request_retries_are_bounded(openai_engine, tiny_model_dir):
    """A client pointed at a server that went away retries a bounded number of times, then says so."""
    import time

    from twinloop.infer.openai_engine import OpenAIEngine, free_port

    client = OpenAIEngine(openai_engine.base_url, str(tiny_model_dir), retries=2, backoff=0.05)
    client.base_url = f"http://127.0.0.1:{free_port()}"  # simulate the server vanishing mid-run
    t = time.monotonic()
    with pytest.raises(EngineError) as e:
        client.generate([Request(text="hi")], SamplingConfig(max_tokens=2))
    assert "after 3 tries" in _one_line(e)
    assert time.monotonic() - t < 10


def test_missing_lora_folder(vllm_engine, tmp_path):
    with pytest.raises(EngineError):
        vllm_engine.generate([Request(text="hi", lora=str(tmp_path / "missing"))], SamplingConfig(max_tokens=2))


def test_import_twinloop_does_not_import_vllm():
    code = ("import sys, twinloop, twinloop.rewards, twinloop.infer, twinloop.infer.engine, twinloop.infer.hf_engine, "
            "twinloop.infer.openai_engine, twinloop.cli; assert 'vllm' not in sys.modules, 'vllm imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_only_one_module_imports_vllm():
    import re

    pattern = re.compile(r"^\s*(import vllm|from vllm[ .])", re.M)
    offenders = []
    for folder in ("twinloop", "rewards", "infer", "train", "checkpoints"):
        for path in (REPO / folder).rglob("*.py"):
            if pattern.search(path.read_text()) and path.relative_to(REPO).as_posix() != "infer/vllm_engine.py":
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_import_graph_is_acyclic():
    """rewards <- infer <- train: rewards never imports infer backends or train; infer never imports train."""
    import re

    rules = {"rewards": [r"twinloop\.train", r"twinloop\.infer\.(vllm_engine|openai_engine|hf_engine|search)"],
             "infer": [r"twinloop\.train"]}
    bad = []
    for folder, forbidden in rules.items():
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for f in forbidden:
                if re.search(rf"^\s*(from|import) {f}", text, re.M):
                    bad.append(f"{path.relative_to(REPO)} imports {f}")
    assert bad == []


def test_weight_sync_reaches_vllm(tiny_model_dir, vllm_engine):
    """Perturb every weight in transformers, push to vLLM, and compare logprobs (fp32, within 1e-3)."""
    import torch

    from twinloop.infer.hf_engine import HFEngine

    ref = HFEngine(str(tiny_model_dir))
    ids = ref.tokenizer("What is 12 + 30? The answer is 42.").input_ids
    prefix, cont = ids[:4], ids[4:]

    def maxdiff():
        a = ref.continuation_logprobs([prefix], [cont])[0]
        b = vllm_engine.continuation_logprobs([prefix], [cont])[0]
        return max(abs(x - y) for x, y in zip(a, b))

    assert maxdiff() < 1e-3
    original = {n: p.detach().clone() for n, p in ref.model.named_parameters()}
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ref.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    try:
        assert maxdiff() > 1e-2  # not synced yet: the test can fail
        vllm_engine.load_weights(list(ref.model.named_parameters()))
        assert maxdiff() < 1e-3
    finally:  # the session engine is shared: put the original weights back
        vllm_engine.load_weights(list(original.items()))
    assert vllm_engine.continuation_logprobs([prefix], [cont])[0] == pytest.approx(
        HFEngine(str(tiny_model_dir)).continuation_logprobs([prefix], [cont])[0], abs=1e-3)
