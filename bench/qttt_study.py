"""qTTT against no TTT, LoRA-q, majority voting and thinking tokens at matched compute, by context length.

    python bench/qttt_study.py --model runs/qttt18/kv-tiny --lengths 60,120,240,480 --n 40 \\
        --out runs/qttt18/study.jsonl          # one JSON line per item
    python bench/qttt_study.py --summarize runs/qttt18/study.jsonl --plot docs/figures/qttt-kv-tiny.png
    python bench/qttt_study.py --model SMOLLM2 --task ruler --task-args '{"name": "niah_single_1"}' \\
        --lengths 1024,2048 --no-lora --no-majority --thinking --out runs/qttt18/ruler.jsonl

Per item (same context, same frozen cache): greedy with no TTT; exact qTTT (N steps of span k, W_Q only);
LoRA-q (the same loop on a q_proj LoRA, answered by vLLM re-prefilling under the adapter: the approximation);
majority of B samples at temperature T with B·(answer tokens) ≈ 2·N·k, the TTT compute in tokens; thinking
tokens (up to 2·N·k generated tokens before the answer prefix, ``thinking_answer``). Rows come from the task
(kv_retrieval or ruler) and are scored by its own reward (exact match); the gold answer's mean NLL per token is
recorded too (it moves where exact match does not).
Wall time per item and method, and the frozen cache's size, are recorded. Peak memory of one item, plain against
qTTT, in fresh processes: ``--memory plain`` / ``--memory qttt``. Not a test.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import re
import statistics
import sys
import time
from pathlib import Path

LENGTH_ARG = {"kv_retrieval": "context_words", "ruler": "max_seq_length"}  # what --lengths sets, per task


def first_number(text: str) -> str | None:
    m = re.search(r"\d+", text)
    return m.group(0) if m else None


def thinking_answer(fwd, tok, cache, parts, row, budget: int, max_new: int) -> tuple[str, int]:
    """The thinking-tokens baseline at a budget of ``budget`` tokens: the model writes up to ``budget`` tokens
    after the question (the assistant turn opened, NOT pre-filled), then the answer prefix is appended and the
    answer decoded greedily; all against the same frozen cache. Returns (answer text, thinking tokens used)."""
    import torch
    from twinloop.infer.qttt_answer import prompt_parts

    prefix = row.get("answer_prefix") or ""
    head = prompt_parts(tok, {**row, "answer_prefix": ""}).tail  # the assistant turn opened, nothing pre-filled
    (thought,), used = fwd.generate(cache, torch.tensor(head), budget, [tok.eos_token_id])
    bridge = tok(f"\n{prefix}" if prefix else "\n", add_special_tokens=False)["input_ids"]
    (toks,), _ = fwd.generate(cache, torch.tensor(head + thought + bridge), max_new, [tok.eos_token_id])
    return tok.decode(toks, skip_special_tokens=True), used


def run_item(ctx, row, args, tmp: Path) -> dict:
    import torch
    from twinloop.infer.qttt import QTTTConfig, query_ttt, restored_queries, ttt_tokens
    from twinloop.infer.qttt_answer import prompt_parts
    from twinloop.infer.qttt_lora import LoraQConfig, lora_q_ttt

    fwd, tok, model, engine, reward = ctx["fwd"], ctx["tok"], ctx["model"], ctx["engine"], ctx["reward"]
    parts = prompt_parts(tok, row)
    ids, tail, ans = torch.tensor(parts.context), torch.tensor(parts.tail), torch.tensor(parts.answer)
    stop = [tok.eos_token_id]
    columns = {k: [v] for k, v in row.items() if k not in ("prompt", "_length")}
    out = {"id": row["id"], "length": row["_length"], "tokens": len(parts.context) + len(parts.tail),
           "gold": row["answer"]}

    def score(text: str) -> int:
        return int(reward([row["prompt"]], [text], **columns)[0] == 1.0)

    def answer(name):
        (toks,), _ = fwd.generate(cache, tail, args.max_new, stop)
        out[f"{name}_em"] = score(tok.decode(toks, skip_special_tokens=True))
        out[f"{name}_nll"] = round(fwd.answer_nll(cache, tail, ans), 4)

    t0 = time.perf_counter()
    cache, _ = fwd.prefill(ids)
    out["prefill_s"] = round(time.perf_counter() - t0, 4)
    out["cache_bytes"] = cache.nbytes()
    answer("plain")
    out["plain_s"] = round(time.perf_counter() - t0, 4)

    for steps in args.steps:
        name = f"qttt{steps}"
        budget = ttt_tokens(steps, min(args.span, len(parts.context) - 1))
        if args.qttt:
            t1 = time.perf_counter()
            with restored_queries(fwd):
                losses = query_ttt(fwd, ids, cache,
                                   QTTTConfig(steps=steps, span=args.span, lr=args.lr, seed=args.seed))
                answer(name)
            out[f"{name}_s"] = round(out["prefill_s"] + time.perf_counter() - t1, 4)
            out[f"{name}_loss"] = [round(losses[0], 4), round(losses[-1], 4)] if losses else []

        if args.majority:  # B samples of max_new tokens = the TTT budget in tokens
            b = max(1, budget // args.max_new)
            t1 = time.perf_counter()
            if engine is not None and args.majority_engine == "vllm":  # same model; prefix-cached prompt
                from twinloop.contracts import Request, SamplingConfig

                res = engine.generate([Request(prompt_ids=parts.context + parts.tail)],
                                      SamplingConfig(n=b, temperature=args.temperature, max_tokens=args.max_new,
                                                     seed=args.seed))
                texts = [c.text for c in res[0].completions]
                n_tok = sum(len(c.token_ids) for c in res[0].completions)
            else:
                gen = torch.Generator().manual_seed(args.seed)
                samples, n_tok = fwd.generate(cache, tail, args.max_new, stop, n=b, temperature=args.temperature,
                                              generator=gen)
                texts = [tok.decode(x) for x in samples]
            votes = [v for v in (first_number(t) for t in texts) if v is not None]
            top = collections.Counter(votes).most_common(1)
            out[f"maj{steps}_em"] = score(top[0][0]) if top else 0
            out[f"maj{steps}_oracle"] = int(any(score(v) for v in set(votes)))
            out[f"maj{steps}_samples"], out[f"maj{steps}_tokens"] = b, n_tok
            out[f"maj{steps}_s"] = round(out["prefill_s"] + time.perf_counter() - t1, 4)

        if args.thinking:
            t1 = time.perf_counter()
            text, used = thinking_answer(fwd, tok, cache, parts, row, budget, args.max_new)
            out[f"think{steps}_em"], out[f"think{steps}_tokens"] = score(text), used
            out[f"think{steps}_s"] = round(out["prefill_s"] + time.perf_counter() - t1, 4)

        if engine is not None:
            from twinloop.contracts import Request, SamplingConfig

            t1 = time.perf_counter()
            lcfg = LoraQConfig(rank=args.lora_rank, alpha=2 * args.lora_rank,
                               ttt=QTTTConfig(steps=steps, span=args.span, lr=args.lora_lr, seed=args.seed))
            adapter, _ = lora_q_ttt(model, ids, tmp / f"{row['id']}-{steps}", lcfg, cache=cache)
            prompt = parts.context + parts.tail
            res = engine.generate([Request(prompt_ids=prompt, lora=str(adapter))],
                                  SamplingConfig(temperature=0.0, max_tokens=args.max_new))
            out[f"loraq{steps}_em"] = score(res[0].completions[0].text)
            lps = engine.continuation_logprobs([prompt], [parts.answer], lora=str(adapter))[0]
            out[f"loraq{steps}_nll"] = round(-sum(lps) / len(lps), 4)
            out[f"loraq{steps}_s"] = round(out["prefill_s"] + time.perf_counter() - t1, 4)
    return out


def load_rows(args) -> list[list[dict]]:
    """One row set per length, from the task's own generator (--task-args plus the length setting)."""
    from twinloop.build import build_task

    module = build_task(args.task).module
    extra = json.loads(args.task_args)
    if args.task == "kv_retrieval":
        extra.setdefault("n_keys", args.keys)
    if args.task == "ruler":
        extra.setdefault("tokenizer", args.model)
    return [module.load(split=args.split, n=args.n, seed=args.seed, **{**extra, LENGTH_ARG[args.task]: length})
            for length in args.lengths]


