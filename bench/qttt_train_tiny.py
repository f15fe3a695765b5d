"""Train the tiny retrieval model the qTTT study adapts: SFT on short kv_retrieval contexts (minutes on 1 core).

    python bench/qttt_train_tiny.py --out checkpoints/tiny-kv-retrieval --layers 2 --lr 3e-3 --seed 2 \
        --induction-steps 3000 --steps 6000 --stop-at-em 0.95 --pair-codes --lm-frac 0.1 \
        --min-words 1 --max-words 60 --min-keys 1 --max-keys 6 --questions 4      # the shipped model, ~5 min

A Qwen2-style decoder (hidden 128, head_dim 32 so that vLLM's CPU attention and LoRA serve it) with its own BPE
tokenizer learns, from scratch, "The code for KEY is NNNN." given contexts of ``--min-words``..``--max-words``
words with ``--min-keys``..``--max-keys`` keys. It first trains on repeated random token sequences
(``--induction-steps``, ``repeat_example``) until their copy loss falls below ``--induction-until``: without that
phase no recipe formed an induction head in 5,000 steps (the model copied *some* code of the context, chance
among the keys). Each training context is followed by up to ``--questions`` question/answer turns about its keys
(the first turn is exactly the test format). Loss on the code tokens plus next-token NLL on a random
``--lm-frac`` of the positions (qTTT's own loss). Every ``--eval-every`` steps it prints the dev exact match at
the training length (teacher-forced argmax of the code tokens after the pre-filled answer prefix, which is what
greedy decoding returns). Writes train_stats.json beside the model. Longer contexts at test time are where its
attention dilutes.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path


def turn_text(key: str, first: bool) -> str:
    """A follow-up user turn asking for ``key`` (the first question lives in the prompt itself)."""
    return "" if first else f"<|im_end|>\n<|im_start|>user\nQuestion: What is the code for {key}?<|im_end|>\n" \
                            f"<|im_start|>assistant\nThe code for {key} is"


def encode_item(tok, rng: random.Random, words: int, keys: int, questions: int) -> tuple[list[int], list[int]]:
    """(ids, code mask): chat prefix pre-filled with the answer prefix, " NNNN.", then further question turns.
    The code " NNNN" is encoded apart from its prefix exactly as the study encodes the gold answer."""
    from twinloop.tasks.kv_retrieval import make_item

    item = make_item(rng, words, keys)
    codes = dict(re.findall(r"The code for (\w+) is (\d+)\.", item["context"]))
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = tok.apply_chat_template([{"role": "user", "content": item["context"] + item["question"]}],
                                     tokenize=False, add_generation_prompt=True) + item["answer_prefix"]
    ids = enc(prompt)
    mask = [0] * len(ids)
    asked = [item["key"]] + rng.sample([k for k in codes if k != item["key"]],
                                       min(questions - 1, len(codes) - 1))
    for i, key in enumerate(asked):
        head = enc(turn_text(key, i == 0))
        code = enc(f" {codes[key]}")
        ids += head + code + enc(".")
        mask += [0] * len(head) + [1] * len(code) + [0]
    ids.append(tok.eos_token_id)
    mask.append(0)
    return ids, mask


def add_word_tokens(tok, pair_codes: bool = False) -> None:
    """Every key (" violin") becomes ONE token, and every code either one token (" 1000".." 9999") or, with
    ``pair_codes``, two (" 12" + "34": 190 tokens instead of 9,000). With a 512-BPE a key splits into up to 5
    characters and a tiny model has to chain single-digit copies. Whole-code tokens make the head 9.6K wide, which
    dominated the step and left the code loss at ln|V| (session 2); pairs keep the vocabulary small and the copy
    two tokens long."""
    from tokenizers import AddedToken

    from twinloop.tasks.kv_retrieval import KEYS

    codes = ([f" {c}" for c in range(10, 100)] + [f"{c:02d}" for c in range(100)] if pair_codes
             else [f" {c}" for c in range(1000, 10000)])
    tok.add_tokens([AddedToken(w, normalized=False) for w in [f" {k}" for k in KEYS] + codes])


def add_task_words(tok, model) -> int:
    """Starting from a model that already copies numbers (the tiny arithmetic policy, whose BPE writes " 4821" as
    " 48" + "21" and every word letter by letter): one new token per word of the task's text, keys included, each
    embedding drawn with the trained embeddings' per-dimension mean and spread so that the copy circuit can tell
    new words apart from the first step. Codes keep the tokens the policy already copies. Returns the count."""
    import torch
    from tokenizers import AddedToken

    from twinloop.tasks.kv_retrieval import FILLER, INSTRUCTION, KEYS

    text = " ".join((*FILLER, INSTRUCTION, "Question: What is the code for", " ".join(KEYS)))
    words = sorted({f" {w}" for w in re.findall(r"[A-Za-z']+", text)} - set(tok.get_vocab()))
    added = tok.add_tokens([AddedToken(w, normalized=False) for w in words])
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        new = model.get_input_embeddings().weight
        gen = torch.Generator().manual_seed(0)
        new[old.shape[0]:] = old.mean(0) + old.std(0) * torch.randn(new.shape[0] - old.shape[0], old.shape[1],
                                                                       generator=gen)
    return added


def repeat_example(rng: random.Random, pool: list[int], length: int) -> tuple[list[int], list[int]]:
    """A random sequence of ``length`` tokens from ``pool`` written twice; the loss mask covers the second copy
    after its first token. Every masked token needs an induction head (find the earlier occurrence of the current
    token, copy its successor): the circuit retrieval needs, with one target per token instead of two per
    question turn. Used for ``--induction-steps`` before the retrieval data."""
    seq = [rng.choice(pool) for _ in range(length)]
    return seq + seq, [0] * (length + 1) + [1] * (length - 1)


def curriculum(step: int, ramp_steps: int, low: int, high: int) -> int:
    """The largest setting (keys or words) drawn at ``step``: grows linearly from ``low`` to ``high`` over
    ``ramp_steps`` steps (0: ``high`` from the start), so the copy is learnt on one or two keys first."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return high
    return low + (high - low) * step // ramp_steps


