"""GPPO against GRPO on the tiny arithmetic policy: greedy held-out accuracy along training, same seed and steps.

    python -m twinloop.train.learning_curve --vllm --steps_per_generation 4 --out runs/curve

Both variants start from recipes/arith/process.yaml (its reward, temperature, batch, learning rate, seed).
GPPO is ``GPPOTrainer`` with the recipe as it is; GRPO is TRL's own ``GRPOTrainer(loss_type="dapo")`` given the
same values (it has no NLL term or dual clip). Greedy accuracy is measured on the task's held-out test split
(200 problems) before training and every ``--eval-every`` steps. Writes ``curve.jsonl`` and ``curve.png``
under ``--out`` and prints a table. Other flags go to both trainers' configs (e.g. ``--positive_loss_coeff 0``
or ``--reward_funcs twinloop.tasks.arith:ArithOutcomeReward``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def greedy_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, Any]], reward: Any, max_new_tokens: int = 96,
                    batch_size: int = 100) -> float:
    """Outcome accuracy of greedy decoding (transformers generate, left padding)."""
    import torch

    was_training = model.training
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    texts, scores = [], []
    try:
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                       for r in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            scores += reward([r["prompt"] for r in chunk], texts, answer=[r["answer"] for r in chunk])
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return sum(s or 0.0 for s in scores) / max(1, len(scores))


def run_variant(name: str, args, rows_eval, log) -> None:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from twinloop.train.gppo import GPPOTrainer, build_rewards, load_tokenizer, parse, shutdown_colocated_vllm

    from twinloop.tasks.arith import ArithOutcomeReward, load

    script, cfg = parse(["--config", str(REPO / "recipes/arith/process.yaml"), "--model_name_or_path",
                         args.policy, "--output_dir", str(Path(args.out) / name), "--max_steps", str(args.steps),
                         "--save_strategy", "no", "--logging_steps", "10", "--disable_tqdm", "true", "--use_vllm",
                         str(args.vllm).lower(), "--vllm_dtype", "float32", "--vllm_max_model_length", "512",
                         *args.recipe_flags])
    cfg.model_init_kwargs = {"dtype": "float32"}
    if name == "grpo":
        keep = {f: getattr(cfg, f) for f in GRPOConfig.__dataclass_fields__ if f in cfg.__dict__
                and GRPOConfig.__dataclass_fields__[f].init}
        cfg = GRPOConfig(**{**keep, "loss_type": "dapo", "generation_batch_size": None})  # re-derived
        cls = GRPOTrainer
    else:
        cls = GPPOTrainer
    rewards = build_rewards(script)
    n_prompts = cfg.per_device_train_batch_size * args.steps // cfg.num_generations + 64
    train = Dataset.from_list(load("train", n=n_prompts, seed=args.data_seed))
    t0 = time.time()

    class Eval(TrainerCallback):
        def evaluate(self, state, model, tokenizer):
            acc = greedy_accuracy(model, tokenizer, rows_eval, ArithOutcomeReward())
            rewards = [r["reward"] for r in state.log_history if "reward" in r][-5:]
            row = {"variant": name, "step": state.global_step, "wall_s": round(time.time() - t0, 1),
                   "greedy_acc": acc, "train_reward": sum(rewards) / len(rewards) if rewards else None}
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"[curve] {row}", flush=True)

        def on_train_begin(self, a, state, control, model=None, processing_class=None, **kw):
            self.evaluate(state, model, processing_class)

        def on_step_end(self, a, state, control, model=None, processing_class=None, **kw):
            out_of_time = time.time() - t0 > args.max_minutes * 60
            if state.global_step % args.eval_every == 0 or state.global_step == args.steps or out_of_time:
                self.evaluate(state, model, processing_class)
            if out_of_time:
                control.should_training_stop = True

    kwargs = dict(model=args.policy, reward_funcs=rewards, args=cfg, train_dataset=train, callbacks=[Eval()],
                  processing_class=load_tokenizer(args.policy))
    if name == "grpo" and args.vllm:  # stock TRL needs the same CPU fixes as GPPOTrainer applies to itself
        from twinloop.infer.engine import free_port
        from twinloop.train.vllm_sync import colocated_llm_kwargs, patch_colocate_sync_for_cpu

        os.environ["MASTER_PORT"] = str(free_port())
        with colocated_llm_kwargs(dtype="float32", enforce_eager=True):
            trainer = cls(**kwargs)
        patch_colocate_sync_for_cpu(trainer.vllm_generation)
    else:
        trainer = cls(**kwargs)
    trainer.train()
    shutdown_colocated_vllm(trainer)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("gppo", "o-"), ("grpo", "s--")):
        pts = [(r["step"], r["greedy_acc"]) for r in rows if r["variant"] == name]
        if pts:
            ax.plot(*zip(*pts), style, label={"gppo": "GPPO", "grpo": "GRPO (TRL dapo)"}[name])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("greedy accuracy, held-out arithmetic (200)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="checkpoints/tiny-arith-policy")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the training prompts (--seed sets TRL's)")
    ap.add_argument("--variants", default="gppo,grpo")
    ap.add_argument("--vllm", action="store_true", help="colocated vLLM generation")
    ap.add_argument("--eval-size", type=int, default=200)
    ap.add_argument("--eval-split", choices=("test", "dev"), default="test",
                    help="tune settings on dev, report on test")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="wall-clock budget per variant")
    ap.add_argument("--out", default="runs/curve")
    args, args.recipe_flags = ap.parse_known_args(argv)  # the rest: recipe flags, e.g. --temperature 0.7
    torch.set_num_threads(int(os.environ.get("TWINLOOP_TORCH_THREADS", "1")))
    if not Path(args.policy).is_dir():
        raise FileNotFoundError(f"policy folder not found: {args.policy}")
    from twinloop.tasks.arith import load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_eval = load(args.eval_split, n=args.eval_size)
    with open(out / "curve.jsonl", "a") as log:
        for name in args.variants.split(","):
            run_variant(name, args, rows_eval, log)
    rows = [json.loads(line) for line in open(out / "curve.jsonl")]
    plot(rows, out / "curve.png")
    print(f"\n{'step':>6}" + "".join(f"{v:>12}" for v in args.variants.split(",")))
    steps = sorted({r["step"] for r in rows})
    for s in steps:
        cells = [next((f"{r['greedy_acc']:.3f}" for r in rows if r["variant"] == v and r["step"] == s), "-")
                 for v in args.variants.split(",")]
        print(f"{s:>6}" + "".join(f"{c:>12}" for c in cells))
    print(f"wrote {out / 'curve.jsonl'} and {out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