def run(args) -> int:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from twinloop.infer.qttt import QueryForward

    from twinloop.build import build_task

    torch.set_num_threads(1)  # 1 thread beat 2 on the shared cores (STACK.md)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    engine = None
    if args.lora:
        from twinloop.infer.vllm_engine import VLLMEngine

        engine = VLLMEngine(args.model, dtype="float32", max_model_len=args.max_model_len, seed=args.seed,
                            enable_lora=True, max_lora_rank=max(8, args.lora_rank), max_loras=1)
    ctx = {"fwd": QueryForward(model), "tok": tok, "model": model, "engine": engine,
           "reward": build_task(args.task).reward()}
    sets = load_rows(args)
    with open(args.out, "a") as f, tempfile.TemporaryDirectory() as tmp:
        for length, rows in zip(args.lengths, sets):
            for row in rows:
                row["_length"] = length
        # interleaved: a cut-short run covers all lengths; --first-item resumes one
        for row in (rows[i] for i in range(args.first_item, args.n) for rows in sets):
            r = run_item(ctx, row, args, Path(tmp))
            r.update(task=args.task, keys=args.keys, span=args.span, lr=args.lr, lora_lr=args.lora_lr)
            f.write(json.dumps(r) + "\n")
            f.flush()
            print(json.dumps({k: v for k, v in r.items() if not k.endswith("_loss")}), flush=True)
    if engine is not None:
        engine.close()
    return 0


