"""Verifiable rewards: answers checked against a gold column, with no model involved.

All of them have TRL's reward signature (``reward(prompts, completions, **columns)``) through
``RewardBase`` and never raise on model output: output without a recognisable answer scores 0.0 and is
counted in ``usage.unparseable``. A missing gold column is a user error and raises a one-line ValueError.

``extract_answer`` (``twinloop.rewards.answers``) is the pure answer extractor search procedures use for
voting: it returns a canonical string, so equal answers written differently (``1,234`` / ``1234.0``) fall
into one bucket. Every extractor here runs in linear time on any input.
"""
from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twinloop.rewards.answers import (
    MAX_SPAN_CHARS,
    answer_span,
    canonical_answer,
    extract_answer,
    integer_key,
    last_boxed,
)
from twinloop.rewards.base import RewardBase

__all__ = ["BoxedFormatReward", "ExactMatchReward", "MathReward", "NumericReward", "ReasoningGymReward",
           "StepFormatReward", "canonical_answer", "extract_answer", "gold_answer", "last_boxed", "to_number"]

GOLD_COLUMNS = ("answer", "solution", "gold", "ground_truth")


def to_number(answer: str) -> float | None:
    """A float for plain numbers, fractions ``a/b`` and ``\\frac{a}{b}``; None otherwise."""
    s = canonical_answer(answer).rstrip("%")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", s)
    try:
        value = float(m.group(1)) / float(m.group(2)) if m else float(s)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def gold_answer(gold: Any) -> str:
    """The gold answer of a column value: a plain answer, or a worked solution with ``\\boxed``/``####``."""
    text = str(gold)
    return extract_answer(text) if ("\\boxed" in text or "####" in text) else canonical_answer(text)


class _GoldReward(RewardBase):
    """Shared part: finds the gold column and extracts the predicted answer."""

    gold_columns: Sequence[str] = GOLD_COLUMNS

    def __init__(self, gold_columns: Sequence[str] | None = None) -> None:
        super().__init__()
        if gold_columns is not None:
            self.gold_columns = tuple(gold_columns)

    def gold(self, row: dict[str, Any]) -> Any:
        for name in self.gold_columns:
            if row.get(name) is not None:
                return row[name]
        raise ValueError(f"{self.name} needs one of the dataset columns {list(self.gold_columns)}; got {sorted(row)}")

    def predicted(self, completion: str) -> str | None:
        answer = extract_answer(completion)
        if answer is None:
            self.usage.unparseable += 1
        return answer


class MathReward(_GoldReward):
    """1.0 when the completion's final answer is mathematically equal to the gold, by math-verify 0.9.0's
    ``parse`` (LaTeX and expression extraction, boxed answers first) and ``verify``; else 0.0.

    twinloop only finds *where* the answer is, in linear time (``answers.answer_span``): the last group of
    boxes, else the ``#### N`` line, else the text around the last "answer", else the tail; math-verify reads
    that piece (at most ``MAX_SPAN_CHARS``; its own extraction is quadratic on long text). Two plain integers
    compare exactly without math-verify (the fast path gives its verdict, and has no digit limit).
    Output with nothing math-verify can read scores 0.0 and is counted unparseable; nothing raises.
    Gold comes from the first present column of ``answer`` / ``solution`` / ``gold`` / ``ground_truth``: a
    plain answer (``\\frac{1}{2}``, read as LaTeX) or a worked solution with ``\\boxed{}`` or ``####``.
    """

    name = "math"

    def __init__(self, gold_columns: Sequence[str] | None = None, timeout_seconds: int = 5) -> None:
        super().__init__(gold_columns)
        self.timeout_seconds = timeout_seconds
        self._gold_cache: dict[str, tuple[str | None, list]] = {}

    def _timeout(self) -> int | None:
        # math-verify's timeouts use SIGALRM, which exists only in the main thread.
        return self.timeout_seconds if threading.current_thread() is threading.main_thread() else None

    def _parse(self, piece: str) -> list:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

        configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
        # math-verify's extraction finds \boxed only; its normalisation already treats \fbox the same
        return parse(piece.replace("\\fbox", "\\boxed"), configs, parsing_timeout=self._timeout())

    def _gold_answer(self, gold: Any) -> tuple[str | None, list]:
        """``(integer key or None, math-verify parse)`` of a gold value, cached."""
        text = str(gold).strip()
        if text not in self._gold_cache:
            kind, piece, answer = answer_span(text) or ("tail", text, text)
            if kind in ("answer", "tail"):  # a plain answer column: LaTeX without delimiters
                piece = answer = text if any(m in text for m in ("$", "\\(", "\\[")) else f"${text}$"
            key = integer_key(answer) if answer is not None else None
            if len(self._gold_cache) > 100_000:
                self._gold_cache.clear()
            self._gold_cache[text] = (key, self._parse(piece))
        return self._gold_cache[text]

    def verdict(self, gold: Any, completion: str, fast_path: bool = True) -> bool | None:
        """True / False, or None when the completion holds nothing readable. ``fast_path=False`` always asks
        math-verify (the tests use it to show the integer fast path agrees)."""
        span = answer_span(completion)
        if span is None:
            return None
        kind, piece, answer = span
        gold_key, gold_parsed = self._gold_answer(gold)
        if fast_path and gold_key is not None and answer is not None:
            key = integer_key(answer)
            if key is not None:
                return key == gold_key
        if len(piece) > MAX_SPAN_CHARS:
            return None
        pred = self._parse(piece)
        if not pred:
            return None
        from math_verify import verify

        return bool(verify(gold_parsed, pred, timeout_seconds=self._timeout()))

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        gold = self.gold(row)
        if not str(gold).strip():
            raise ValueError(f"{self.name}: empty gold answer in the row {row.get('id', '')!r}")
        try:
            verdict = self.verdict(gold, completion)
        except Exception:  # noqa: BLE001 - math-verify/sympy failures on model output must not raise
            verdict = None
        except BaseException as e:  # math-verify's TimeoutException is a BaseException
            from math_verify.errors import TimeoutException

            if not isinstance(e, TimeoutException):
                raise
            verdict = None
        if verdict is None:
            self.usage.unparseable += 1
            return 0.0
        return 1.0 if verdict else 0.0


