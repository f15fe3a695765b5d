"""Held-out measurement of an SPCT GRM: parseable share, Eq. 10 rate and selection accuracy (voting@k, and
meta-RM-guided voting when a meta RM is given) on the multi-response test items, against random and majority.

    python -m twinloop.train.spct_eval --output_dir runs/spct-tiny-arith --stage sft --ks 1,4 --n_items 40

``--stage none`` judges with the starting model: the separate judge before training (the policy with phrase
tokens), or the bare policy for a LoRA judge. Selection accuracy counts an item right when
the voted response is its unique best; an item with no valid judgment counts wrong. Writes
``OUTPUT_DIR/eval/STAGE.json`` (``STAGE-meta.json`` with ``--meta``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from twinloop.rewards.generative import meta_guided_vote, vote
from twinloop.train.spct_data import Item, majority_pick_accuracy


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


def _acc(hits: Sequence[float]) -> dict[str, float | None]:
    if not hits:
        return {"mean": None, "se": None}
    p = sum(hits) / len(hits)
    return {"mean": p, "se": math.sqrt(p * (1 - p) / len(hits))}


def selection_accuracy(items: Sequence[Item], judged: Sequence[Sequence[Any]], k: int,
                       meta: Sequence[Sequence[float]] | None = None, k_meta: int | None = None) -> list[float]:
    """1.0 per item whose voted pick (first k judgments; meta-guided when ``meta`` holds their scores) is its
    best response, else 0.0 (no valid judgment: 0.0)."""
    hits = []
    for i, (it, js) in enumerate(zip(items, judged)):
        lists = [j.scores for j in js[:k]]
        totals = vote(lists) if meta is None else meta_guided_vote(lists, list(meta[i][:k]), k_meta)
        hits.append(float(totals is not None and _argmax(totals) == it.best))
    return hits


def evaluate(engine: Any, adapter: str | None, items: Sequence[Item], ks: Sequence[int] = (1, 4),
             temperature: float = 0.5, max_tokens: int = 256, seed: int = 0, meta_rm: Any = None) -> dict[str, Any]:
    """One engine call for max(ks) judgments per multi-response item; voting@k reads the first k of them."""
    from twinloop.rewards.generative import GenerativeReward, format_grm_prompt, judgment_correct

    multi = [it for it in items if not it.binary]
    k_max = max(ks)
    grm = GenerativeReward(engine, lora=adapter, k=k_max, temperature=temperature, max_tokens=max_tokens,
                           mode="group", seed=seed)
    judged = grm.judge_many([(it.query, it.responses) for it in multi], k=k_max)
    flat = [(it, j) for it, js in zip(multi, judged) for j in js]
    out: dict[str, Any] = {
        "adapter": adapter, "items": len(multi), "judgments": len(flat),
        "parseable": sum(j.scores is not None for _, j in flat) / max(1, len(flat)),
        "eq10_rate": sum(judgment_correct(j.scores, it.rewards) for it, j in flat) / max(1, len(flat)),
        "random": _acc([1.0 / len(it.responses) for it in multi])["mean"],
        "majority": _acc([majority_pick_accuracy(it) for it in multi]),
        "judge_tokens": {"input": grm.usage.input_tokens, "output": grm.usage.output_tokens},
    }
    for k in ks:
        hits = selection_accuracy(multi, judged, k)
        out[f"voting@{k}"] = _acc(hits)
        out[f"voting@{k}_by_n"] = {n: _acc([h for h, it in zip(hits, multi) if len(it.responses) == n])["mean"]
                                   for n in sorted({len(it.responses) for it in multi})}
    out["random_by_n"] = {n: 1.0 / n for n in sorted({len(it.responses) for it in multi})}
    if meta_rm is not None:
        prompts = [format_grm_prompt(it.query, [it.responses[i] for i in j.order]) for it, j in flat]
        raw = meta_rm(prompts, [j.text for _, j in flat])
        scores = [float("-inf") if s is None else float(s) for s in raw]
        meta = [scores[i * k_max:(i + 1) * k_max] for i in range(len(multi))]
        out[f"meta_voting@{k_max}"] = _acc(selection_accuracy(multi, judged, k_max, meta))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from twinloop.train.spct import Paths, SPCTConfig, is_judge, judge_engine, load_items, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--stage", default="sft", choices=["none", "sft", "rft", "rl"])
    ap.add_argument("--ks", default="1,4")
    ap.add_argument("--n_items", type=int, default=40)
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--policy_dir", default="checkpoints/tiny-arith-policy")
    ap.add_argument("--max_tokens", type=int, default=256)
    ap.add_argument("--meta", action="store_true", help="also meta-guided voting with OUTPUT_DIR/meta_export")
    ap.add_argument("--judge", default="separate", choices=["separate", "lora"])
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--max_length", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = SPCTConfig(output_dir=args.output_dir, engine=args.engine, policy_dir=args.policy_dir, seed=args.seed,
                     judge=args.judge, max_length=args.max_length)
    paths = Paths(cfg)
    if args.stage == "none":
        judge = None if args.judge == "lora" else str(paths.judge0)
    else:
        judge = str(getattr(paths, args.stage))
    if judge is not None and not is_judge(judge):
        raise FileNotFoundError(f"no trained judge at {judge}")
    items = [it for it in load_items(paths.data / "test.jsonl") if not it.binary][:args.n_items]
    meta_rm = None
    if args.meta:
        from twinloop.checkpoints.export import load_reward

        meta_rm = load_reward(paths.meta_export)
    engine, adapter = judge_engine(cfg, judge)
    try:
        report = evaluate(engine, adapter, items, [int(k) for k in args.ks.split(",")], args.temperature,
                          max_tokens=args.max_tokens, seed=args.seed, meta_rm=meta_rm)
    finally:
        if hasattr(engine, "close"):
            engine.close()
    report["judge"] = judge
    write_json(paths.root / "eval" / f"{args.stage}{'-meta' if args.meta else ''}.json", report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
