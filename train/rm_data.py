"""Reward-model training data from the policy's own samples (no preference or PRM datasets exist offline).

- Outcome RM: Bradley-Terry pairs, chosen = a verified-correct sample, rejected = a verified-wrong sample of
  the same prompt.
- Process RM: Monte-Carlo step labels (Math-Shepherd style): from the prefix ending at step k, ``rollouts``
  continuations are sampled; step k is good when their success rate is ≥ ``threshold``. The default
  threshold is "at least one success" (hard estimation) [check: configurable]. The final step is labelled by
  the completion's own outcome.
All sampling goes through an Engine (``VLLMEngine`` or ``HFEngine``); the verifier is any twinloop Reward.
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twinloop.infer.engine import Request, SamplingConfig
from twinloop.rewards.process import encode_prompt, split_steps, text_ids

CORRECT = 1.0  # a verifiable reward this high is "verified correct"; ≤ WRONG is "verified wrong"
WRONG = 0.0
_TRAILING_NUMBER = re.compile(r"(-?\d+)\s*$")
DELTAS = (-10, -2, -1, 1, 2, 10)  # how a hard negative's step result is changed [check]


@dataclass
class PolicySampleArguments:
    """What every trainer on the policy's own samples (ORM, PRM, self-eval probe) is told; each adds its own."""

    policy_dir: str = field(default="checkpoints/tiny-arith-policy", metadata={"help": "policy to sample from and "
                                                                                      "initialise the model with."})
    task: str = field(default="arith", metadata={"help": "task spec: arith, gsm8k, rgym:countdown, ..."})
    verifier: str = field(default="arith_outcome",
                          metadata={"help": "reward spec: alias, module:Class(key=literal, ...) or bundle folder."})
    sample_temperature: float = 1.0
    sample_max_tokens: int = 128
    engine: str = field(default="vllm", metadata={"help": "'vllm' or 'hf' for sampling."})
    export_dir: str | None = field(default=None, metadata={"help": "export folder (default: under OUTPUT_DIR)."})


def sample_completions(engine: Any, rows: Sequence[dict[str, Any]], n: int, temperature: float = 1.0,
                       max_tokens: int = 128, seed: int | None = 0) -> list[list[str]]:
    """``n`` sampled completion texts per row (rows carry a chat ``prompt``)."""
    results = engine.generate([Request(messages=list(r["prompt"])) for r in rows],
                              SamplingConfig(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed))
    return [[c.text for c in res.completions] for res in results]


def score_completions(reward: Any, rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]]
                      ) -> list[list[float | None]]:
    """The reward of every completion, one call for everything (rows' columns forwarded, as TRL does)."""
    flat_rows = [r for r, cs in zip(rows, completions) for _ in cs]
    flat = [c for cs in completions for c in cs]
    if not flat:
        return [[] for _ in rows]
    cols = {k: [r[k] for r in flat_rows] for k in flat_rows[0] if k != "prompt"}
    scores = reward([r["prompt"] for r in flat_rows], flat, **cols)
    out, i = [], 0
    for cs in completions:
        out.append(list(scores[i:i + len(cs)]))
        i += len(cs)
    return out