def batch_tensors(examples, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    code = torch.zeros((len(examples), width), dtype=torch.bool)
    for i, (ids, mask) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attn[i, :len(ids)] = 1
        code[i, :len(ids)] = torch.tensor(mask, dtype=torch.bool)
    return input_ids, attn, code


def first_code_em(model, examples, pad_id: int) -> float:
    """Fraction of items whose FIRST answer's code tokens are all the argmax (teacher forced = greedy)."""
    import torch

    hits = 0
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            part = examples[start:start + 16]
            input_ids, attn, code = batch_tensors(part, pad_id)
            pred = model(input_ids=input_ids, attention_mask=attn).logits.argmax(-1)
            for i, (ids, mask) in enumerate(part):
                first = mask.index(1)
                end = first
                while end < len(mask) and mask[end]:
                    end += 1
                hits += int(all(pred[i, j - 1].item() == ids[j] for j in range(first, end)))
    return hits / len(examples)


def code_token_report(model, examples, pad_id: int) -> dict[str, float]:
    """Where retrieval fails, per item's FIRST answer: ``first`` = the first code token is the argmax; ``second`` =
    the second is, given the right first one (teacher forced: the one-token copy an induction head does);
    ``first_in_context`` = the first token's argmax is some token of the context (a model that copies *a* code but
    does not match the key scores 1.0 here and chance on ``first``)."""
    import torch

    input_ids, attn, _ = batch_tensors(examples, pad_id)
    with torch.no_grad():
        pred = model(input_ids=input_ids, attention_mask=attn).logits.argmax(-1)
    first = second = in_context = 0
    for i, (ids, mask) in enumerate(examples):
        j = mask.index(1)
        first += pred[i, j - 1].item() == ids[j]
        second += pred[i, j].item() == ids[j + 1]
        in_context += pred[i, j - 1].item() in ids[:j - 8]  # the context, before the question turn's last tokens
    n = len(examples)
    return {"first": first / n, "second": second / n, "first_in_context": in_context / n}


def report(path: str, words: list[int], keys: list[int], n: int) -> int:
    """``--report MODEL``: code_token_report of a saved model for every (words, keys), n seeded items each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    for w in words:
        for k in keys:
            rng = random.Random(f"report/{w}/{k}")
            rows = [encode_item(tok, rng, w, k, 1) for _ in range(n)]
            print(json.dumps({"words": w, "keys": k, "n": n,
                              **{m: round(v, 3) for m, v in code_token_report(model, rows, tok.pad_token_id).items()}}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/qttt/kv-tiny4")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--min-words", type=int, default=20)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--min-keys", type=int, default=2)
    ap.add_argument("--max-keys", type=int, default=8)
    ap.add_argument("--questions", type=int, default=4, help="question turns per training context")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-n", type=int, default=64)
    ap.add_argument("--stop-at-em", type=float, default=1.01, help="stop once dev EM reaches this (default: never)")
    ap.add_argument("--max-positions", type=int, default=8192)
    ap.add_argument("--lm-frac", type=float, default=0.25, help="share of positions with the LM loss")
    ap.add_argument("--word-tokens", action=argparse.BooleanOptionalAction, default=True,
                    help="one token per key and per code (add_word_tokens)")
    ap.add_argument("--pair-codes", action="store_true", help="with --word-tokens: a code is two 2-digit tokens")
    ap.add_argument("--ramp", type=float, default=0.0,
                    help="share of the steps over which the largest keys/words grow from the minimum (curriculum)")
    ap.add_argument("--lm-start", type=int, default=0, help="no LM loss before this step (answer tokens only)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--induction-steps", type=int, default=0,
                    help="first train this many steps on repeated random token sequences (repeat_example)")
    ap.add_argument("--induction-until", type=float, default=0.5,
                    help="end the induction steps early once their copy loss (EMA) is below this")
    ap.add_argument("--small-pool", action="store_true",
                    help="second half of the induction steps: every other batch from a 12-token pool")
    ap.add_argument("--init", help="continue training this saved model (with its tokenizer) instead of a new one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", metavar="MODEL", help="instead of training: code_token_report of MODEL at "
                    "--report-words x --report-keys")
    ap.add_argument("--report-words", default="60,240,960")
    ap.add_argument("--report-keys", default="1,2,4,6")
    args = ap.parse_args(argv)
    if args.report:
        return report(args.report, [int(x) for x in args.report_words.split(",")],
                      [int(x) for x in args.report_keys.split(",")], args.eval_n)

    import torch
    from transformers import Qwen2ForCausalLM

    from twinloop.tasks.kv_retrieval import make_item
    from twinloop.tiny import tiny_config, train_tokenizer
    from twinloop.tinyworld import cosine_lr

    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(f"qttt-train/{args.seed}")
    corpus = []
    for _ in range(2000):
        item = make_item(rng, rng.randint(args.min_words, args.max_words), rng.randint(args.min_keys, args.max_keys))
        corpus.append(item["context"] + item["question"] + "\n" + item["answer_prefix"] + f" {item['answer']}.")
    if args.init:  # continue a saved model (its tokenizer too): a long run split into lane-sized commands
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.init)
        model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32)
        if args.word_tokens and " violin" not in tok.get_vocab():  # the tiny arithmetic policy: it copies numbers
            add_task_words(tok, model)
        tok.model_max_length = args.max_positions
        model.config.max_position_embeddings = max(model.config.max_position_embeddings, args.max_positions)
    else:
        tok = train_tokenizer(corpus, vocab_size=512, model_max_length=args.max_positions)
        if args.word_tokens:
            add_word_tokens(tok, args.pair_codes)
        cfg = tiny_config(tok, hidden=args.hidden, layers=args.layers, heads=args.hidden // 32,
                          kv_heads=args.hidden // 64, intermediate=4 * args.hidden, max_positions=args.max_positions)
        model = Qwen2ForCausalLM(cfg).float()
    induction_ema = 10.0
    pool = [i for t, i in tok.get_added_vocab().items() if not t.startswith("<|")]  # keys and codes
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    dev_rng = random.Random(f"qttt-dev/{args.seed}")  # the study's test rows come from kv_retrieval's own seeds
    dev = [encode_item(tok, dev_rng, args.max_words, args.max_keys, 1) for _ in range(args.eval_n)]
    log, evals = [], []
    for step in range(args.steps):
        ramp = int(args.ramp * args.steps)
        top_words = curriculum(step, ramp, args.min_words, args.max_words)
        top_keys = curriculum(step, ramp, args.min_keys, args.max_keys)
        words = rng.randint(args.min_words, top_words)  # one length per batch: little padding
        if args.induction_steps and (step == args.induction_steps
                                     or (step < args.induction_steps and induction_ema < args.induction_until)):
            print(f"step {step}: retrieval data from here (repeat loss EMA {induction_ema:.3f})", flush=True)
            args.induction_steps = step  # the copy formed: the rest of the run is retrieval
        if step < args.induction_steps:
            length = rng.randint(8, 48)
            # the second half alternates with a 12-token pool: a token then recurs within a copy, so only the
            # previous two tokens say what comes next (the key-then-" is" match retrieval needs)
            sub = rng.sample(pool, 12) if args.small_pool and step >= args.induction_steps // 2 and step % 2 else pool
            examples = [repeat_example(rng, sub, length) for _ in range(2 * args.batch_size)]
        else:
            examples = [encode_item(tok, rng, max(1, words + rng.randint(-5, 5)),
                                    rng.randint(args.min_keys, top_keys), args.questions)
                        for _ in range(args.batch_size)]
        input_ids, attn, code = batch_tensors(examples, tok.pad_token_id)
        for group in optim.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
        model.train()
        hidden = model.model(input_ids=input_ids, attention_mask=attn).last_hidden_state[:, :-1]
        targets, is_code = input_ids[:, 1:], code[:, 1:]
        # the LM loss on a random --lm-frac of the positions (a 9.6K-token head on every position dominated the
        # step), the code loss on every code position
        lm_frac = args.lm_frac if step >= max(args.lm_start, args.induction_steps) else 0.0
        sampled = attn[:, 1:].bool() & (torch.rand(targets.shape) < lm_frac)
        ce = torch.nn.functional.cross_entropy
        code_loss = ce(model.lm_head(hidden[is_code]).float(), targets[is_code])
        loss = code_loss
        if sampled.any():
            loss = loss + ce(model.lm_head(hidden[sampled]).float(), targets[sampled])
        if step < args.induction_steps:
            induction_ema = 0.9 * induction_ema + 0.1 * code_loss.item()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if step % 50 == 0 or step == args.steps - 1:
            log.append((step, round(loss.item(), 4), round(code_loss.item(), 4)))
            print(f"step {step} loss {loss.item():.4f} code {code_loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step == args.steps - 1:
            model.eval()
            em = first_code_em(model, dev, tok.pad_token_id)
            evals.append((step + 1, em))
            print(f"step {step + 1} dev EM at {args.max_words} words / {args.max_keys} keys: {em:.3f}", flush=True)
            if em >= args.stop_at_em:
                break
    model.eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    stats = {"params": sum(p.numel() for p in model.parameters()), "seconds": round(time.time() - t0, 1),
             "dev_em": evals, "loss_log": log, "args": vars(args)}
    (out / "train_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "loss_log"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
