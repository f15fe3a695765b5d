"""SPCT generative reward model (DeepSeek-GRM, arXiv 2504.02495): template, parser, Eq. 10, voting@k.

The GRM reads a query and n responses listed as ``[The Begin of Response i] … [The End of Response i]`` and
writes three lines: ``Specific Criteria: …``, ``Analysis: …``, ``Scores: \\boxed{s1, s2, …}`` (integers 1-10,
or 0/1 for a single response with a verifiable label). Parsing takes the last ``\\boxed{…}``; a wrong count
or an item that is not an in-range integer makes the judgment invalid (and incorrect), never an exception.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twinloop.rewards.answers import last_boxed  # noqa: F401  (the one definition; tests import it here)
from twinloop.rewards.base import RewardBase, column, message_text

SCORE_RANGE = (1, 10)
BINARY_RANGE = (0, 1)  # single-response data with a verifiable label

GRM_TEMPLATE = (
    "You are an expert judge of responses. Given a query and {n} response(s), first state the specific "
    "criteria that matter for this query, with their weights; then analyse each response against them; then "
    "give each response an overall score.\n"
    "{scale}\n\n"
    "Output exactly three lines:\n"
    "Specific Criteria: <criteria and their weights>\n"
    "Analysis: <critique of each response>\n"
    "Scores: \\boxed{{{example}}} <one score per response, in order, separated by commas>\n\n"
    "[Query]\n{query}\n[End of Query]\n\n"
    "{responses}"
    "{hint}"
)
_SCALE_1_10 = "Each score is an integer from 1 (worst) to 10 (best)."
_SCALE_BINARY = "The score is 1 if the response is correct and 0 if it is not."
HINT = "\n\nThe best response is: Response {j}"


def format_grm_prompt(query: str, responses: Sequence[str], binary: bool = False, hint: int | None = None) -> str:
    """The SPCT judging prompt for ``responses`` in the given order. ``hint`` (1-based) adds the RFT hint."""
    n = len(responses)
    if n < 1:
        raise ValueError("a GRM prompt needs at least one response")
    if binary and n != 1:
        raise ValueError("binary (0/1) scores are for single-response verifiable data only")
    blocks = "".join(f"[The Begin of Response {i}]\n{r}\n[The End of Response {i}]\n\n"
                     for i, r in enumerate(responses, start=1))
    return GRM_TEMPLATE.format(
        n=n, scale=_SCALE_BINARY if binary else _SCALE_1_10, example=", ".join(["x"] * n), query=query,
        responses=blocks, hint="" if hint is None else HINT.format(j=hint),
    )


_INT = re.compile(r"[+-]?\d{1,6}")


def parse_scores(text: Any, n: int, score_range: tuple[int, int] = SCORE_RANGE) -> list[int] | None:
    """The n integer scores in the last ``\\boxed{…}``, or None if the judgment is invalid."""
    if not isinstance(text, str):
        return None
    inner = last_boxed(text)
    if inner is None:
        return None
    items = [s.strip() for s in inner.split(",")]
    if len(items) != n or not all(_INT.fullmatch(s) for s in items):
        return None
    scores = [int(s) for s in items]
    lo, hi = score_range
    return scores if all(lo <= s <= hi for s in scores) else None


def _line(text: str, label: str) -> str:
    m = re.search(rf"{label}:\s*(.*)", text)
    return m.group(1).strip() if m else ""


@dataclass
class Judgment:
    """One GRM sample. ``scores`` are in the caller's response order (un-permuted); None if invalid."""

    scores: list[int] | None
    text: str
    order: list[int] = field(default_factory=list)  # order[p] = index of the response shown at position p

    @property
    def principles(self) -> str:
        return _line(self.text, "Specific Criteria")

    @property
    def critique(self) -> str:
        return _line(self.text, "Analysis")


def judgment_correct(scores: Sequence[int] | None, rewards: Sequence[float]) -> bool:
    """Eq. 10. n ≥ 2: the unique ground-truth best j must get a strictly higher score than every other
    response (ties fail). n = 1: the score must equal the label. Invalid (None) judgments are incorrect."""
    n = len(rewards)
    if n < 1:
        raise ValueError("Eq. 10 needs at least one ground-truth reward")
    if n >= 2:
        best = max(rewards)
        if sum(r == best for r in rewards) != 1:
            raise ValueError(f"Eq. 10 needs exactly one best response, got rewards {list(rewards)}")
    if scores is None or len(scores) != n:
        return False
    if n == 1:
        return scores[0] == rewards[0]
    j = max(range(n), key=lambda i: rewards[i])
    return all(scores[j] > scores[i] for i in range(n) if i != j)


def spct_reward(scores: Sequence[int] | None, rewards: Sequence[float]) -> float:
    """Phase-2 rule-based RL reward: +1 if Eq. 10 holds, else -1."""
    return 1.0 if judgment_correct(scores, rewards) else -1.0


