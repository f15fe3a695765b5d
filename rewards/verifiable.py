"""Verifiable rewards: answers checked against a gold column, with no model involved.

All of them have TRL's reward signature (``reward(prompts, completions, **columns)``) through
``RewardBase`` and never raise on model output: output without a recognisable answer scores 0.0 and is
counted in ``usage.unparseable``. A missing gold column is a user error and raises a one-line ValueError.

``extract_answer`` is the pure answer extractor search procedures use for voting: it returns a canonical
string, so equal answers written differently (``1,234`` / ``1234.0``) fall into one bucket.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twinloop.rewards.base import RewardBase

GOLD_COLUMNS = ("answer", "solution", "gold", "ground_truth")

_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE)
_NUMBER_PREFIX = re.compile(r"^[-+−]?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/\d+)?")
_GROUPED_NUMBER = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces balanced; None if absent
    or unclosed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    while start >= 0:
        i = start + (6 if text.startswith("\\boxed", start) else 5)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j]
                j += 1
        elif i < len(text):  # "\boxed 5"
            m = re.match(r"[^\s$]+", text[i:])
            if m:
                return m.group(0)
        start = max(text.rfind("\\boxed", 0, start), text.rfind("\\fbox", 0, start))
    return None


def canonical_answer(answer: str) -> str:
    """One spelling per answer: no surrounding ``$``/spaces/final period, no thousands commas,
    numbers in shortest form (``42.0`` -> ``42``), ``\\dfrac``/``\\tfrac`` -> ``\\frac``, no inner spaces."""
    s = answer.replace("−", "-")
    previous = None
    while s != previous:  # peel "$", spaces and a final period in any order
        previous, s = s, s.strip().strip("$").rstrip(".")
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    if _GROUPED_NUMBER.match(s):
        s = s.replace(",", "")
    if _PLAIN_NUMBER.match(s):
        try:
            value = float(s)
            if value == int(value) and abs(value) < 1e15:
                return str(int(value))
            return repr(value)
        except ValueError:
            pass
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    return re.sub(r"\s+", "", s)


def _answer_phrase(captured: str) -> str:
    """The answer at the start of 'The answer is ...': a number alone when it starts with one."""
    captured = captured.strip().strip("*").strip()
    if captured.startswith("$") and captured.count("$") >= 2:
        return captured[1:captured.index("$", 1)]
    m = _NUMBER_PREFIX.match(captured)
    if m and re.search(r"\d", m.group(0)):
        return m.group(0).replace(" ", "")
    return re.split(r"\.\s|\.$", captured)[0]


def extract_answer(text: str) -> str | None:
    """The final answer of a solution as a canonical string, or None.

    Looks for, in order: the last ``\\boxed{}``, the last ``#### N`` (GSM8K), the last
    "The answer is N" / "Answer: N".
    """
    if not isinstance(text, str) or not text.strip():
        return None
    found = last_boxed(text)
    if found is None:
        hashes = _HASHES.findall(text)
        if hashes:
            found = _answer_phrase(hashes[-1])
    if found is None:
        phrases = _ANSWER_IS.findall(text)
        if phrases:
            found = _answer_phrase(phrases[-1])
    if found is None:
        return None
    found = canonical_answer(found)
    return found or None


def to_number(answer: str) -> float | None:
    """A float for plain numbers, fractions ``a/b`` and ``\\frac{a}{b}``; None otherwise."""
    s = canonical_answer(answer).rstrip("%")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}", s)
    if m:
        s = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", s)
    try:
        if m:
            return float(m.group(1)) / float(m.group(2))
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


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
    """1.0 when the extracted answer is mathematically equal to the gold (math-verify 0.9.0), else 0.0.

    The answer is read from ``\\boxed{}``, ``#### N`` or "The answer is N" (``extract_answer``); output with
    none of these, or that math-verify cannot parse, scores 0.0 and is counted unparseable. Gold comes from
    the first present column of ``answer`` / ``solution`` / ``gold`` / ``ground_truth``.
    """

    name = "math"

    def __init__(self, gold_columns: Sequence[str] | None = None, timeout_seconds: int = 5) -> None:
        super().__init__(gold_columns)
        self.timeout_seconds = timeout_seconds
        self._gold_cache: dict[str, Any] = {}

    def _parse(self, answer: str):
        from math_verify import parse

        # math-verify's timeouts use SIGALRM, which exists only in the main thread.
        timeout = self.timeout_seconds if threading.current_thread() is threading.main_thread() else None
        return parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        gold_text = gold_answer(self.gold(row))
        answer = self.predicted(completion)
        if answer is None:
            return 0.0
        if gold_text is not None and answer == gold_text:
            return 1.0
        try:
            from math_verify import verify

            if gold_text not in self._gold_cache:
                self._gold_cache[gold_text] = self._parse(gold_text or "")
            gold, pred = self._gold_cache[gold_text], self._parse(answer)
            if not pred:
                self.usage.unparseable += 1
                return 0.0
            timeout = self.timeout_seconds if threading.current_thread() is threading.main_thread() else None
            return 1.0 if verify(gold, pred, timeout_seconds=timeout) else 0.0
        except Exception:  # noqa: BLE001 - math-verify/sympy failures on model output must not raise
            self.usage.unparseable += 1
            return 0.0


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
