"""Search overhead: each procedure's wall time divided by the time raw ``LLM.generate`` takes to produce
the same number of tokens in one batch, measured side by side in one run.

    python bench/search_overhead.py [--model DIR] [--problems 32] [--n 8] [--max-tokens 128]

Goals (issue 5): best-of-N and majority <= 1.10; beam, PF, ePF, A* <= 1.5 with prefix caching on.
The model defaults to the shipped tiny arithmetic policy, else a random tiny model built on the fly
(then steps are fixed 16-token chunks, since a random model never writes the step delimiter). The
PRM is the arithmetic task's exact process reward (CPU, cheap). The raw baseline runs the same prompts
with n = N, the same temperature and max_tokens, in one batch, and its time is scaled to the
procedure's token count (a fixed-length ``ignore_eos`` batch would instead credit the baseline with
perfectly even sequence lengths, which no sampler gets). Both
sides are repeated (``--repeats``) alternately and the fastest run of each is compared, because the CPU
machines are shared. Note: the engine sets 32-token KV blocks on CPU (vLLM's CPU default is 128,
where short arithmetic prompts and step prefixes never hit the prefix cache).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "checkpoints" / "tiny-arith-policy"
GOALS = {"best_of_n": 1.10, "majority": 1.10, "beam_search": 1.5, "particle_filter": 1.5, "epf": 1.5, "astar": 1.5,
         "dvts": 1.5}


def raw_generate_seconds(engine, prompt_ids: list[list[int]], n: int, max_tokens: int) -> tuple[float, int]:
    """Wall seconds and generated tokens of one raw ``LLM.generate`` batch: the same prompts, n samples each,
    the same temperature and max_tokens, ending at EOS as the model likes (same length distribution)."""
    llm = engine.llm
    params_cls = type(llm.get_default_sampling_params())  # SamplingParams without importing vllm here
    params = params_cls(n=n, temperature=0.7, max_tokens=max_tokens)
    prompts = [{"prompt_token_ids": p} for p in prompt_ids]
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    return wall, sum(len(c.token_ids) for o in outs for c in o.outputs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="policy folder (default: the shipped tiny policy, else a random tiny model)")
    ap.add_argument("--tokenizer", help="tokenizer folder, when it is not the model's own")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--methods", default="best_of_n,majority,beam_search,dvts,particle_filter,epf,astar",
                    help="comma list; METHOD:FIELD=VALUE;... overrides that method's config fields")
    ap.add_argument("--block-size", type=int, default=None,
                    help="KV-cache block size (the engine uses 32 on CPU; vLLM's CPU default of 128 means short "
                         "prompts never hit the prefix cache)")
    ap.add_argument("--repeats", type=int, default=3, help="best (minimum) wall time of this many runs, both sides")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from twinloop.infer.evaluate import build_config, load_procedure, parse_sets, to_problems
    from twinloop.infer.search._common import Budget
    from twinloop.infer.search._stepper import Stepper

    from twinloop.build import build_engine, build_reward
    from twinloop.tasks import arith

    model, stepper = args.model, Stepper()
    if model is None and POLICY.is_dir():
        model = str(POLICY)
    if model is None:
        from twinloop.tiny import build_random_tiny

        model = str(build_random_tiny(Path(tempfile.mkdtemp()) / "tiny", seed=0))
        stepper = Stepper(tokens_per_step=16)
        print(f"no tiny policy shipped yet: random tiny model, {stepper.tokens_per_step}-token steps")
    extra = {"block_size": args.block_size} if args.block_size else {}
    engine = build_engine(f"vllm:{model}", dtype="float32", max_model_len=1024, seed=0, enable_prefix_caching=True,
                          tokenizer=args.tokenizer, **extra)
    problems = to_problems(arith.load("test", n=args.problems))
    prm = build_reward("arith_process(aggregation='last')")
    prompt_ids = [engine.generate([p.request()], _one_token())[0].prompt_ids for p in problems]
    raw_generate_seconds(engine, prompt_ids, args.n, args.max_tokens)  # warm-up: first big batch pays set-up costs

    print(f"model {model}; {args.problems} problems, N = {args.n}, max {args.max_tokens} tokens per sample")
    head = f"{'method':<24} {'gen tokens':>10} {'cached':>8} {'wall s':>8} {'raw s':>8} {'ratio':>6} {'goal':>6}"
    print(head + "\n" + "-" * len(head))
    for spec in [m.strip() for m in args.methods.split(",") if m.strip()]:
        name, _, overrides = spec.partition(":")  # e.g. astar:pops_per_round=8 (config fields, ";"-separated)
        module = load_procedure(name)
        cfg = build_config(module, 0.7, args.max_tokens, None, parse_sets(filter(None, overrides.split(";"))))
        if hasattr(cfg, "stepper"):
            cfg.stepper = stepper
        walls, raws = [], []
        for _ in range(max(1, args.repeats)):  # alternate both sides: a shared, noisy machine hits both alike
            start = time.perf_counter()
            results = module.run(problems, engine, prm, Budget(n=args.n), cfg)
            walls.append(time.perf_counter() - start)
            gen = sum(r.usage.generated_tokens for r in results)
            cached = sum(r.usage.cached_prompt_tokens for r in results)
            raw, raw_tokens = raw_generate_seconds(engine, prompt_ids, args.n, args.max_tokens)
            raws.append(raw * gen / max(1, raw_tokens))  # scaled to exactly the procedure's token count
        wall, raw = min(walls), min(raws)
        ratio = wall / raw
        goal = GOALS.get(name)
        flag = "" if goal is None else (" ok" if ratio <= goal else " over")
        print(f"{spec:<24} {gen:>10} {cached:>8} {wall:>8.2f} {raw:>8.2f} {ratio:>6.2f} {goal or '-':>6}{flag}")
    engine.close()
    return 0


def _one_token():
    from twinloop.infer.engine import SamplingConfig

    return SamplingConfig(n=1, temperature=0.0, max_tokens=1)


if __name__ == "__main__":
    sys.exit(main())
