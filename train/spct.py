"""SPCT trainer (DeepSeek-GRM, arXiv 2504.02495): a generative reward model on the arithmetic task, then its meta RM.

    python -m twinloop.train.spct --config recipes/arith/spct.yaml [--phase sft ...]
    twinloop train spct --config recipes/arith/spct.yaml

Phases (``--phase all`` runs them in order; each reads the previous one's outputs under ``output_dir``):

1. ``data``: the policy samples each train query; items (one query with 2-4 responses and exactly one best,
   plus a single response labelled 0/1) come from the exact step checker (``twinloop.train.spct_data``); train and
   test are disjoint by query; ``data/report.json`` holds the split sizes and correct shares.
2. ``sft``: warm-up with TRL's SFTTrainer on template judgments written from ground truth (a tiny model cannot
   write the three-line format unprompted).
3. ``rft``: rejective fine-tuning: N_RFT non-hinted samples per item, incorrect ones dropped, items whose samples
   are all correct dropped, one hinted attempt ("The best response is: Response j") kept when correct; SFT on
   what was kept, trained under the plain prompt (the GRM never sees a hint at inference [check]).
4. ``rl``: rule-based online RL through twinloop's GPPO trainer (``rl_clip_mode='ppo'``, the default: plain
   GRPO, i.e. the hard clip without dual clip or zero-std group filter; ``'gppo'``: Klear's loss and defaults),
   reward +1 when Eq. 10 holds else -1 (``SPCTTrainingReward``), ``rl_generations`` = 4 samples per prompt, KL
   β against the RFT model (0.08, the paper's 27B value [check]); items the starting model already gets right in
   every sample are dropped.
5. ``meta``: a scalar classifier (the policy with a fresh one-logit head) trained with BCE on (GRM prompt,
   judgment) -> Eq. 10 correctness, over judgments sampled from the trained GRM; exported as the ``meta`` kind.
6. ``export``: the GRM bundle (``grm`` kind, LoRA weights) carrying its meta RM, written where the recipe's
   ``reward`` spec points (``grm:FOLDER``), so ``twinloop eval`` with ``grm_vote``/``grm_meta_vote`` reads it.

**The GRM** (``judge``): ``'separate'`` (the default) is a separate tiny model, a copy of the policy whose
tokenizer reads the GRM template's fixed text and the judgment's phrases as single tokens
(``twinloop.train.spct_judge``), fully fine-tuned and served by its own engine; ``'lora'`` is a LoRA on the
policy, sampled through the policy's engine with ``Request(lora=adapter)``. Why separate: the policy's byte-level
vocabulary spells English letter by letter, so the fixed template alone is ~550 of its 1024 positions, a
best-of-8 GRM prompt (~1230 tokens) does not fit at all, and a LoRA warm-up on ~900-token sequences did not learn
the three-line format (0% parseable after one epoch); with the phrase tokens the best-of-8 prompt is ~410
tokens and a judgment ~130. Either way every judge sample goes through an Engine, as for every model judge, and
an item is built only when its prompt plus its template judgment fit ``max_length`` (a multi item drops
responses down to 2 first; counted in the report). The meta RM is a separate full fine-tune with a classifier
head on the judge's base (it must read the judgment, so it cannot share the judge's LM head). The meta RM
trainer is ``twinloop.train.spct_meta``; held-out measurement ``twinloop.train.spct_eval``.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinloop.rewards.generative import BINARY_RANGE, SCORE_RANGE, format_grm_prompt, parse_scores
from twinloop.train.spct_data import (
    Item,
    correct_in_shown_order,
    drop_always_right,
    items_for_query,
    rft_rates,
    rft_select,
    rl_rows,
    sft_rows,
    shown,
    split_by_query,
    split_report,
    template_judgment,
)

PHASES = ("data", "sft", "rft", "rl", "meta", "export")


@dataclass
class SPCTConfig:
    """Every SPCT knob, one dataclass with a ``phase`` field. Defaults are CPU-sized; [check] marks values
    ALGORITHMS.md does not fix."""

    phase: str = field(default="all", metadata={"help": f"one of {PHASES} or 'all'."})
    policy_dir: str = "checkpoints/tiny-arith-policy"
    task: str = "arith"
    reward_funcs: list[str] = field(default_factory=list, metadata={
        "help": "the recipe's reward spec; 'grm:FOLDER' names where the GRM bundle is exported."})
    output_dir: str = "runs/spct-tiny-arith"
    engine: str = field(default="vllm", metadata={"help": "'vllm' or 'hf' for every sampling call."})
    seed: int = 0
    max_length: int = field(default=1024, metadata={"help": "judge context (the policy's positions)."})
    # data
    train_queries: int = 256
    test_share: float = 0.2
    samples_per_query: int = 8
    sample_temperature: float = 0.7  # as the verifier probe (STACK.md); 1.0 gives few correct samples
    sample_max_tokens: int = 128
    max_responses: int = 4
    # the judge: 'separate' (a copy of the policy with phrase tokens, full fine-tune) or 'lora' (on the policy)
    judge: str = "separate"
    hard_negatives: float = field(default=0.0, metadata={
        "help": "share of train multi items given a one-step hard negative of their best response (STACK.md)."})
    lora_r: int = 16
    lora_alpha: int = 32
    judge_max_tokens: int = 256
    # SFT warm-up and RFT's SFT
    sft_epochs: float = 2.0
    sft_learning_rate: float = 1e-3
    sft_batch_size: int = 8
    rft_epochs: float = 1.0
    rft_learning_rate: float = 3e-4
    n_rft: int = 3
    rft_temperature: float = 1.0  # [check]
    # phase-2 RL
    rl_beta: float = 0.08  # DeepSeek-GRM-27B; 0.002 for 16B [check]
    rl_generations: int = 4
    rl_temperature: float = 1.0  # [check]
    rl_learning_rate: float = 1e-4
    rl_max_steps: int = 20
    rl_prompts_per_step: int = 2
    rl_clip_mode: str = "ppo"
    # meta RM
    meta_k: int = 4
    meta_epochs: float = 2.0
    meta_learning_rate: float = 3e-4
    # export / inference
    voting_k: int = 4
    voting_temperature: float = 0.5  # Eq. 14

    def __post_init__(self) -> None:
        if self.phase != "all" and self.phase not in PHASES:
            raise ValueError(f"phase must be 'all' or one of {PHASES}, got {self.phase!r}")
        if self.judge not in ("separate", "lora"):
            raise ValueError(f"judge must be 'separate' or 'lora', got {self.judge!r}")
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"engine must be 'vllm' or 'hf', got {self.engine!r}")
        if self.max_responses < 2 or self.n_rft < 1 or self.rl_generations < 2:
            raise ValueError("need max_responses >= 2, n_rft >= 1 and rl_generations >= 2")


class Paths:
    """Where each phase writes, under ``output_dir``."""

    def __init__(self, cfg: SPCTConfig) -> None:
        root = Path(cfg.output_dir)
        self.root, self.data = root, root / "data"
        self.sft, self.rft, self.rl = root / "sft", root / "rft", root / "rl"
        self.meta, self.meta_export = root / "meta", root / "meta_export"
        self.judge0 = root / "judge0"  # the separate judge before training: the policy with phrase tokens
        self.bundle = Path(bundle_dir(cfg.reward_funcs, root))

    def adapter(self) -> str | None:
        """The latest trained judge (RL, else RFT, else SFT; a LoRA adapter or a full model), or None."""
        for p in (self.rl, self.rft, self.sft):
            if is_judge(p):
                return str(p)
        return None


def is_judge(folder: str | Path | None) -> bool:
    """A trained judge folder: a LoRA adapter or a full model."""
    return folder is not None and any(Path(folder, f).is_file() for f in ("adapter_config.json", "config.json"))


def bundle_dir(reward_funcs: Sequence[str], root: Path) -> str:
    """The folder the recipe's reward spec names (``grm:FOLDER`` or a bare folder), else ``root/grm``."""
    for spec in reward_funcs or ():
        head = str(spec).partition("(")[0].strip()
        name, colon, rest = head.partition(":")
        if colon and name == "grm" and rest:
            return rest
        if not colon and "/" in head:
            return head
    return str(root / "grm")