def unpermute(scores: Sequence[int], order: Sequence[int]) -> list[int]:
    """Scores read in shown order back to the original order (position p showed response order[p])."""
    out = [0] * len(order)
    for p, idx in enumerate(order):
        out[idx] = scores[p]
    return out


def vote(score_lists: Sequence[Sequence[int] | None]) -> list[int] | None:
    """Voting@k (Eq. 14): S*_i = Σ_k S_{i,k} over the valid samples; None if none is valid."""
    valid = [s for s in score_lists if s is not None]
    if not valid:
        return None
    return [sum(col) for col in zip(*valid)]


def meta_guided_vote(score_lists: Sequence[Sequence[int] | None], meta_scores: Sequence[float],
                     k_meta: int | None = None) -> list[int] | None:
    """Meta-RM-guided voting: keep the ``k_meta`` valid samples the meta RM rates highest and sum those.

    ``k_meta`` defaults to max(1, k // 2) of the k samples ([check]: ALGORITHMS.md marks the default
    unconfirmed). Invalid samples never take a slot.
    """
    if len(score_lists) != len(meta_scores):
        raise ValueError(f"{len(score_lists)} judgments but {len(meta_scores)} meta scores")
    keep = max(1, len(score_lists) // 2) if k_meta is None else k_meta
    if keep < 1:
        raise ValueError(f"k_meta must be >= 1, got {keep}")
    ranked = sorted((i for i, s in enumerate(score_lists) if s is not None), key=lambda i: -meta_scores[i])
    return vote([score_lists[i] for i in ranked[:keep]])


@dataclass
class Vote:
    """Voting@k outcome: summed scores S*, the picked response (argmax, first on ties) and the samples."""

    totals: list[int] | None
    best: int | None
    judgments: list[Judgment]
    used: int = 0  # judgments summed into totals

    @property
    def mean_scores(self) -> list[float] | None:
        return None if self.totals is None else [t / self.used for t in self.totals]


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda i: (xs[i], -i))


