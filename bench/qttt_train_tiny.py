"""Train the tiny retrieval model the qTTT study adapts: SFT on short kv_retrieval contexts (minutes on 1 core).

    python bench/qttt_train_tiny.py --out runs/qttt/kv-tiny [--steps 2500]

A Qwen2-style 0.56M-parameter decoder (2 layers, hidden 128, head_dim 32 so that vLLM's CPU attention and LoRA
serve it) with its own BPE tokenizer learns, from scratch, "The code for KEY is NNNN." given contexts of
``--min-words``..``--max-words`` words with 2..``--max-keys`` keys. Loss on every token (the context too: qTTT's own
loss is next-token NLL on the context) plus the answer tokens' mean once more. Longer contexts at test time are where
its attention dilutes. Writes train_stats.json beside the model.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def training_rows(n: int, seed: int, min_words: int, max_words: int, max_keys: int) -> list[dict]:
    from twinloop.tasks.kv_retrieval import make_item

    rng = random.Random(f"qttt-train/{seed}")
    rows = []
    for _ in range(n):
        item = make_item(rng, rng.randint(min_words, max_words), rng.randint(2, max_keys))
        item["prompt"] = [{"role": "user", "content": item["context"] + item["question"]}]
        item["solution"] = f"{item['answer_prefix']} {item['answer']}."
        rows.append(item)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/qttt/kv-tiny")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--min-words", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=120)
    ap.add_argument("--max-keys", type=int, default=8)
    ap.add_argument("--max-positions", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (slower than fp32 on CPUs without AMX)")
    args = ap.parse_args(argv)

    import torch
    from transformers import Qwen2ForCausalLM

    from twinloop.tiny import tiny_config, train_tokenizer
    from twinloop.tinyworld import collate, cosine_lr, encode_rows, length_bucketed_batches

    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rows = training_rows(args.steps * args.batch_size, args.seed, args.min_words, args.max_words, args.max_keys)
    tok = train_tokenizer((r["prompt"][0]["content"] + "\n" + r["solution"] for r in rows[:3000]), vocab_size=512,
                          model_max_length=args.max_positions)
    examples = encode_rows(tok, rows)  # (ids, prompt length): the answer is what follows the prompt
    batches = length_bucketed_batches(examples, args.batch_size, 32, random.Random(args.seed))
    cfg = tiny_config(tok, hidden=args.hidden, layers=args.layers, heads=args.hidden // 32, kv_heads=args.hidden // 64,
                      intermediate=4 * args.hidden, max_positions=args.max_positions)
    model = Qwen2ForCausalLM(cfg).float()
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    log = []
    for step in range(args.steps):
        input_ids, mask, labels = collate(batches[step % len(batches)], tok.pad_token_id)
        for group in optim.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, 50)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        # every token (the context too) plus the answer tokens once more, so retrieval is not drowned by filler
        every = torch.where(mask[:, 1:].bool(), input_ids[:, 1:], -100)
        loss = (torch.nn.functional.cross_entropy(logits.transpose(1, 2), every)
                + torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:]))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if step % 50 == 0 or step == args.steps - 1:
            log.append((step, round(loss.item(), 4)))
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    stats = {"params": sum(p.numel() for p in model.parameters()), "seconds": round(time.time() - t0, 1),
             "loss_log": log, "args": vars(args)}
    (out / "train_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "loss_log"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
