"""Process reward models: step splitting, per-step scores, aggregation.

Steps are split by a configurable string delimiter (default a blank line) or a token id. Per-step scores
(probability the step is good, in [0, 1]) come from
- ``TokenClassifierPRM``: a token-classification head read at each step's end (the step tag), through
  transformers (``AutoModelForTokenClassification``) or an Engine's ``token_classify`` (vLLM pooling); or
- ``YesNoProbePRM``: an LM asked whether the latest step is correct, P("Yes") from a forced-choice probe
  through ``engine.next_token_logprobs``, renormalised over the two answers.
Both reduce to the TRL reward callable by aggregating the step scores (last / min / prod / mean).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from twinloop.rewards.base import RewardBase, message_text

AGGREGATIONS = ("last", "min", "prod", "mean")
STEP_DELIMITER = "\n\n"  # the one step delimiter: a blank line


def split_steps(text: str, delimiter: str = STEP_DELIMITER, strip: bool = False) -> list[str]:
    """Non-blank steps of a solution, in order, without the delimiter (``strip``: without surrounding
    whitespace either, for checkers that parse the step; PRMs keep the text as the model wrote it)."""
    if not delimiter:
        raise ValueError("the step delimiter must be a non-empty string")
    return [s.strip() if strip else s for s in text.split(delimiter) if s.strip()]


def split_step_ids(ids: Sequence[int], delimiter_id: int) -> list[list[int]]:
    """Token ids split at a delimiter token id (dropped); empty steps are skipped."""
    steps, current = [], []
    for t in ids:
        if t == delimiter_id:
            if current:
                steps.append(current)
            current = []
        else:
            current.append(int(t))
    if current:
        steps.append(current)
    return steps


def aggregate(step_scores: Sequence[float], how: str = "last") -> float:
    """One solution score from its step scores: the last, the minimum, the product or the mean. The one
    step-score aggregation for PRMs, the exact arithmetic checker and step-level search; an empty list (a
    solution with no step yet) scores 0.0."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    return float(sum(step_scores) / len(step_scores))


def call_by_steps(reward: Any, prompts: Sequence[Any], completions: Sequence[Any], columns: dict[str, Any]
                  ) -> list[float | None]:
    """A process reward's TRL call from its ``step_scores``: split each completion at ``reward.delimiter``,
    score the non-empty ones in one call, aggregate with ``reward.aggregation``; a completion with no step
    scores ``reward.unparseable_score`` and is counted."""
    reward.usage.calls += 1
    reward.usage.items += len(completions)
    steps = [split_steps(message_text(c), reward.delimiter) for c in completions]
    keep = [i for i, s in enumerate(steps) if s]
    rows = reward.step_scores([prompts[i] for i in keep], [steps[i] for i in keep], **columns)
    out: list[float | None] = [reward.unparseable_score] * len(completions)
    reward.usage.unparseable += len(completions) - len(keep)
    for i, row in zip(keep, rows):
        out[i] = aggregate(row, reward.aggregation)
    return out


def encode_prompt(tokenizer: Any, prompt: Any) -> list[int]:
    """Token ids of a text prompt (as-is) or a chat prompt (chat template with the generation prompt)."""
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
        ids = tokenizer.apply_chat_template(list(prompt), tokenize=True, add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]
    return [int(t) for t in tokenizer(message_text(prompt), add_special_tokens=False).input_ids]


def text_ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=False).input_ids]


def build_step_inputs(tokenizer: Any, prompt: Any, steps: Sequence[str], tag_ids: Sequence[int]
                      ) -> tuple[list[int], list[int]]:
    """Prompt ids, then each step's ids followed by the step tag; and the position of each step's last tag
    token, where a token-classification PRM is read. Trainers must build their labels with this too."""
    ids = encode_prompt(tokenizer, prompt)
    positions = []
    for step in steps:
        ids += text_ids(tokenizer, step) + list(tag_ids)
        positions.append(len(ids) - 1)
    return ids, positions