# ------------------------------------------------------------------------------ memory
def memory_probe(args) -> int:
    """One item in this process: peak RSS (ru_maxrss) after loading, after the prefill, and after either plain
    decoding or N_TTT steps + decoding. Run once per mode in fresh processes (``--memory plain`` / ``qttt``)."""
    import resource

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from twinloop.infer.qttt import QTTTConfig, QueryForward, query_ttt, restored_queries
    from twinloop.infer.qttt_answer import prompt_parts

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    args.lengths, args.n = args.lengths[-1:], 1
    (row,), = load_rows(args)
    parts = prompt_parts(tok, row)
    ids, tail = torch.tensor(parts.context), torch.tensor(parts.tail)
    fwd = QueryForward(model)
    out = {"mode": args.memory, "tokens": len(parts.context) + len(parts.tail), "loaded_mib": round(peak_mib(), 1)}
    cache, _ = fwd.prefill(ids)
    out.update(cache_mib=round(cache.nbytes() / 2**20, 2), prefill_peak_mib=round(peak_mib(), 1))
    if args.memory == "qttt":
        with restored_queries(fwd):
            query_ttt(fwd, ids, cache, QTTTConfig(steps=max(args.steps), span=args.span, lr=args.lr))
            fwd.generate(cache, tail, args.max_new, [tok.eos_token_id])
    else:
        fwd.generate(cache, tail, args.max_new, [tok.eos_token_id])
    out["final_peak_mib"] = round(peak_mib(), 1)
    print(json.dumps(out))
    return 0