class GenerativeReward(RewardBase):
    """An SPCT GRM on any Engine (the policy's own base model through ``lora``, or a separate model).

    ``vote(query, responses, k)`` samples k judgments at ``temperature`` (0.5 per Eq. 14), each with its own
    shuffled response order, un-permutes the scores and sums them; with ``meta_rm`` set (any scalar Reward
    called as ``meta_rm([grm_prompt], [judgment])``) only the top ``k_meta`` judgments are summed.

    As a TRL reward, ``mode="pointwise"`` judges each completion alone (n = 1, scores 1-10, or 0/1 with
    ``binary=True``); ``mode="group"`` judges all completions of one prompt together (a GRPO group). The
    reward is the mean valid score over the k samples; when every sample is invalid it falls back to the
    lowest score of the scale (counted in ``usage.unparseable``, one per invalid sample).
    """

    name = "spct_grm"
    kinds = ("grm",)
    head = "causal_lm"
    reward_args = ("meta_rm",)
    bundle_args = ("lora", "meta_rm")  # a GRM bundle carries its meta RM as a sub-folder

    @classmethod
    def export_score_range(cls, settings: dict[str, Any]) -> list[float | None]:
        lo, hi = BINARY_RANGE if settings.get("binary") else SCORE_RANGE
        return [float(lo), float(hi)]

    @classmethod
    def check_bundle(cls, document: dict[str, Any], where: str) -> None:
        if document.get("call", {}).get("template", GRM_TEMPLATE) != GRM_TEMPLATE:
            raise ValueError(f"{where} was exported with a different GRM template than this twinloop uses")

    @classmethod
    def export_call(cls, settings: dict[str, Any], tokenizer: Any, meta_rm: str | None = None,
                    **extra: Any) -> dict[str, Any]:
        return {"template": GRM_TEMPLATE, "hint": HINT, "input": "the template as one user chat message",
                "parser": "the last \\boxed{...} holds one integer per response, comma-separated, within the "
                          "score range; anything else is an invalid judgment",
                "voting": "voting@k: k samples at the temperature, response order shuffled per sample and "
                          "un-permuted, scores summed over valid samples (Eq. 14)",
                "voting_k": settings.get("k", 1), "meta_rm": meta_rm,
                "meta_voting": "keep the k_meta judgments the meta RM rates highest (default k // 2)"
                if meta_rm else None}

    def __init__(self, engine: Any, lora: str | None = None, k: int = 1, temperature: float = 0.5,
                 max_tokens: int = 512, mode: str = "pointwise", binary: bool = False,
                 meta_rm: Callable[..., list[float | None]] | None = None, k_meta: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        if mode not in ("pointwise", "group"):
            raise ValueError(f"mode must be 'pointwise' or 'group', got {mode!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if binary and mode != "pointwise":
            raise ValueError("binary (0/1) scores need mode='pointwise' (single-response data)")
        self.engine, self.lora, self.k, self.temperature, self.max_tokens = engine, lora, k, temperature, max_tokens
        self.mode, self.binary, self.meta_rm, self.k_meta = mode, binary, meta_rm, k_meta
        self.rng = random.Random(seed)

    @property
    def score_range(self) -> tuple[int, int]:
        return BINARY_RANGE if self.binary else SCORE_RANGE

    def judge_many(self, items: Sequence[tuple[str, Sequence[str]]], k: int | None = None,
                   shuffle: bool = True) -> list[list[Judgment]]:
        """k judgments per (query, responses) item, all in one engine call; scores un-permuted."""
        from twinloop.contracts import Request, SamplingConfig

        k = self.k if k is None else k
        requests, orders = [], []
        for query, responses in items:
            for _ in range(k):
                order = list(range(len(responses)))
                if shuffle:
                    self.rng.shuffle(order)
                shown = [responses[i] for i in order]
                msg = format_grm_prompt(query, shown, binary=self.binary)
                requests.append(Request(messages=[{"role": "user", "content": msg}], lora=self.lora))
                orders.append(order)
        if not requests:
            return []
        results = self.engine.generate(requests, SamplingConfig(n=1, temperature=self.temperature,
                                                                max_tokens=self.max_tokens))
        flat = []
        for res, order in zip(results, orders):
            self.usage.model_calls += 1
            self.usage.input_tokens += res.usage.prompt_tokens or len(res.prompt_ids)
            self.usage.output_tokens += res.usage.generated_tokens
            text = res.completions[0].text if res.completions else ""
            shown_scores = parse_scores(text, len(order), self.score_range)
            self.usage.unparseable += shown_scores is None
            scores = None if shown_scores is None else unpermute(shown_scores, order)
            flat.append(Judgment(scores, text, order))
        return [flat[i * k:(i + 1) * k] for i in range(len(items))]

    def _meta_scores(self, query: str, responses: Sequence[str], judgments: Sequence[Judgment]) -> list[float]:
        prompts = [format_grm_prompt(query, [responses[i] for i in j.order], binary=self.binary) for j in judgments]
        raw = self.meta_rm(prompts, [j.text for j in judgments])
        return [float("-inf") if s is None else float(s) for s in raw]

    def vote(self, query: Any, responses: Sequence[Any], k: int | None = None) -> Vote:
        """Voting@k (meta-RM-guided when ``meta_rm`` is set) over one query's responses."""
        query_text, texts = message_text(query), [message_text(r) for r in responses]
        judgments = self.judge_many([(query_text, texts)], k)[0]
        return self._tally(query_text, texts, judgments)

    def _tally(self, query: str, texts: Sequence[str], judgments: list[Judgment]) -> Vote:
        lists = [j.scores for j in judgments]
        used = sum(s is not None for s in lists)
        if self.meta_rm is not None:
            totals = meta_guided_vote(lists, self._meta_scores(query, texts, judgments), self.k_meta)
            used = min(used, max(1, len(lists) // 2) if self.k_meta is None else self.k_meta)
        else:
            totals = vote(lists)
        return Vote(totals, None if totals is None else _argmax(totals), judgments, used)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        keys = [message_text(p) for p in prompts]
        texts = [message_text(c) for c in completions]
        if self.mode == "pointwise":
            groups = [[i] for i in range(len(texts))]
        else:
            by_prompt: dict[str, list[int]] = {}
            for i, key in enumerate(keys):
                by_prompt.setdefault(key, []).append(i)
            groups = list(by_prompt.values())
        all_judgments = self.judge_many([(keys[g[0]], [texts[i] for i in g]) for g in groups])
        out: list[float | None] = [None] * len(texts)
        lowest = float(self.score_range[0])
        for g, judgments in zip(groups, all_judgments):
            means = self._tally(keys[g[0]], [texts[i] for i in g], judgments).mean_scores
            for pos, i in enumerate(g):
                out[i] = lowest if means is None else means[pos]
        return out


class SPCTTrainingReward(RewardBase):
    """SPCT phase-2 rule-based reward as a TRL reward: completions are GRM judgments, +1 if Eq. 10 holds,
    else -1 (invalid judgments are -1 and counted).

    The dataset column ``rewards`` (or ``labels``) holds each row's ground-truth rewards of its n responses;
    n = 1 rows are scored on the 0/1 scale when the label is 0 or 1, else on the 1-10 scale.
    """

    name = "spct_rule"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        n_items = len(completions)
        self.usage.items += n_items
        truth = column(columns, ["rewards", "labels"], n_items)
        out = []
        for c, rewards in zip(completions, truth):
            rewards = list(rewards) if isinstance(rewards, (list, tuple)) else [rewards]
            binary = len(rewards) == 1 and rewards[0] in (0, 1)
            scores = parse_scores(message_text(c), len(rewards), BINARY_RANGE if binary else SCORE_RANGE)
            self.usage.unparseable += scores is None
            out.append(spct_reward(scores, rewards))
        return out