class StepReward(RewardBase):
    """Shared PRM behaviour: split, score steps (subclasses), aggregate.

    ``delimiter`` is a string, or a token id whose decoded text is used to split text. A completion with no
    step gets ``fallback`` (counted in ``usage.unparseable``). The default aggregation "last" follows
    compute-optimal test-time scaling (arXiv 2408.03314), which found it best for PRM-guided search.
    """

    name = "process_reward"

    step_score = ""

    @classmethod
    def export_call(cls, settings: dict[str, Any], tokenizer: Any, **extra: Any) -> dict[str, Any]:
        delim = settings.get("delimiter", STEP_DELIMITER)
        tag_ids = [delim] if isinstance(delim, int) else text_ids(tokenizer, delim)
        return {"step_delimiter": tokenizer.decode(tag_ids) if isinstance(delim, int) else delim,
                "step_token_ids": tag_ids,
                "input": "prompt ids (chat template with generation prompt for chat prompts), then for each step "
                         "its text ids followed by the step tokens",
                "aggregation": settings.get("aggregation", "last"), "no_step_fallback": settings.get("fallback", 0.0),
                "step_score": cls.step_score}

    def __init__(self, tokenizer: Any, delimiter: str | int = STEP_DELIMITER, aggregation: str = "last",
                 fallback: float = 0.0) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.tokenizer, self.aggregation, self.fallback = tokenizer, aggregation, fallback
        if isinstance(delimiter, int):
            self.delimiter_text = tokenizer.decode([delimiter])
            self.tag_ids = [delimiter]
        else:
            self.delimiter_text = delimiter
            self.tag_ids = text_ids(tokenizer, delimiter)
        if not self.delimiter_text or not self.tag_ids:
            raise ValueError(f"step delimiter {delimiter!r} is empty or encodes to no tokens")

    def split(self, completion: Any) -> list[str]:
        return split_steps(message_text(completion), self.delimiter_text)

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
                    ) -> list[list[float]]:
        raise NotImplementedError(f"{type(self).__name__} must define step_scores()")  # abstract base

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        steps = [self.split(c) for c in completions]
        keep = [i for i, s in enumerate(steps) if s]
        scores = self.step_scores([prompts[i] for i in keep], [steps[i] for i in keep])
        out: list[float | None] = [self.fallback] * len(completions)
        self.usage.unparseable += len(completions) - len(keep)
        for i, s in zip(keep, scores):
            out[i] = aggregate(s, self.aggregation)
        return out


def _good_probability(row: Sequence[float]) -> float:
    """P(good) from one position's raw logits: sigmoid for one label, softmax column 1 for two or more."""
    if len(row) == 1:
        x = float(row[0])
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    m = max(row)
    z = sum(math.exp(v - m) for v in row)
    return math.exp(row[1] - m) / z


class TokenClassifierPRM(StepReward):
    """PRM with a token-classification head, read at the step tag after each step.

    Give ``model`` (a transformers ``*ForTokenClassification``; num_labels 1 → sigmoid, 2 → softmax label 1
    is "good") or ``engine`` (an Engine with ``token_classify``, e.g. ``VLLMEngine(dir, runner="pooling")``,
    returning raw logits). ``tokenizer`` defaults to the engine's.
    """

    name = "prm_token_classifier"
    kinds = ("prm",)
    head = "token_classification"
    step_score = ("P(good) read at the last step token of each step: sigmoid of one label, or softmax label 1 "
                  "of two or more")

    def __init__(self, model: Any = None, engine: Any = None, tokenizer: Any = None, **kwargs: Any) -> None:
        if (model is None) == (engine is None):
            raise ValueError("TokenClassifierPRM needs exactly one of model= or engine=")
        tokenizer = tokenizer if tokenizer is not None else getattr(engine, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("TokenClassifierPRM(model=...) also needs tokenizer=")
        super().__init__(tokenizer, **kwargs)
        self.model, self.engine = model, engine

    @classmethod
    def from_pretrained(cls, model_dir: str, **kwargs: Any) -> TokenClassifierPRM:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
        return cls(model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), **kwargs)

    def _logits(self, sequences: list[list[int]]) -> list[list[list[float]]]:
        if self.engine is not None:
            return self.engine.token_classify(sequences)
        import torch

        out = []
        with torch.no_grad():
            for ids in sequences:
                out.append(self.model(input_ids=torch.tensor([ids])).logits[0].float().tolist())
        return out

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
                    ) -> list[list[float]]:
        built = [build_step_inputs(self.tokenizer, p, s, self.tag_ids) for p, s in zip(prompts, steps)]
        if not built:
            return []
        logits = self._logits([ids for ids, _ in built])
        self.usage.model_calls += len(built)
        self.usage.input_tokens += sum(len(ids) for ids, _ in built)
        out = []
        for (ids, positions), rows in zip(built, logits):
            if len(rows) != len(ids) and len(rows) == len(positions):
                positions = list(range(len(rows)))  # a step-tag pooler (vLLM's native PRM) returns tag rows only
            out.append([_good_probability(rows[p]) for p in positions])
        return out


