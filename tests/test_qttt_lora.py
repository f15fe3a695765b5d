"""LoRA-q: a q_proj-only adapter trained by the qTTT loop loads in vLLM as a per-request LoRA and moves its
outputs as the merged transformers model does."""
import torch
from twinloop.infer.qttt import QTTTConfig
from twinloop.infer.qttt_lora import LoraQConfig, lora_q_ttt

from twinloop.contracts import Request, SamplingConfig

TOL = 1e-3  # vLLM (fp32, CPU kernels) against transformers: per-token logprob, as the engine contract test states


def test_lora_q_adapter_serves_in_vllm_like_the_merged_model(tiny_model_dir, vllm_engine, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    context = tok("What is 12 + 30? The answer is 42. What is 7 * 6? The answer is 42. " * 6)["input_ids"]
    ids = torch.tensor(context)
    cfg = LoraQConfig(rank=8, alpha=16, ttt=QTTTConfig(steps=6, span=32, lr=5e-2, seed=0))
    adapter, losses = lora_q_ttt(model, ids, tmp_path / "adapter", cfg)
    assert len(losses) == 6 and losses[-1] < losses[0]
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)  # LoRA unloaded
    saved = (adapter / "adapter_config.json").read_text()
    assert '"q_proj"' in saved and "v_proj" not in saved and "k_proj" not in saved

    prompt = context[:40]
    out = vllm_engine.generate([Request(prompt_ids=prompt), Request(prompt_ids=prompt, lora=str(adapter))],
                               SamplingConfig(temperature=0.0, max_tokens=6, logprobs=0))
    base_c, lora_c = out[0].completions[0], out[1].completions[0]

    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        full = torch.tensor(prompt + lora_c.token_ids)[None]
        logp = torch.log_softmax(merged(full).logits[0].float(), -1)
    ref = [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(lora_c.token_ids)]
    assert max(abs(a - b) for a, b in zip(lora_c.logprobs, ref)) < TOL
    # and the adapter matters: the base model scores the adapted continuation differently
    base_lp = vllm_engine.continuation_logprobs([prompt], [lora_c.token_ids])[0]
    assert max(abs(a - b) for a, b in zip(base_lp, lora_c.logprobs)) > 1e-2
    assert base_c.token_ids  # the base request ran in the same batch
