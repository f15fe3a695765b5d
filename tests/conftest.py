"""Session-wide test settings: vLLM in-process with a small KV cache, few threads, tiny models."""
import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POLICY_DIR = REPO / "checkpoints" / "tiny-arith-policy"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny Qwen2 (tied embeddings, head_dim 32) with a BPE tokenizer, built once per session."""
    from twinloop.tiny import build_random_tiny

    return build_random_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def lora_dirs(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(adapter, merged model) for the tiny model: a peft LoRA with random non-zero weights, and its merge."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():  # make the adapter matter: scale B up from peft's small random init
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)
    peft_model.save_pretrained(root / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(root / "merged", safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "merged")
    return root / "adapter", root / "merged"


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    from twinloop.infer.vllm_engine import VLLMEngine

    eng = VLLMEngine(str(tiny_model_dir), dtype="float32", max_model_len=1024, seed=0, enable_lora=True,
                     max_lora_rank=8, max_loras=1)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_model_dir):
    from twinloop.infer.hf_engine import HFEngine

    return HFEngine(str(tiny_model_dir), dtype="float32")


@pytest.fixture(scope="session")
def openai_engine(tiny_model_dir):
    """A vLLM OpenAI-compatible server on 127.0.0.1, started once per session and stopped by PID."""
    from twinloop.infer.openai_engine import OpenAIEngine

    eng = OpenAIEngine.start(str(tiny_model_dir), dtype="float32", max_model_len=1024, enable_lora=True,
                             max_lora_rank=8)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def policy_engine():
    """The shipped tiny arithmetic policy through vLLM (fp32)."""
    from twinloop.infer.vllm_engine import VLLMEngine

    eng = VLLMEngine(str(POLICY_DIR), dtype="float32", max_model_len=1024, seed=0)
    yield eng
    eng.close()