PROBE_QUESTION = "\nIs the last step correct? Answer Yes or No.\n"


class YesNoProbePRM(StepReward):
    """PRM from an LM judged step by step: P("Yes") after ``prompt + steps[:k+1] + question``.

    One forced-choice probe per step through ``engine.next_token_logprobs`` with the first tokens of
    ``yes``/``no``, renormalised over the two. The probe wording is a configurable default [check]. If both
    logprobs are -inf/NaN the step gets ½ (counted as unparseable).
    """

    name = "prm_yes_no_probe"

    kinds = ("prm",)
    head = "causal_lm"
    sends_chat = False

    @classmethod
    def export_call(cls, settings: dict[str, Any], tokenizer: Any, **extra: Any) -> dict[str, Any]:
        q, yes, no = (settings.get(k, d) for k, d in (("question", PROBE_QUESTION), ("yes", "Yes"), ("no", "No")))
        return {**super().export_call(settings, tokenizer, **extra),
                "step_score": f"P({yes!r}) over {{{yes!r}, {no!r}}} for the next token after prompt + steps so far "
                              f"+ {q!r}"}

    def __init__(self, engine: Any, question: str = PROBE_QUESTION, yes: str = "Yes", no: str = "No",
                 lora: str | None = None, **kwargs: Any) -> None:
        super().__init__(engine.tokenizer, **kwargs)
        self.engine, self.question, self.lora = engine, question, lora
        self.yes_id, self.no_id = text_ids(self.tokenizer, yes)[0], text_ids(self.tokenizer, no)[0]
        if self.yes_id == self.no_id:
            raise ValueError(f"{yes!r} and {no!r} start with the same token; the probe cannot tell them apart")

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any
                    ) -> list[list[float]]:
        question = text_ids(self.tokenizer, self.question)
        prefixes, owners = [], []
        for i, (p, s) in enumerate(zip(prompts, steps)):
            ids, positions = build_step_inputs(self.tokenizer, p, s, self.tag_ids)
            for end in positions:
                prefixes.append(ids[: end + 1] + question)
                owners.append(i)
        out: list[list[float]] = [[] for _ in prompts]
        if not prefixes:
            return out
        logprobs = self.engine.next_token_logprobs(prefixes, [self.yes_id, self.no_id], lora=self.lora)
        self.usage.model_calls += len(prefixes)
        self.usage.input_tokens += sum(len(p) for p in prefixes)
        for i, (lp_yes, lp_no) in zip(owners, logprobs):
            p_yes = two_way_probability(lp_yes, lp_no)
            if p_yes is None:
                self.usage.unparseable += 1
                p_yes = 0.5
            out[i].append(p_yes)
        return out


def two_way_probability(lp_a: float, lp_b: float) -> float | None:
    """P(a) over {a, b} from two full-vocabulary logprobs (``renormalize``); None when neither is finite."""
    from twinloop.contracts import renormalize

    vals = [x if x is not None and math.isfinite(x) else -math.inf for x in (lp_a, lp_b)]
    if max(vals) == -math.inf:
        return None
    return math.exp(renormalize(vals)[0])
