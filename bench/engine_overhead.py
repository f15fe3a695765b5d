"""Engine.generate (vLLM backend) against raw ``LLM.generate`` on identical requests, in one run.

    python bench/engine_overhead.py [--model DIR] [--reps 7]

Prints per-rep times and the median ratio (target <= 1.05). The two calls alternate so machine noise
hits both alike. Bench scripts may import vllm directly: the raw call is the baseline.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    from twinloop.infer.engine import Request, SamplingConfig
    from twinloop.infer.vllm_engine import VLLMEngine
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from twinloop.tiny import build_random_tiny

    model = args.model or str(build_random_tiny(tempfile.mkdtemp() + "/tiny"))
    eng = VLLMEngine(model, dtype="float32", max_model_len=1024, enable_prefix_caching=False)
    tok = eng.tokenizer
    msgs = [[{"role": "user", "content": f"What is {i} + {3 * i}?"}] for i in range(args.prompts)]
    reqs = [Request(messages=m) for m in msgs]
    cfg = SamplingConfig(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0)
    # the raw baseline gets the same token ids and the same per-request seeds
    ids = [tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True) for m in msgs]
    ids = [list(x["input_ids"]) if hasattr(x, "keys") else list(x) for x in ids]
    raw_prompts = [TokensPrompt(prompt_token_ids=x) for x in ids]
    raw_params = [SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=i * args.n)
                  for i in range(len(ids))]

    def ours():
        return sum(r.usage.generated_tokens for r in eng.generate(reqs, cfg))

    def raw():
        outs = eng.llm.generate(raw_prompts, raw_params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    ours(), raw()  # warm-up
    rows = []
    for rep in range(args.reps):
        t = time.perf_counter()
        n_raw = raw()
        t_raw = time.perf_counter() - t
        t = time.perf_counter()
        n_ours = ours()
        t_ours = time.perf_counter() - t
        assert n_raw == n_ours, (n_raw, n_ours)  # identical work
        rows.append((t_raw, t_ours, t_ours / t_raw))
        print(f"rep {rep}: raw {t_raw:.3f}s  engine {t_ours:.3f}s  ratio {t_ours / t_raw:.3f}  ({n_raw} tokens)")
    med = statistics.median(r[2] for r in rows)
    print("\n| prompts x n | tokens/rep | median raw s | median engine s | median ratio (target <= 1.05) |")
    print(f"| {args.prompts} x {args.n} | {n_raw} | {statistics.median(r[0] for r in rows):.3f} | "
          f"{statistics.median(r[1] for r in rows):.3f} | {med:.3f} |")
    eng.close()


if __name__ == "__main__":
    main()