class NumericReward(_GoldReward):
    """1.0 when the extracted number is within ``max(abs_tol, rel_tol * |gold|)`` of the gold number
    (defaults [check]: rel_tol 1e-6, abs_tol 1e-9); non-numeric output scores 0.0 and is counted."""

    name = "numeric"

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9,
                 gold_columns: Sequence[str] | None = None) -> None:
        super().__init__(gold_columns)
        self.rel_tol, self.abs_tol = rel_tol, abs_tol

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        gold_text = gold_answer(self.gold(row))
        gold = to_number(gold_text) if gold_text is not None else None
        if gold is None:
            raise ValueError(f"numeric reward: gold answer {self.gold(row)!r} is not a number")
        answer = self.predicted(completion)
        if answer is None:
            return 0.0
        value = to_number(answer)
        if value is None:
            self.usage.unparseable += 1
            return 0.0
        return 1.0 if abs(value - gold) <= max(self.abs_tol, self.rel_tol * abs(gold)) else 0.0


class ExactMatchReward(_GoldReward):
    """1.0 when the canonical extracted answer equals the canonical gold (``ignore_case`` [check]: True).

    With ``extract=False`` the whole completion (stripped) is compared instead.
    """

    name = "exact_match"

    def __init__(self, extract: bool = True, ignore_case: bool = True,
                 gold_columns: Sequence[str] | None = None) -> None:
        super().__init__(gold_columns)
        self.extract, self.ignore_case = extract, ignore_case

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        gold = gold_answer(self.gold(row)) if self.extract else str(self.gold(row)).strip()
        answer = self.predicted(completion) if self.extract else completion.strip()
        if answer is None or gold is None:
            return 0.0
        if self.ignore_case:
            answer, gold = answer.lower(), gold.lower()
        return 1.0 if answer == gold else 0.0


class BoxedFormatReward(RewardBase):
    """1.0 when the completion holds a closed, non-empty ``\\boxed{...}``, else 0.0 (the score itself, so
    a missing box is not counted as unparseable)."""

    name = "boxed_format"

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        found = last_boxed(completion)
        return 1.0 if found is not None and found.strip() else 0.0


class StepFormatReward(RewardBase):
    """1.0 when the completion has at least ``min_steps`` non-empty steps separated by ``delimiter``
    (defaults [check]: blank line, 2 steps), else 0.0."""

    name = "step_format"

    def __init__(self, delimiter: str = "\n\n", min_steps: int = 2) -> None:
        super().__init__()
        if not delimiter:
            raise ValueError("step_format: the step delimiter must be non-empty")
        self.delimiter, self.min_steps = delimiter, min_steps

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        steps = [s for s in completion.split(self.delimiter) if s.strip()]
        return 1.0 if len(steps) >= self.min_steps else 0.0


def _reasoning_gym_answer(completion: str) -> str | None:
    """reasoning-gym's ``<answer>...</answer>`` tag, else ``extract_answer`` forms (raw, not canonical)."""
    tagged = re.findall(r"<answer>\s?(.*?)\s?</answer>", completion, flags=re.DOTALL)
    if tagged:
        return tagged[-1].strip()
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed.strip()
    return extract_answer(completion)


class ReasoningGymReward(RewardBase):
    """A reasoning-gym dataset's own ``score_answer`` (floats in [0, 1]).

    ``source`` is a dataset name (``"countdown"``) or a reasoning-gym dataset object. Each row needs an
    ``entry`` column (the dataset item: ``answer`` + ``metadata``), or ``answer`` and ``metadata`` columns.
    The answer is read from ``<answer>`` tags, ``\\boxed{}``, ``#### N`` or "The answer is N"; output with
    none of these scores 0.0 and is counted unparseable.
    """

    def __init__(self, source: Any) -> None:
        super().__init__()
        if isinstance(source, str):
            import reasoning_gym

            try:
                self._score: Callable[[Any, dict], float] = reasoning_gym.get_score_answer_fn(source)
            except Exception as e:  # noqa: BLE001 - unknown name: one clear line
                raise ValueError(f"unknown reasoning-gym dataset {source!r}: {e}") from None
            self.name = f"rgym_{source}"
        else:
            self._score = source.score_answer
            self.name = f"rgym_{type(source).__name__}"

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        entry = row.get("entry")
        if entry is None:
            if "answer" not in row or "metadata" not in row:
                raise ValueError(f"{self.name} needs an 'entry' column or 'answer' and 'metadata' columns; "
                                 f"got {sorted(row)}")
            entry = {"answer": row["answer"], "metadata": row["metadata"], "question": row.get("question", "")}
        answer = _reasoning_gym_answer(completion)
        if answer is None:
            self.usage.unparseable += 1
            return 0.0
        try:
            return float(self._score(answer, entry))
        except Exception:  # noqa: BLE001 - a scorer crashing on odd model output counts as unparseable
            self.usage.unparseable += 1
            return 0.0
