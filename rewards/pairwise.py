"""V1 pairwise self-verification (arXiv 2603.04304): ratings template and parser, P(A ≻ B), the
verifier-training reward, and the tournament maths (pure functions the V1 tournament search imports).

The verifier writes ``<rating_A>s_A</rating_A><rating_B>s_B</rating_B>`` with integer ratings 1-10.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.rewards.base import RewardBase, column, message_text

RATING_MIN, RATING_MAX = 1, 10
BAND = 0.2  # V1's reward band: keeps the verifier from collapsing onto the safe 0.5 rating

PAIRWISE_TEMPLATE = (
    "You are given a problem and two candidate solutions, A and B. Check each solution carefully and "
    "rate how likely it is to be correct, from 1 (certainly wrong) to 10 (certainly correct).\n\n"
    "[Problem]\n{prompt}\n\n"
    "[Solution A]\n{a}\n[End of Solution A]\n\n"
    "[Solution B]\n{b}\n[End of Solution B]\n\n"
    "After your reasoning, end with exactly: <rating_A>X</rating_A><rating_B>Y</rating_B>"
)

_RATING_A = re.compile(r"<rating_A>\s*([+-]?\d{1,3})\s*</rating_A>")
_RATING_B = re.compile(r"<rating_B>\s*([+-]?\d{1,3})\s*</rating_B>")


def parse_ratings(text: Any) -> tuple[int, int] | None:
    """The last ``<rating_A>`` and last ``<rating_B>`` integers, or None if either is missing or outside 1-10."""
    if not isinstance(text, str):
        return None
    a, b = _RATING_A.findall(text), _RATING_B.findall(text)
    if not a or not b:
        return None
    s_a, s_b = int(a[-1]), int(b[-1])
    if not (RATING_MIN <= s_a <= RATING_MAX and RATING_MIN <= s_b <= RATING_MAX):
        return None
    return s_a, s_b


def normalize_rating(s: float) -> float:
    """v = (s - 1) / 9, mapping ratings 1-10 onto [0, 1]. The exact normalisation is [check] in ALGORITHMS.md."""
    return (s - RATING_MIN) / (RATING_MAX - RATING_MIN)


def verifier_reward(ratings: tuple[int, int] | None, labels: Sequence[int | float], band: float = BAND) -> float:
    """V1 verify-role reward r = ½ Σ_{i∈{A,B}} 1(|v_i - y_i| ≤ band)·(1 - |v_i - y_i|).

    ``labels`` are the ground-truth correctness (y_A, y_B) in {0, 1}. Unparseable ratings (None) score 0.
    """
    if len(labels) != 2:
        raise ValueError(f"verifier_reward needs two labels (y_A, y_B), got {len(labels)}")
    if ratings is None:
        return 0.0
    total = 0.0
    for s, y in zip(ratings, labels):
        gap = abs(normalize_rating(s) - float(y))
        if gap <= band + 1e-12:
            total += 1.0 - gap
    return 0.5 * total


def preference_probability(s_a: float, s_b: float) -> float:
    """P(A ≻ B) = ½ + (s_A - s_B) / 18: a win by the full 9-point margin is certain, equal ratings are ½.

    Linear in the rating gap, matching the tournament's confidence weight |r_i - r_j| / 9. [check]: the
    paper derives preferences from ratings; this mapping is twinloop's documented default.
    """
    span = RATING_MAX - RATING_MIN
    return min(1.0, max(0.0, 0.5 + (s_a - s_b) / (2 * span)))


def win_value(r_i: float, r_j: float) -> float:
    """Tournament win value v_ij: 1 for a win, 0.5 for a tie, 0 for a loss."""
    return 1.0 if r_i > r_j else 0.5 if r_i == r_j else 0.0


def pair_weight(r_i: float, r_j: float, tau: float = 0.1) -> float:
    """Tournament confidence weight w_ij = max(|r_i - r_j| / 9, τ)."""
    return max(abs(r_i - r_j) / (RATING_MAX - RATING_MIN), tau)


def mu_scores(n: int, comparisons: Sequence[tuple[int, int, float, float]], tau: float = 0.1,
              default: float = 0.5) -> list[float]:
    """Tournament scores μ_i = Σ_j w_ij·v_ij / Σ_j w_ij over every comparison candidate i took part in.

    ``comparisons`` holds ``(i, j, r_i, r_j)``: candidates i and j were judged with ratings r_i and r_j
    (each comparison counts for both). A candidate never compared gets ``default``.
    """
    num, den = [0.0] * n, [0.0] * n
    for i, j, r_i, r_j in comparisons:
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"comparison ({i}, {j}) must name two different candidates in 0..{n - 1}")
        w = pair_weight(r_i, r_j, tau)
        num[i] += w * win_value(r_i, r_j)
        den[i] += w
        num[j] += w * win_value(r_j, r_i)
        den[j] += w
    return [num[k] / den[k] if den[k] > 0 else default for k in range(n)]


@dataclass
class Judgment:
    """One pairwise verdict: parsed ratings (None when unparseable) and the raw text."""

    ratings: tuple[int, int] | None
    text: str

    @property
    def p_a_wins(self) -> float:
        return 0.5 if self.ratings is None else preference_probability(*self.ratings)


class PairwiseVerifier(RewardBase):
    """A V1 pairwise verifier on any Engine (optionally through a LoRA adapter).

    ``compare(prompt, a, b)`` returns P(A ≻ B); ``judge`` returns the ratings too. As a TRL reward, each
    completion scores its mean P(c ≻ peer) against the other completions of the same prompt (a GRPO
    group); a completion without peers scores ½. Unparseable verdicts count as a tie (½) and are counted.
    ``both_orders=True`` judges every pair as (A, B) and (B, A) and averages, cancelling position bias.
    """

    name = "pairwise_v1"
    kinds = ("pairwise",)
    head = "causal_lm"

    @classmethod
    def export_call(cls, settings: dict[str, Any], tokenizer: Any, **extra: Any) -> dict[str, Any]:
        return {"template": settings.get("template", PAIRWISE_TEMPLATE),
                "input": "the template as one user chat message",
                "rating_format": "<rating_A>X</rating_A><rating_B>Y</rating_B>",
                "rating_range": [RATING_MIN, RATING_MAX],
                "preference": "P(A > B) = 1/2 + (rating_A - rating_B) / 18; 1/2 when unparseable",
                "reward": "mean P(completion > peer) over the other completions of the same prompt"}

    def __init__(self, engine: Any, lora: str | None = None, temperature: float = 0.0, max_tokens: int = 512,
                 template: str = PAIRWISE_TEMPLATE, both_orders: bool = False) -> None:
        super().__init__()
        self.both_orders = both_orders
        self.engine, self.lora, self.template = engine, lora, template
        self.temperature, self.max_tokens = temperature, max_tokens

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[Judgment]:
        """Batch of (prompt, a, b) triples to judgments, in one engine call."""
        from twinloop.contracts import Request, SamplingConfig

        if not items:
            return []
        requests = [Request(messages=[{"role": "user", "content": self.template.format(prompt=p, a=a, b=b)}],
                            lora=self.lora) for p, a, b in items]
        results = self.engine.generate(requests, SamplingConfig(n=1, temperature=self.temperature,
                                                                max_tokens=self.max_tokens))
        out = []
        for res in results:
            self.usage.model_calls += 1
            self.usage.input_tokens += res.usage.prompt_tokens or len(res.prompt_ids)
            self.usage.output_tokens += res.usage.generated_tokens
            text = res.completions[0].text if res.completions else ""
            ratings = parse_ratings(text)
            self.usage.unparseable += ratings is None
            out.append(Judgment(ratings, text))
        return out

    @property
    def presentations(self) -> int:
        """Verifier calls per pair: 2 with ``both_orders``, else 1."""
        return 2 if self.both_orders else 1

    def rate_pairs(self, items: Sequence[tuple[str, str, str]],
                   swap: Sequence[bool] | None = None) -> list[list[tuple[int, int] | None]]:
        """Ratings (r_a, r_b) of each (prompt, a, b), always in the item's own order, one per presentation
        (None when unparseable), all presentations in one engine call. With ``both_orders`` each pair is
        shown as (A, B) and (B, A); otherwise once, as (B, A) where ``swap[i]`` (a caller that randomises
        the order cancels position bias on average)."""
        flips = [[False, True] if self.both_orders else [bool(swap[i]) if swap is not None else False]
                 for i in range(len(items))]
        shown = [(p, b, a) if f else (p, a, b) for (p, a, b), fs in zip(items, flips) for f in fs]
        verdicts = iter(self.judge(shown))
        out = []
        for fs in flips:
            row = []
            for f in fs:
                r = next(verdicts).ratings
                row.append(None if r is None else ((r[1], r[0]) if f else (r[0], r[1])))
            out.append(row)
        return out

    def preferences(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        """P(A ≻ B) per (prompt, a, b); averaged over both presentation orders when ``both_orders``."""
        forward = [v.p_a_wins for v in self.judge(items)]
        if not self.both_orders:
            return forward
        backward = [v.p_a_wins for v in self.judge([(p, b, a) for p, a, b in items])]
        return [0.5 * (f + 1.0 - r) for f, r in zip(forward, backward)]

    def compare(self, prompt: Any, a: Any, b: Any) -> float:
        """P(A ≻ B); ½ when the verdict is unparseable."""
        return self.preferences([(message_text(prompt), message_text(a), message_text(b))])[0]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        texts = [message_text(c) for c in completions]
        keys = [message_text(p) for p in prompts]
        groups: dict[str, list[int]] = {}
        for k, key in enumerate(keys):
            groups.setdefault(key, []).append(k)
        pairs = [(g[x], g[y]) for g in groups.values() for x in range(len(g)) for y in range(x + 1, len(g))]
        prefs = self.preferences([(keys[i], texts[i], texts[j]) for i, j in pairs])
        wins, counts = [0.0] * len(texts), [0] * len(texts)
        for (i, j), p in zip(pairs, prefs):
            wins[i] += p
            wins[j] += 1.0 - p
            counts[i] += 1
            counts[j] += 1
        return [wins[k] / counts[k] if counts[k] else 0.5 for k in range(len(texts))]


class VerifierTrainingReward(RewardBase):
    """The V1 verify-role reward as a TRL reward: completions are verifier outputs (rating tags).

    Labels come from the dataset columns ``label_a`` and ``label_b`` (ground-truth correctness of
    solutions A and B, 0/1). Unparseable ratings score 0 and are counted.
    """

    name = "v1_verifier"

    def __init__(self, band: float = BAND) -> None:
        super().__init__()
        self.band = band

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        n = len(completions)
        self.usage.items += n
        label_a = column(columns, ["label_a"], n)
        label_b = column(columns, ["label_b"], n)
        out = []
        for c, ya, yb in zip(completions, label_a, label_b):
            ratings = parse_ratings(message_text(c))
            self.usage.unparseable += ratings is None
            out.append(verifier_reward(ratings, (ya, yb), self.band))
        return out
