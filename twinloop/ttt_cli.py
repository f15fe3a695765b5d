"""`twinloop ttt`: answer a long-context task with exact qTTT (query-only TTT over a frozen cache), or without it.

    twinloop ttt --model runs/qttt/kv-tiny --task kv_retrieval --task-args '{"context_words": 400, "n_keys": 8}' \\
        --n 20 --steps 0,2,8 --lr 1e-3 --span 64 [--out ttt.jsonl]
    twinloop ttt --recipe recipes/ttt/kv-tiny.yaml [--n 5 ...]

Settings: defaults < ``--recipe`` (a flat YAML mapping of these settings, names with underscores; ``task_args``
a mapping, ``steps`` a list) < flags.

One transformers model on CPU; for every row and every N_TTT in ``--steps`` (0 = no TTT) the task's own reward
scores the greedy answer, and the gold answer's NLL is recorded. Prints one line per N_TTT: mean reward, mean
gold NLL, mean seconds per item, and TTT compute in tokens (2·N_TTT·k). The LoRA-q approximation served by vLLM
is measured by bench/qttt_study.py.
"""
from __future__ import annotations

import argparse
import json
import statistics

DEFAULTS = {"model": None, "task": "kv_retrieval", "task_args": "{}", "split": "test", "n": 20, "seed": 0,
            "steps": "0,8", "span": 128, "lr": 1e-5, "max_new_tokens": 32, "out": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="a YAML mapping of the settings below (flags win over it)")
    parser.add_argument("--model", help="a transformers causal-LM folder (Llama/Qwen2-style)")
    parser.add_argument("--task", help="a task spec whose rows keep context and question apart: kv_retrieval "
                        "(default) or ruler")
    parser.add_argument("--task-args", help="JSON settings for the task's load(), e.g. context length")
    parser.add_argument("--split", help="default test")
    parser.add_argument("--n", type=int, help="rows (default 20)")
    parser.add_argument("--seed", type=int, help="default 0")
    parser.add_argument("--steps", help="N_TTT values, comma-separated (0: no TTT; default 0,8)")
    parser.add_argument("--span", type=int, help="k, tokens per TTT span (default 128 [check])")
    parser.add_argument("--lr", type=float, help="default 1e-5 [check]: the paper's range is 1e-6..1e-5")
    parser.add_argument("--max-new-tokens", type=int, help="default 32")
    parser.add_argument("--out", help="write one JSON line per row and N_TTT here")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults < recipe < flags (a flag left unset is None)."""
    from twinloop.recipe import read

    recipe = read(args.recipe) if args.recipe else {}
    recipe = {k.replace("-", "_"): v for k, v in recipe.items()}
    unknown = sorted(set(recipe) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"recipe {args.recipe}: unknown setting {unknown[0]!r}; known: {', '.join(DEFAULTS)}")
    if isinstance(recipe.get("task_args"), dict):
        recipe["task_args"] = json.dumps(recipe["task_args"])
    if isinstance(recipe.get("steps"), list):
        recipe["steps"] = ",".join(str(s) for s in recipe["steps"])
    out = argparse.Namespace(**{k: recipe.get(k, v) for k, v in DEFAULTS.items()})
    for key in DEFAULTS:
        if getattr(args, key, None) is not None:
            setattr(out, key, getattr(args, key))
    if not out.model:
        raise ValueError("no model: pass --model or name `model` in the recipe")
    return out


def run(args: argparse.Namespace) -> int:
    args = resolve(args)
    try:
        task_args = json.loads(args.task_args)
        steps = [int(s) for s in str(args.steps).split(",")]
    except ValueError as e:
        raise ValueError(f"--task-args must be a JSON object and --steps integers: {e}") from None
    if not isinstance(task_args, dict) or min(steps) < 0:
        raise ValueError("--task-args must be a JSON object and --steps non-negative")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from twinloop.build import build_task
    from twinloop.infer.qttt import QTTTConfig, QueryForward, ttt_tokens
    from twinloop.infer.qttt_answer import answer_row

    task = build_task(args.task)
    rows = task.module.load(split=args.split, n=args.n, seed=args.seed, **task_args)
    reward = task.reward()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fwd = QueryForward(model)
    out = open(args.out, "a") if args.out else None
    try:
        for n_ttt in steps:
            cfg = QTTTConfig(steps=n_ttt, span=args.span, lr=args.lr, seed=args.seed) if n_ttt else None
            scores, nlls, secs = [], [], []
            for row in rows:
                res = answer_row(fwd, tok, row, cfg, args.max_new_tokens)
                columns = {k: [v] for k, v in row.items() if k != "prompt"}
                (score,) = reward([row["prompt"]], [res["completion"]], **columns)
                scores.append(score or 0.0)
                secs.append(res["seconds"])
                if res["gold_nll"] is not None:
                    nlls.append(res["gold_nll"])
                if out:
                    out.write(json.dumps({"id": row.get("id"), "steps": n_ttt, "score": score, **res}) + "\n")
            nll = f"{statistics.fmean(nlls):.4f}" if nlls else "n/a"
            print(f"N_TTT={n_ttt:<3} reward {statistics.fmean(scores):.3f}  gold NLL {nll}  "
                  f"{statistics.fmean(secs):.3f} s/item  TTT tokens {ttt_tokens(n_ttt, args.span)}  (n={len(rows)})")
    finally:
        if out:
            out.close()
    return 0