def is_main_process() -> bool:
    """Rank 0 of an ``accelerate launch`` (or a plain run): the one process that writes reports."""
    return os.environ.get("RANK", "0") == "0"


def write_json(path: Path, obj: Any) -> None:
    if not is_main_process():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def save_items(path: Path, items: Sequence[Item]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for it in items:
            f.write(json.dumps(it.to_json()) + "\n")


def load_items(path: Path) -> list[Item]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the data phase first")
    return [Item(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ engine
def make_engine(cfg: SPCTConfig) -> Any:
    """The policy's engine with LoRA enabled: it samples the policy and, through ``Request(lora=...)``, the judge."""
    from twinloop.train.common import load_tokenizer

    tok = load_tokenizer(cfg.policy_dir)
    if cfg.engine == "hf":
        from twinloop.infer.hf_engine import HFEngine

        return HFEngine(cfg.policy_dir, tokenizer=tok, dtype="float32")
    from twinloop.infer.vllm_engine import VLLMEngine

    engine = VLLMEngine(cfg.policy_dir, dtype="float32", max_model_len=cfg.max_length, seed=cfg.seed,
                        enable_lora=True, max_lora_rank=cfg.lora_r, max_loras=1)
    engine.tokenizer = tok  # see load_tokenizer: the folder's own BPE
    return engine


def judge_engine(cfg: SPCTConfig, judge: str | None, policy_engine: Any = None) -> tuple[Any, str | None]:
    """(engine, lora) that samples ``judge``: the policy's engine with the adapter, or the separate model's own
    engine (``judge`` None with a LoRA judge: the bare policy)."""
    if cfg.judge == "lora" or judge is None:
        return (policy_engine if policy_engine is not None else make_engine(cfg)), judge
    if cfg.engine == "hf":
        from twinloop.infer.hf_engine import HFEngine
        from twinloop.train.common import load_tokenizer

        return HFEngine(judge, tokenizer=load_tokenizer(judge), dtype="float32"), None
    from twinloop.infer.vllm_engine import VLLMEngine
    from twinloop.train.common import load_tokenizer

    engine = VLLMEngine(judge, dtype="float32", max_model_len=cfg.max_length, seed=cfg.seed)
    engine.tokenizer = load_tokenizer(judge)  # as make_engine: the folder's own BPE
    return engine, None


def judge_tokenizer(cfg: SPCTConfig, paths: Paths, policy_tok: Any) -> Any:
    """The tokenizer the judge reads with (the separate judge's, built here when missing)."""
    if cfg.judge == "lora":
        return policy_tok
    from twinloop.train.common import load_tokenizer
    from twinloop.train.spct_judge import build_judge_model

    if is_main_process() and not (paths.judge0 / "config.json").is_file():
        build_judge_model(cfg.policy_dir, paths.judge0)
    return load_tokenizer(str(paths.judge0))


def token_fits(tok: Any, max_length: int, margin: int = 8):
    """``fits(item)``: the item's GRM prompt (chat template) plus its template judgment fit the judge context."""
    def fits(item: Item) -> bool:
        prompt = format_grm_prompt(item.query, item.responses, binary=item.binary)
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True)
        n_prompt = len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)
        judgment = template_judgment(item.expression, item.responses, item.rewards)
        return n_prompt + len(tok(judgment, add_special_tokens=False).input_ids) + margin <= max_length

    return fits


def sample_judges(engine: Any, adapter: str | None, prompts: Sequence[str], n: int, temperature: float,
                  max_tokens: int, seed: int) -> list[list[str]]:
    """``n`` judge samples per GRM prompt, one engine call."""
    from twinloop.contracts import Request, SamplingConfig

    if not prompts:
        return []
    results = engine.generate([Request(messages=[{"role": "user", "content": p}], lora=adapter) for p in prompts],
                              SamplingConfig(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed))
    return [[c.text for c in r.completions] for r in results]


# ------------------------------------------------------------------------------------------------ phases
def run_data(cfg: SPCTConfig, engine: Any, paths: Paths) -> dict[str, Any]:
    """Policy samples on train queries -> items -> query-disjoint split; writes items and the report."""
    from twinloop.contracts import Request, SamplingConfig
    from twinloop.tasks import build_task

    rows = build_task(cfg.task).load("train", n=cfg.train_queries, seed=cfg.seed)
    results = engine.generate([Request(messages=list(r["prompt"])) for r in rows],
                              SamplingConfig(n=cfg.samples_per_query, temperature=cfg.sample_temperature,
                                             max_tokens=cfg.sample_max_tokens, seed=cfg.seed))
    fits = token_fits(judge_tokenizer(cfg, paths, engine.tokenizer), cfg.max_length)
    rng = random.Random(cfg.seed)
    items, missing = [], 0
    for row, res in zip(rows, results):
        got = items_for_query(row["prompt"][-1]["content"], row["expression"], [c.text for c in res.completions],
                              rng, cfg.max_responses, fits)
        missing += 2 - len(got)  # a query gives a multi and a single item unless one did not fit or had no pair
        items += got
    train, test = split_by_query(items, cfg.test_share, cfg.seed)
    hard = add_hard_negatives(train, cfg.hard_negatives, fits, random.Random(cfg.seed + 5))
    report = {**split_report(train, test), "queries_sampled": len(rows), "items_not_built": missing,
              "samples_per_query": cfg.samples_per_query, "train_hard_negatives": hard}
    save_items(paths.data / "train.jsonl", train)
    save_items(paths.data / "test.jsonl", test)
    write_json(paths.data / "report.json", report)
    return report


def add_hard_negatives(items: list[Item], share: float, fits: Any, rng: random.Random) -> int:
    """In place: a ``share`` of the multi items get one non-best response replaced by a one-step change of the
    best response (kept only when it scores strictly below the best and still fits); returns how many."""
    from twinloop.train.spct_data import truth_reward
    from twinloop.train.spct_judge import one_step_negative

    done = 0
    for i, it in enumerate(items):
        if it.binary or rng.random() >= share:
            continue
        neg = one_step_negative(it.responses[it.best], rng)
        if neg is None or neg in it.responses:
            continue
        r = truth_reward(it.expression, neg)
        if r >= it.rewards[it.best]:
            continue
        slot = rng.choice([k for k in range(len(it.responses)) if k != it.best])
        new = Item(**{**it.to_json(), "responses": list(it.responses), "rewards": list(it.rewards),
                      "meta": {**it.meta, "hard_negative": slot}})
        new.responses[slot], new.rewards[slot] = neg, r
        if fits(new):
            items[i] = new
            done += 1
    return done


def train_sft(cfg: SPCTConfig, rows: Sequence[dict[str, Any]], out: Path, start_adapter: str | None,
              epochs: float, learning_rate: float) -> str:
    """LoRA SFT with TRL's SFTTrainer (loss on the judgment only): a fresh adapter, or ``start_adapter`` trained on."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    from twinloop.train.common import load_tokenizer

    if not rows:
        raise ValueError(f"no SFT rows for {out.name}: nothing to train on")
    peft_config = None
    if cfg.judge == "separate":  # full fine-tune of the judge model (judge0 at the warm-up)
        start = start_adapter or str(Path(cfg.output_dir) / "judge0")
        tok = load_tokenizer(start)
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    elif start_adapter:
        tok = load_tokenizer(cfg.policy_dir)
        model = AutoModelForCausalLM.from_pretrained(cfg.policy_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, start_adapter, is_trainable=True)
    else:
        tok = load_tokenizer(cfg.policy_dir)
        model = AutoModelForCausalLM.from_pretrained(cfg.policy_dir, dtype=torch.float32)
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=str(out), num_train_epochs=epochs, learning_rate=learning_rate,
                     per_device_train_batch_size=cfg.sft_batch_size, max_length=cfg.max_length,
                     completion_only_loss=True, lr_scheduler_type="cosine", logging_steps=10,
                     save_strategy="no", report_to="none", seed=cfg.seed, bf16=False,
                     use_cpu=not torch.cuda.is_available())
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(list(rows)), processing_class=tok,
                         peft_config=peft_config)
    trainer.train()
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    write_json(out / "train_log.json", trainer.state.log_history)
    return str(out)


def run_rft(cfg: SPCTConfig, engine: Any, items: Sequence[Item], start_adapter: str, out: Path) -> dict[str, Any]:
    """Phase 1: sample, filter (``rft_select``), SFT on the kept judgments; writes ``rft/report.json``."""
    rng = random.Random(cfg.seed + 1)
    shows = [shown(it, rng) for it in items]  # one presentation per item, shared by its non-hinted and hinted tries
    lora = start_adapter if cfg.judge == "lora" else None
    nonhinted = sample_judges(engine, lora, [p for _, p, _ in shows], cfg.n_rft, cfg.rft_temperature,
                              cfg.judge_max_tokens, cfg.seed)
    flags = [[_correct(text, order, it) for text in texts] for texts, (order, _, _), it in zip(nonhinted, shows, items)]
    easy = [rft_select(f, None).too_easy for f in flags]
    hint_idx = [i for i, it in enumerate(items) if not easy[i] and not it.binary]  # a hint says nothing for n = 1
    hinted_prompts = [format_grm_prompt(items[i].query, [items[i].responses[k] for k in shows[i][0]],
                                        hint=shows[i][0].index(items[i].best) + 1) for i in hint_idx]
    hinted = dict(zip(hint_idx, (t[0] for t in sample_judges(engine, lora, hinted_prompts, 1,
                                                             cfg.rft_temperature, cfg.judge_max_tokens, cfg.seed + 7))))
    rows, choices = [], []
    for i, (it, (order, prompt, _)) in enumerate(zip(items, shows)):
        h = hinted.get(i)
        choice = rft_select(flags[i], None if h is None else _correct(h, order, it))
        choices.append(choice)
        kept = [nonhinted[i][k] for k in choice.keep] + ([h] if choice.keep_hinted else [])
        rows += [{"prompt": [{"role": "user", "content": prompt}],
                  "completion": [{"role": "assistant", "content": t}]} for t in kept]
    report = rft_rates(choices, cfg.n_rft, len(hint_idx))
    report["sft_rows"] = len(rows)
    report["parseable_nonhinted"] = _parse_share([t for ts in nonhinted for t in ts], items, cfg.n_rft)
    write_json(out / "report.json", report)
    with open(out / "kept.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if rows:
        train_sft(cfg, rows, out, start_adapter, cfg.rft_epochs, cfg.rft_learning_rate)
    return report


def _correct(text: str, order: Sequence[int], item: Item) -> bool:
    scores = parse_scores(text, len(order), BINARY_RANGE if item.binary else SCORE_RANGE)
    return correct_in_shown_order(scores, order, item)


def _parse_share(texts: Sequence[str], items: Sequence[Item], per_item: int) -> float | None:
    if not texts:
        return None
    ok = sum(parse_scores(t, len(items[i // per_item].responses),
                          BINARY_RANGE if items[i // per_item].binary else SCORE_RANGE) is not None
             for i, t in enumerate(texts))
    return ok / len(texts)


def run_rl(cfg: SPCTConfig, engine: Any, items: Sequence[Item], start_adapter: str, out: Path) -> dict[str, Any]:
    """Phase 2: GRPO (twinloop's GPPO trainer) with the ±1 Eq. 10 reward, KL against the starting adapter. Under
    ``accelerate launch`` every process samples the same seeded pre-filter (keep the sampling engine
    deterministic: ``engine: hf``) and only rank 0 writes."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from twinloop.rewards.generative import SPCTTrainingReward
    from twinloop.train.common import load_tokenizer
    from twinloop.train.gppo import GPPOConfig, GPPOTrainer

    rows = rl_rows(items, cfg.seed + 2)
    lora = start_adapter if cfg.judge == "lora" else None
    texts = sample_judges(engine, lora, [r["prompt"][0]["content"] for r in rows], cfg.rl_generations,
                          cfg.rl_temperature, cfg.judge_max_tokens, cfg.seed + 3)
    reward = SPCTTrainingReward()
    flags = [[s > 0 for s in reward([r["prompt"]] * len(ts), ts, rewards=[r["rewards"]] * len(ts))]
             for r, ts in zip(rows, texts)]
    kept = drop_always_right(rows, flags)
    report = {"items": len(rows), "dropped_always_right": len(rows) - len(kept),
              "start_eq10_rate": sum(map(sum, flags)) / max(1, sum(map(len, flags)))}
    write_json(out / "report.json", report)
    if not kept:
        raise ValueError("phase 2 has no items left: the starting GRM gets every item right in every sample")
    if cfg.judge == "separate":  # full fine-tune; TRL loads the KL reference from the same folder
        tok = load_tokenizer(start_adapter)
        model = start_adapter
    else:
        tok = load_tokenizer(cfg.policy_dir)
        base = AutoModelForCausalLM.from_pretrained(cfg.policy_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, start_adapter, is_trainable=True)
    args = GPPOConfig(output_dir=str(out), beta=cfg.rl_beta, num_generations=cfg.rl_generations,
                      max_completion_length=cfg.judge_max_tokens, temperature=cfg.rl_temperature,
                      per_device_train_batch_size=cfg.rl_generations * cfg.rl_prompts_per_step,
                      learning_rate=cfg.rl_learning_rate, max_steps=cfg.rl_max_steps, loss_type="dapo",
                      clip_mode=cfg.rl_clip_mode, positive_loss_coeff=0.0, logging_steps=1, report_to="none",
                      **({"dual_clip_c": None, "filter_zero_std_groups": False} if cfg.rl_clip_mode == "ppo" else {}),
                      save_strategy="no", seed=cfg.seed, bf16=False, use_cpu=not torch.cuda.is_available(),
                      **({"model_init_kwargs": {"dtype": torch.float32}} if isinstance(model, str) else {}))
    trainer = GPPOTrainer(model=model, reward_funcs=[reward], args=args,
                          train_dataset=Dataset.from_list(kept), processing_class=tok)
    trainer.train()
    trainer.save_model(str(out))
    if trainer.args.should_save:
        tok.save_pretrained(str(out))
    write_json(out / "train_log.json", trainer.state.log_history)
    report["steps"] = trainer.state.global_step
    write_json(out / "report.json", report)
    return report


def run_export(cfg: SPCTConfig, engine: Any, paths: Paths) -> Path:
    """The GRM bundle (LoRA on the policy) at the recipe's reward folder, carrying the meta RM when trained."""
    from twinloop.checkpoints.export import export
    from twinloop.rewards.generative import GenerativeReward

    adapter = paths.adapter()
    if adapter is None:
        raise FileNotFoundError(f"no trained GRM adapter under {paths.root}: run the sft phase first")
    grm = GenerativeReward(engine, lora=adapter if cfg.judge == "lora" else None, k=cfg.voting_k,
                           temperature=cfg.voting_temperature,
                           max_tokens=cfg.judge_max_tokens, mode="group", seed=cfg.seed)
    meta = paths.meta_export if (paths.meta_export / "twinloop_reward.json").is_file() else None
    return export(adapter, paths.bundle, "grm", reward=grm, meta_rm=meta, base_model=cfg.policy_dir,
                  method="SPCT", overwrite=True)


def run_phases(cfg: SPCTConfig) -> dict[str, Any]:
    """Run ``cfg.phase`` (or every phase in order); returns each phase's report."""
    paths = Paths(cfg)
    phases = PHASES if cfg.phase == "all" else (cfg.phase,)
    lora = cfg.judge == "lora"
    # a LoRA judge shares the policy's engine; a separate judge gets an engine per phase on the model it samples
    engine = make_engine(cfg) if lora and set(phases) - {"sft"} or "data" in phases else None
    done: dict[str, Any] = {}
    try:
        for phase in phases:
            start = time.perf_counter()
            if phase == "data":
                done[phase] = run_data(cfg, engine, paths)
                done[phase]["seconds"] = round(time.perf_counter() - start, 1)
                print(f"[spct] data: {json.dumps(done[phase])}", flush=True)
                if not lora:
                    _close(engine)
                    engine = None
                continue
            train = load_items(paths.data / "train.jsonl")
            if not lora and phase in ("rft", "rl", "meta"):
                sampled = {"rft": paths.sft, "rl": paths.rft if is_judge(paths.rft) else paths.sft,
                           "meta": paths.adapter()}[phase]
                _close(engine)
                engine = judge_engine(cfg, _need(sampled))[0]
            if phase == "sft":
                train_sft(cfg, sft_rows(train, cfg.seed), paths.sft, None, cfg.sft_epochs, cfg.sft_learning_rate)
                done[phase] = {"rows": len(train)}
            elif phase == "rft":
                done[phase] = run_rft(cfg, engine, train, _need(paths.sft), paths.rft)
            elif phase == "rl":
                first = str(paths.rft) if is_judge(paths.rft) else _need(paths.sft)
                done[phase] = run_rl(cfg, engine, train, first, paths.rl)
            elif phase == "meta":
                from twinloop.train.spct_meta import run_meta

                done[phase] = run_meta(cfg, engine, train, _need(paths.adapter()), paths)
            else:
                done[phase] = {"bundle": str(run_export(cfg, engine, paths))}
            done[phase]["seconds"] = round(time.perf_counter() - start, 1)
            print(f"[spct] {phase}: {json.dumps(done[phase])}", flush=True)
    finally:
        _close(engine)
    return done


def _close(engine: Any) -> None:
    if engine is not None and hasattr(engine, "close"):
        engine.close()


def _need(adapter: str | Path | None) -> str:
    if not is_judge(adapter):
        raise FileNotFoundError(f"GRM judge {adapter} not found: run the earlier phase first")
    return str(adapter)


def main(argv: Sequence[str] | None = None) -> int:
    import torch
    from trl import TrlParser
    from twinloop.train.common import with_flat_recipe

    torch.set_num_threads(int(os.environ.get("TWINLOOP_TORCH_THREADS", "1")))
    argv = with_flat_recipe(list(sys.argv[1:] if argv is None else argv), "train")
    (cfg,) = TrlParser((SPCTConfig,)).parse_args_and_config(argv)
    if not os.path.isdir(cfg.policy_dir):
        raise FileNotFoundError(f"policy folder not found: {cfg.policy_dir}")
    run_phases(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
