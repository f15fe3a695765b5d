"""`twinloop tinyworld build`: train the tiny arithmetic policy shipped in checkpoints/tiny-arith-policy/.

Three stages, each with a progress bar: a byte-level BPE tokenizer with a chat template, SFT of a ~1M
parameter Qwen2-style model on the arithmetic chain-of-thought data (CPU, seeded, a fixed number of steps),
then save safetensors + tokenizer + a model card (as the identical Llama model, see ``to_llama``).
The recipe follows STACK.md's measured run: bf16 autocast, batches of similar length padded to a
multiple of 8, uniformly drawn operation counts, randomised step order, results up to 199.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from twinloop.tasks import arith

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "checkpoints" / "tiny-arith-policy"


@dataclass
class BuildConfig:
    """The shipped recipe [check]: every field is a CLI flag of `twinloop tinyworld build`."""

    steps: int = 3500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    vocab_size: int = 512
    seed: int = 0
    # chance a + or * training step swaps its operands. 0.5 was tried for more diverse votes: 3500 steps gave
    # greedy 0.24 on test and no voting gain (the same fact written twice still fails the same way).
    commute: float = 0.0
    # chance a + or - training step with a two-digit second operand is written tens first ("47 + 38 = 77 + 8 = 85"):
    # a second route through other facts, so sampled errors decorrelate. With 0.5 (the shipped build) dev
    # majority@16 is 0.515 against greedy 0.455 (direct steps only: a tie), and test greedy rose 0.405 -> 0.445.
    tens_first: float = 0.5
    threads: int = 1  # under contention 1 thread beat 2 (STACK.md); use 2 on an idle machine
    bucket_batches: int = 64  # batches drawn together, sorted by length (steady bf16 shapes)
    eval_size: int = 200  # test problems for the model card's greedy accuracy (0: skip)


def chat_prefix(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenizer_corpus(rows: list[dict[str, Any]]):
    for row in rows:
        yield row["prompt"][0]["content"] + "\n" + row["solution"]


def encode_rows(tokenizer, rows: list[dict[str, Any]]) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per row: chat prefix, then the solution, then EOS (<|im_end|>)."""
    prefixes = tokenizer([chat_prefix(tokenizer, r["prompt"]) for r in rows], add_special_tokens=False)["input_ids"]
    answers = tokenizer([r["solution"] for r in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + a + [eos], len(p)) for p, a in zip(prefixes, answers)]


