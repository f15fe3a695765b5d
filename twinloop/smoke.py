"""`twinloop smoke`: build a tiny random model, generate through the engine, print the text and tokens/s."""
from __future__ import annotations

import argparse
import tempfile
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    p.add_argument("--model", default=None, help="model folder (default: build a tiny random one)")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)


def run(args: argparse.Namespace) -> int:
    from twinloop.infer.engine import Request, SamplingConfig

    model = args.model
    if model is None:
        from twinloop.tiny import build_random_tiny

        model = str(build_random_tiny(tempfile.mkdtemp(prefix="twinloop-smoke-") + "/tiny"))
        print(f"built a tiny random Qwen2 model in {model}")
    if args.backend == "vllm":
        from twinloop.infer.vllm_engine import VLLMEngine

        engine = VLLMEngine(model, dtype="float32", max_model_len=1024)
    else:
        from twinloop.infer.hf_engine import HFEngine

        engine = HFEngine(model)
    reqs = [Request(messages=[{"role": "user", "content": f"What is {i} + {2 * i}?"}]) for i in range(args.prompts)]
    s = SamplingConfig(n=1, temperature=1.0, max_tokens=args.max_tokens, seed=0)
    engine.generate(reqs[:1], SamplingConfig(max_tokens=2))  # warm-up
    t = time.perf_counter()
    results = engine.generate(reqs, s)
    dt = time.perf_counter() - t
    tokens = sum(r.usage.generated_tokens for r in results)
    for r in results[:3]:
        print(repr(r.completions[0].text[:80]), r.completions[0].finish_reason)
    print(f"{args.backend}: {len(reqs)} prompts, {tokens} generated tokens in {dt:.2f} s = {tokens / dt:.0f} tok/s")
    engine.close()
    return 0