def preference_pairs(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
                     scores: Sequence[Sequence[float | None]], max_pairs_per_prompt: int = 4, seed: int = 0
                     ) -> list[dict[str, Any]]:
    """Chosen/rejected pairs in TRL's conversational preference format (distinct texts, unscorable skipped)."""
    rng = random.Random(seed)
    pairs = []
    for row, comps, sc in zip(rows, completions, scores):
        good = sorted({c for c, s in zip(comps, sc) if s is not None and s >= CORRECT})
        bad = sorted({c for c, s in zip(comps, sc) if s is not None and s <= WRONG})
        rng.shuffle(good)
        rng.shuffle(bad)
        for i in range(min(max_pairs_per_prompt, len(good) * len(bad))):
            pairs.append({"prompt": list(row["prompt"]),
                          "chosen": [{"role": "assistant", "content": good[i % len(good)]}],
                          "rejected": [{"role": "assistant", "content": bad[(i // len(good)) % len(bad)]}]})
    return pairs


def perturb_step(step: str, delta: int) -> str | None:
    """The equation step with its final value changed by ``delta`` (``17 + 25 = 42`` -> ``17 + 25 = 43``);
    None for a step that is not ``... = number`` (the answer step included)."""
    if "=" not in step or "\\boxed" in step:
        return None
    m = _TRAILING_NUMBER.search(step)
    if m is None:
        return None
    return step[: m.start()] + str(int(m.group(1)) + delta)


def one_step_negative(steps: Sequence[str], rng: random.Random) -> tuple[list[str], int] | None:
    """A hard negative: ``steps`` with one equation step's result changed by a random ``DELTAS`` entry, and that
    step's index; None when no step is an equation."""
    slots = [k for k, s in enumerate(steps) if perturb_step(s, 1) is not None]
    if not slots:
        return None
    k = rng.choice(slots)
    out = list(steps)
    out[k] = perturb_step(out[k], rng.choice(DELTAS))
    return out, k


def one_step_negatives(examples: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """For each step-labelled example good in every step, a copy with one equation step's result changed,
    labelled 0 from that step on (``negative: True``); the sources are untouched."""
    rng = random.Random(seed)
    out = []
    for e in examples:
        if not all(e["labels"]):
            continue
        made = one_step_negative(e["steps"], rng)
        if made is not None:
            steps, k = made
            out.append({**e, "steps": steps, "labels": [1] * k + [0] * (len(steps) - k), "negative": True})
    return out


def hard_negative_pairs(rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
                        scores: Sequence[Sequence[float | None]], per_prompt: int, delimiter: str = "\n\n",
                        seed: int = 0) -> list[dict[str, Any]]:
    """Preference pairs whose rejected side is a verified-correct sample with one step's result changed (so the
    two differ in that one step), up to ``per_prompt`` per prompt, in ``preference_pairs``' format."""
    rng = random.Random(seed)
    pairs = []
    for row, comps, sc in zip(rows, completions, scores):
        good = sorted({c for c, s in zip(comps, sc) if s is not None and s >= CORRECT})
        rng.shuffle(good)
        for text in good[:per_prompt]:
            made = one_step_negative(split_steps(text, delimiter), rng)
            if made is None:
                continue
            pairs.append({"prompt": list(row["prompt"]), "chosen": [{"role": "assistant", "content": text}],
                          "rejected": [{"role": "assistant", "content": delimiter.join(made[0])}]})
    return pairs


def mc_step_labels(engine: Any, reward: Any, rows: Sequence[dict[str, Any]], completions: Sequence[Sequence[str]],
                   rollouts: int = 8, threshold: float | None = None, delimiter: str = "\n\n",
                   temperature: float = 1.0, max_tokens: int = 128, seed: int | None = 0) -> list[dict[str, Any]]:
    """One example per completion with at least one step: ``{"prompt", "steps", "labels", "rates"}``.

    ``labels[k]`` is 1 when the success rate of rollouts continuing after step k is ≥ ``threshold`` (None: at
    least one success), else 0; the last step's label is the completion's own outcome. All rollouts of all
    prefixes go to the engine in one batch, as token ids (prompt + steps so far + delimiter).
    """
    tok = engine.tokenizer
    items = []  # (row, steps)
    for row, comps in zip(rows, completions):
        for c in comps:
            steps = split_steps(c, delimiter)
            if steps:
                items.append((row, steps))
    prefixes, owners = [], []
    for i, (row, steps) in enumerate(items):
        base = encode_prompt(tok, row["prompt"])
        for k in range(len(steps) - 1):
            prefixes.append(base + text_ids(tok, delimiter.join(steps[:k + 1]) + delimiter))
            owners.append((i, k))
    conts: list[list[str]] = []
    if prefixes:
        res = engine.generate([Request(prompt_ids=p) for p in prefixes],
                              SamplingConfig(n=rollouts, temperature=temperature, max_tokens=max_tokens, seed=seed))
        conts = [[c.text for c in r.completions] for r in res]
    # verify: rollout completions are the step prefix plus the continuation
    texts, text_rows = [], []
    for (i, k), cs in zip(owners, conts):
        row, steps = items[i]
        head = delimiter.join(steps[:k + 1]) + delimiter
        texts += [head + c for c in cs]
        text_rows += [row] * len(cs)
    finals = [delimiter.join(steps) for _, steps in items]
    all_rows = text_rows + [row for row, _ in items]
    cols = {key: [r[key] for r in all_rows] for key in all_rows[0] if key != "prompt"} if all_rows else {}
    scores = reward([r["prompt"] for r in all_rows], texts + finals, **cols) if all_rows else []
    rates: list[list[float]] = [[0.0] * len(steps) for _, steps in items]
    j = 0
    for (i, k), cs in zip(owners, conts):
        got = [s for s in scores[j:j + len(cs)] if s is not None]
        rates[i][k] = sum(1.0 for s in got if s >= CORRECT) / max(1, len(cs))
        j += len(cs)
    out = []
    for i, (row, steps) in enumerate(items):
        final = scores[j + i]
        rates[i][-1] = 1.0 if final is not None and final >= CORRECT else 0.0
        cut = threshold if threshold is not None else 1e-9
        labels = [int(r >= cut) for r in rates[i]]
        out.append({"prompt": list(row["prompt"]), "steps": steps, "labels": labels, "rates": rates[i],
                    **{k: v for k, v in row.items() if k != "prompt"}})
    return out


def make_engine(kind: str, model_dir: str, max_model_len: int = 1024, seed: int = 0) -> Any:
    """The sampling engine for data building: "vllm" (fast) or "hf" (transformers, no vLLM needed)."""
    from twinloop.train.common import load_tokenizer

    if kind == "vllm":
        from twinloop.infer.vllm_engine import VLLMEngine

        engine = VLLMEngine(model_dir, dtype="float32", max_model_len=max_model_len, seed=seed)
        engine.tokenizer = load_tokenizer(model_dir)  # prompts are encoded here; see load_tokenizer
        return engine
    if kind == "hf":
        from twinloop.infer.hf_engine import HFEngine

        return HFEngine(model_dir, tokenizer=load_tokenizer(model_dir), dtype="float32")
    raise ValueError(f"engine must be 'vllm' or 'hf'; got {kind!r}")


def write_reward_bundle(folder: str, reward: Any, kind: str, method: str, base_model: str | None,
                        settings: dict[str, Any], weights: str = "full") -> None:
    """``twinloop_reward.json`` (the one bundle format: which Reward class loads the folder, with which settings)
    + model card."""
    from twinloop.checkpoints.spec import write_trainer_bundle
    from twinloop.train.checkpointing import write_model_card

    write_trainer_bundle(folder, reward, kind, weights=weights, base_model=base_model)
    write_model_card(folder, method=method, base_model=base_model, step=int(settings.get("global_step", 0)),
                     settings=settings)


def run_rm_trainer(name: str, parser_types: tuple, build: Any, train: Any, argv: Sequence[str]) -> int:
    """The shared `main` of the reward-model trainers: parse the recipe (TrlParser), sample the policy's own
    train and held-out data with ``build(script, split, n, engine, verifier, seed)``, free the sampling engine,
    then ``train(script, cfg, train_data, held_out) -> (export_folder, metrics)``."""
    import os

    import torch
    from trl import TrlParser

    from twinloop.build import build_reward

    torch.set_num_threads(int(os.environ.get("TWINLOOP_TORCH_THREADS", "1")))
    argv = list(argv)
    if not torch.cuda.is_available():  # CPU: TRL's bf16 default refuses to start without these
        argv += [f for flag, value in (("--use_cpu", "true"), ("--bf16", "false")) if flag not in argv
                 for f in (flag, value)]
    script, cfg = TrlParser(parser_types).parse_args_and_config(argv)
    if not os.path.isdir(script.policy_dir):
        raise FileNotFoundError(f"policy folder not found: {script.policy_dir}")
    verifier = build_reward(script.verifier)
    engine = make_engine(script.engine, script.policy_dir, seed=cfg.seed)
    train_data = build(script, "train", script.train_problems, engine, verifier, cfg.seed)
    held_out = build(script, "dev", script.eval_problems, engine, verifier, cfg.seed + 1)
    if hasattr(engine, "close"):
        engine.close()
    export, metrics = train(script, cfg, train_data, held_out)
    print(f"[{name}] exported {export}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in metrics.items()))
    return 0