def length_bucketed_batches(examples: list, batch_size: int, bucket_batches: int, rng: random.Random) -> list[list]:
    """Consecutive chunks of ``bucket_batches`` batches are sorted by length, cut into batches, and the
    batches shuffled: similar lengths per batch without a global length order."""
    batches = []
    chunk = batch_size * bucket_batches
    for start in range(0, len(examples), chunk):
        part = sorted(examples[start:start + chunk], key=lambda e: len(e[0]))
        cuts = [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
        batches += [b for b in cuts if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def collate(batch: list[tuple[list[int], int]], pad_id: int, multiple: int = 8):
    """Right-padded input ids, attention mask and labels (prompt and padding masked with -100)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    width = -(-width // multiple) * multiple
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, prompt_len) in enumerate(batch):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, prompt_len:len(ids)] = torch.tensor(ids[prompt_len:])
        mask[i, :len(ids)] = 1
    return input_ids, mask, labels


def cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, progress)))


def greedy_accuracy(model, tokenizer, rows: list[dict[str, Any]], max_new_tokens: int = 96,
                    batch_size: int = 100) -> float:
    """Greedy accuracy with transformers generate (left padding), for the model card."""
    import torch
    from tqdm import tqdm

    reward = arith.ArithOutcomeReward()
    correct = 0.0
    tokenizer.padding_side = "left"
    for start in tqdm(range(0, len(rows), batch_size), desc="greedy eval", unit="batch"):
        part = rows[start:start + batch_size]
        enc = tokenizer([chat_prefix(tokenizer, r["prompt"]) for r in part], return_tensors="pt",
                        padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        correct += sum(reward([r["prompt"] for r in part], texts, answer=[r["answer"] for r in part]))
    return correct / len(rows)


def to_llama(model):
    """The same network as a LlamaForCausalLM (q/k/v biases kept, a zero o_proj bias added).

    Why: transformers 5 loads every ``qwen2`` checkpoint's tokenizer as Qwen2Tokenizer, which rebuilds the
    pre-tokenizer (one token per digit) and so no longer matches the BPE the model was trained with. A
    ``llama`` checkpoint keeps the saved tokenizer.json as it is, in transformers and in vLLM alike.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    q = model.config
    config = LlamaConfig(
        vocab_size=q.vocab_size, hidden_size=q.hidden_size, intermediate_size=q.intermediate_size,
        num_hidden_layers=q.num_hidden_layers, num_attention_heads=q.num_attention_heads,
        num_key_value_heads=q.num_key_value_heads, head_dim=q.head_dim, hidden_act=q.hidden_act,
        max_position_embeddings=q.max_position_embeddings, rms_norm_eps=q.rms_norm_eps,
        rope_parameters=dict(q.rope_parameters), tie_word_embeddings=q.tie_word_embeddings,
        attention_bias=True, mlp_bias=False, bos_token_id=None, eos_token_id=q.eos_token_id,
        pad_token_id=q.pad_token_id,
    )
    llama = LlamaForCausalLM(config).float()
    state = dict(model.state_dict())
    for i in range(q.num_hidden_layers):
        state[f"model.layers.{i}.self_attn.o_proj.bias"] = torch.zeros(q.hidden_size)
    missing, unexpected = llama.load_state_dict(state, strict=False)
    if unexpected or any(k != "lm_head.weight" for k in missing):
        raise ValueError(f"Qwen2 -> Llama conversion mismatch: missing {missing}, unexpected {unexpected}")
    llama.tie_weights()
    llama.generation_config.eos_token_id = q.eos_token_id
    llama.generation_config.pad_token_id = q.pad_token_id
    llama.generation_config.bos_token_id = None
    return llama.eval()


def build(cfg: BuildConfig, out_dir: Path) -> dict[str, Any]:
    import torch
    from tqdm import tqdm
    from transformers import Qwen2ForCausalLM

    from twinloop.tiny import tiny_config, train_tokenizer

    t0 = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    n_rows = cfg.steps * cfg.batch_size
    train_iter = arith.iter_train(seed=cfg.seed, commute=cfg.commute, tens_first=cfg.tens_first)
    rows = [next(train_iter) for _ in tqdm(range(n_rows), desc="arith data", unit="row", mininterval=2)]

    with tqdm(total=1, desc="tokenizer", unit="bpe") as bar:
        tokenizer = train_tokenizer(tokenizer_corpus(rows[:20000]), vocab_size=cfg.vocab_size)
        bar.update(1)
    examples = encode_rows(tokenizer, rows)
    batches = length_bucketed_batches(examples, cfg.batch_size, cfg.bucket_batches, rng)

    model_cfg = tiny_config(tokenizer, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads, kv_heads=cfg.heads,
                            intermediate=cfg.intermediate, max_positions=1024)
    model = Qwen2ForCausalLM(model_cfg).float()
    n_params = sum(p.numel() for p in model.parameters())
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    tokens_seen, t_train = 0, time.time()
    bar = tqdm(range(cfg.steps), desc="sft", unit="step", mininterval=2)
    for step in bar:
        input_ids, mask, labels = collate(batches[step % len(batches)], tokenizer.pad_token_id)
        for group in optim.param_groups:
            group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        tokens_seen += int(mask.sum())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens_seen / (time.time() - t_train):.0f}")
    train_seconds = time.time() - t_train

    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model = to_llama(model)
    test_acc = greedy_accuracy(model, tokenizer, arith.load("test", n=cfg.eval_size)) if cfg.eval_size else float("nan")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    stats = {
        "params": n_params,
        "train_tokens": tokens_seen,
        "train_seconds": round(train_seconds, 1),
        "build_seconds": round(time.time() - t0, 1),
        "final_loss": round(float(loss.item()), 4),
        "greedy_test_accuracy_transformers": round(test_acc, 3),
        "config": asdict(cfg),
    }
    (out_dir / "build_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    (out_dir / "README.md").write_text(model_card(stats))
    return stats


def model_card(stats: dict[str, Any]) -> str:
    cfg = stats["config"]
    ops = f"{arith.ArithConfig().min_ops}-{arith.ArithConfig().max_ops}"
    written_forms = f"; + and * operands swapped with probability {cfg['commute']}" if cfg.get("commute") else ""
    if cfg.get("tens_first"):
        written_forms += f"; + and - steps written tens first with probability {cfg['tens_first']}"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [twinloop, arithmetic, tiny, from-scratch]
---
# tiny-arith-policy

A {stats['params'] / 1e6:.2f}M-parameter Qwen2-style causal LM trained from scratch by `twinloop tinyworld build`
(seed {cfg['seed']}, {cfg['steps']} steps, CPU). It is trained as a Qwen2 model and saved as the identical
LlamaForCausalLM (q/k/v biases, zero o_proj bias): transformers 5 would load a `qwen2` checkpoint's tokenizer
as Qwen2Tokenizer, whose digit-splitting pre-tokenizer does not match the BPE trained here.

It solves twinloop's step-checkable arithmetic task: integer expressions with
{ops} operations (+, -, * with one factor <= 9), numbers up to 99 and every intermediate result in [0, 199].

## Format
Chat template (ChatML, EOS `<|im_end|>`). The user message is `Compute <expression> step by step.`; the
answer writes one equation per step, steps separated by a blank line, then `Answer: \\boxed{{N}}`:
```
91 - 84 = 7

22 * 7 = 154

35 + 154 = 189

Answer: \\boxed{{189}}
```

## Training
hidden {cfg['hidden']}, {cfg['layers']} layers, {cfg['heads']} heads of dim {cfg['hidden'] // cfg['heads']}, ff
{cfg['intermediate']}, byte-level BPE vocabulary of {cfg['vocab_size']} tokens. SFT on the gold chains (random
order among independent steps{written_forms}), batch {cfg['batch_size']}, AdamW lr {cfg['lr']} with warmup and cosine decay,
bf16 autocast, {stats['train_tokens']:,} tokens in {stats['train_seconds']:.0f} s
({cfg['threads']} threads), build {stats['build_seconds'] / 60:.1f} min; final loss {stats['final_loss']}.

## Measured
Greedy accuracy on the fixed 200-problem test split (`twinloop.tasks.arith.load("test")`), transformers,
right after training: {stats["greedy_test_accuracy_transformers"]:.3f}. It is deliberately weak so
that search has room: see the numbers measured with vLLM below.

## Intended use
A CPU testbed for twinloop's search procedures and trainers. Not a general model.
"""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="train the tiny arithmetic policy and save it")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the shipped checkpoint)")
    for name, value in asdict(BuildConfig()).items():
        b.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)


def run(args) -> int:
    cfg = BuildConfig(**{k: getattr(args, k) for k in asdict(BuildConfig())})
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("--steps and --batch-size must be positive")
    stats = build(cfg, Path(args.out))
    print(json.dumps({k: v for k, v in stats.items() if k != "config"}, indent=2))
    print(f"saved {args.out}")
    return 0