# ------------------------------------------------------------------------------ summary
def mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean and its standard error (0 for a single value)."""
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0)


def method_records(paths: list[str]) -> dict[tuple, dict[str, dict]]:
    """{(length, item id): {method label: {"em", "nll", "s"}}} over one or more study files. TTT methods are
    labelled with their lr ("qttt8 lr=0.001"), so runs at several lrs sit side by side; a method already seen for
    an item (plain, majority: the same in every run) is kept from the first file."""
    out: dict[tuple, dict[str, dict]] = collections.defaultdict(dict)
    for path in paths:
        for line in open(path):
            if not line.strip():
                continue
            r = json.loads(line)
            key = (r.get("length", r.get("words")), r["id"], r["tokens"])
            for m in (k[:-3] for k in r if k.endswith("_em")):
                lr = r.get("lora_lr") if m.startswith("loraq") else r.get("lr")
                label = f"{m} lr={lr:g}" if m.startswith(("qttt", "loraq")) else m
                out[key].setdefault(label, {"em": r[f"{m}_em"], "nll": r.get(f"{m}_nll"), "s": r.get(f"{m}_s"),
                                               "tokens": r.get(f"{m}_tokens")})
    return out


def _order(label: str) -> tuple:
    m = label.split()[0]
    return ({"plain": 0, "qttt": 1, "loraq": 2, "maj": 3, "think": 4}.get(m.rstrip("0123456789"), 5),
            int(re.sub(r"\D", "", m) or 0), label)


def summarize(paths: list[str], plot: str | None) -> int:
    items = method_records(paths)
    if not items:
        raise SystemExit(f"{paths}: no items to summarize")
    lengths = sorted({k[0] for k in items})
    methods = sorted({m for v in items.values() for m in v}, key=_order)
    table = {}
    print("exact match, mean ± s.e. (n items); paired change against plain in brackets")
    for length in lengths:
        ks = [k for k in items if k[0] == length]
        tokens = statistics.fmean(k[2] for k in ks)
        for m in methods:
            em = [items[k][m]["em"] for k in ks if m in items[k]]
            nll = [items[k][m]["nll"] for k in ks if m in items[k] and items[k][m]["nll"] is not None]
            d_nll = [items[k][m]["nll"] - items[k]["plain"]["nll"] for k in ks
                     if m in items[k] and items[k][m]["nll"] is not None and "plain" in items[k]]
            d_em = [items[k][m]["em"] - items[k]["plain"]["em"] for k in ks if m in items[k] and "plain" in items[k]]
            if not em:
                table[(length, m)] = (None, None)
                continue
            table[(length, m)] = (mean_se(em), mean_se(nll) if nll else None)
            e, se = mean_se(em)
            text = f"{length:>6} {tokens:>6.0f} tok  {m:<18} n={len(em):<4} EM {e:.3f}±{se:.3f}"
            if m != "plain":
                text += f" [{mean_se(d_em)[0]:+.3f}±{mean_se(d_em)[1]:.3f}]"
            if nll:
                text += f"  gold NLL {mean_se(nll)[0]:.3f}±{mean_se(nll)[1]:.3f}"
                if m != "plain" and d_nll:
                    text += f" [{mean_se(d_nll)[0]:+.3f}±{mean_se(d_nll)[1]:.3f}]"
            print(text)
    times = {m: statistics.median(v[m]["s"] for v in items.values() if m in v and v[m]["s"] is not None)
             for m in methods}
    print("median wall seconds per item (prefill included; the first LoRA-q call also warms vLLM up):",
          json.dumps({k: round(v, 3) for k, v in times.items()}))
    spent = {m: statistics.fmean(v[m]["tokens"] for v in items.values() if m in v and v[m]["tokens"] is not None)
             for m in methods if any(v.get(m, {}).get("tokens") is not None for v in items.values())}
    print("mean generated tokens per item (majority: all samples; thinking: the thought):",
          json.dumps({k: round(v, 1) for k, v in spent.items()}))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        xs = [statistics.fmean(k[2] for k in items if k[0] == length) for length in lengths]
        for m in methods:
            for ax, i in ((axes[0], 0), (axes[1], 1)):
                cells = [table[(length, m)][i] for length in lengths]
                if any(c is None for c in cells):
                    continue
                ax.errorbar(xs, [c[0] for c in cells], yerr=[c[1] for c in cells], marker="o", capsize=3, label=m)
        axes[0].set(xscale="log", xlabel="prompt tokens", ylabel="exact match", title="accuracy (±1 s.e.)")
        axes[1].set(xscale="log", xlabel="prompt tokens", ylabel="gold answer NLL / token", title="gold NLL (±1 s.e.)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=110)
        print("wrote", plot)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/qttt/kv-tiny")
    ap.add_argument("--task", default="kv_retrieval", choices=sorted(LENGTH_ARG))
    ap.add_argument("--task-args", default="{}", help="JSON settings for the task's load() (e.g. RULER's name)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--lengths", default="100,200,400,800",
                    help="context lengths: words (kv_retrieval) or max_seq_length tokens (ruler)")
    ap.add_argument("--keys", type=int, default=16, help="keys per context (one asked, the rest distractors)")
    ap.add_argument("--n", type=int, default=40, help="items per length")
    ap.add_argument("--steps", default="2,8", help="N_TTT values; each is matched by a majority budget")
    ap.add_argument("--span", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lora-lr", type=float, help="LoRA-q's lr (default: --lr, like for like)")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new", type=int, default=6, help="answer tokens (kv: ' NNNN.' and the stop token)")
    ap.add_argument("--majority", action=argparse.BooleanOptionalAction, default=True,
                    help="majority of (2·N·k)/max_new samples (answers compared by their first number)")
    ap.add_argument("--qttt", action=argparse.BooleanOptionalAction, default=True,
                    help="exact qTTT (off: add other methods to items a previous run measured; --summarize joins)")
    ap.add_argument("--majority-engine", choices=["hf", "vllm"], default="hf",
                    help="who samples the majority votes: transformers against the frozen cache, or the vLLM "
                         "engine (needs --lora; the same model; it does not copy the cache per sample)")
    ap.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=False,
                    help="thinking tokens: up to 2·N·k generated tokens before the answer prefix")
    ap.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True, help="run LoRA-q through vLLM")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--first-item", type=int, default=0, help="start at this item index (resume a cut run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/qttt/study.jsonl")
    ap.add_argument("--summarize", help="summarize these JSONL files (comma-separated) instead of running")
    ap.add_argument("--plot", help="with --summarize: write a PNG here")
    ap.add_argument("--memory", choices=["plain", "qttt"], help="peak-RSS probe of one item at the last length")
    args = ap.parse_args(argv)
    if args.summarize:
        return summarize(args.summarize.split(","), args.plot)
    args.lengths = [int(x) for x in args.lengths.split(",")]
    args.steps = [int(x) for x in args.steps.split(",")]
    args.lora_lr = args.lr if args.lora_lr is None else args.lora_lr
    if args.majority_engine == "vllm" and not args.lora:
        raise SystemExit("--majority-engine vllm samples through the LoRA-q engine: drop --no-lora or use hf")
    if args.memory:
        return memory_probe(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
