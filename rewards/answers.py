"""Where the final answer of a solution is, found in linear time (pure string functions, no math-verify).

- ``boxed_spans`` / ``last_boxed``: every closed ``\\boxed{...}`` / ``\\fbox{...}`` in one left-to-right pass
  (a stack of open braces), so a megabyte of ``\\boxed{`` costs one pass, not one pass per box.
- ``answer_span``: the short piece of a completion that holds its final answer (the last group of boxes, the
  ``#### N`` line, the text around the last "answer", else the tail). ``MathReward`` hands only this piece to
  math-verify, whose regular expressions are quadratic on long inputs (8 KB of ``\\[`` takes 1.5 s).
- ``canonical_answer`` / ``extract_answer``: the voting key search procedures bucket answers by.
- ``integer_key``: the exact digits of a plain integer answer (no float, no ``int()`` digit limit).
"""
from __future__ import annotations

import re

# A piece longer than this is not handed to math-verify [check]: its extraction is quadratic in the length.
MAX_SPAN_CHARS = 1500
BOX_GROUP_GAP = 70  # math-verify joins boxes up to 70 characters apart (with a separator)
BOX_LEAD_CHARS = 40  # context kept before the first box of the group ($, "answer:")
BOX_TAIL_CHARS = 20  # and after the last one ($, %, "percent")
ANSWER_LEAD_CHARS = 120  # "final answer ... is" reaches 100 characters back from "is"
ANSWER_TAIL_CHARS = 300

_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")
_BOX_TOKEN = re.compile(r"\\(?:boxed|fbox)|[{}]")
_WORD_ANSWER = re.compile(r"answer", re.IGNORECASE)
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
_NUMBER_PREFIX = re.compile(r"^[-+−]?\s*(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/\d+)?")
_GROUPED_INT = re.compile(r"^(-?)([1-9]\d{0,2}(?:,\d{3})+)$")
_GROUPED_NUMBER = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^([-+]?)(\d*)(?:\.(\d*))?$")


def boxed_spans(text: str) -> list[tuple[int, int, int, int, bool]]:
    """``(start, content_start, content_end, end, top_level)`` of every closed box, ordered by ``start``.

    ``\\boxed{...}`` balances nested braces; ``\\boxed 5`` (no brace) runs to the next space, ``$`` or ``\\``.
    ``top_level`` is False for a box inside another closed box. Unclosed boxes are left out. One pass over
    the text, then a sort of the boxes found.
    """
    spans: list[tuple[int, int, int, int]] = []
    stack: list[int] = []  # per open "{": the start of its box, or -1
    pending = -1
    run_start, run_end = -1, -1  # the last run of non-space characters measured (for "\boxed 5")
    for m in _BOX_TOKEN.finditer(text):
        token = m.group()
        if token == "{":
            stack.append(pending)
            pending = -1
        elif token == "}":
            pending = -1
            start = stack.pop() if stack else -1
            if start >= 0:
                spans.append((start, text.index("{", start) + 1, m.start(), m.end()))
        else:
            j = m.end()
            while j < len(text) and text[j] == " ":
                j += 1
            pending = m.start() if j < len(text) and text[j] == "{" else -1
            if pending < 0 and j < len(text) and (j > m.end() or text[j].isdigit()) and text[j] not in "\\$\n\t\r":
                if not run_start <= j < run_end:  # one run is measured once, however many boxes start in it
                    run_start, run_end = j, j
                    while run_end < len(text) and not text[run_end].isspace() and text[run_end] not in "$\\":
                        run_end += 1
                spans.append((m.start(), j, run_end, run_end))
    spans.sort()
    out, outer_end = [], -1
    for start, content_start, content_end, end in spans:
        out.append((start, content_start, content_end, end, start >= outer_end))
        if start >= outer_end:
            outer_end = end
    return out


def last_boxed(text: str) -> str | None:
    """Content of the box that starts last (``\\boxed{...}`` or ``\\fbox{...}``, nested braces balanced);
    None if there is no closed box."""
    spans = boxed_spans(text)
    if not spans:
        return None
    _, content_start, content_end, _, _ = spans[-1]
    return text[content_start:content_end]


def last_box_group(text: str, spans: list | None = None) -> list[tuple[int, int, int, int, bool]]:
    """The top-level boxes of the final answer: the last one and those before it that math-verify joins to
    it (a gap under 10 characters, or under 70 holding "and" / "or" / "," / ";" between different
    contents), at most 6. Empty when there is no box."""
    tops = [s for s in (boxed_spans(text) if spans is None else spans) if s[4]]
    if not tops:
        return []
    group = [tops[-1]]
    for span in reversed(tops[:-1]):
        gap = text[span[3]:group[0][0]]
        different = text[span[1]:span[2]].strip() != text[group[0][1]:group[0][2]].strip()
        joined = len(gap) < 10 or (len(gap) < BOX_GROUP_GAP and different and _SEPARATOR.search(gap))
        if len(group) == 6 or not joined:
            break
        group.insert(0, span)
    return group


def _group_contents(text: str, group: list[tuple[int, int, int, int, bool]]) -> str:
    """The contents of a box group joined by ``, `` (consecutive repeats once, as math-verify reads)."""
    contents: list[str] = []
    for _, content_start, content_end, _, _ in group:
        content = text[content_start:content_end].strip()
        if not contents or contents[-1] != content:
            contents.append(content)
    return ", ".join(contents)


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007 - we want the last one
        pass
    return found


def _line_after(text: str, position: int) -> str:
    end = text.find("\n", position)
    return text[position:end if end >= 0 else len(text)]


def answer_span(text: str) -> tuple[str, str, str | None] | None:
    """``(kind, piece, answer)``: the short part of ``text`` that holds its final answer, found in
    O(len(text)), and the answer itself where it is delimited (box contents, the ``####`` line), else None.

    kind ``box``: the last box group with a little context; ``hashes``: the rest of the last ``####`` line;
    ``answer``: the text around the last "answer"; ``tail``: the last ``MAX_SPAN_CHARS`` characters.
    None for empty text.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    tops = [s for s in boxed_spans(text) if s[4]]
    group = last_box_group(text, tops)
    if group:
        before = [s for s in tops if s[3] <= group[0][0]]
        lead = max(group[0][0] - BOX_LEAD_CHARS, before[-1][3] if before else 0)
        return "box", text[lead:group[-1][3] + BOX_TAIL_CHARS], _group_contents(text, group)
    hashes = text.rfind("####")
    if hashes >= 0:
        line = _line_after(text, hashes + 4).strip()
        return "hashes", line, line
    last = _last_match(_WORD_ANSWER, text)
    if last is not None:
        return "answer", text[max(0, last.start() - ANSWER_LEAD_CHARS):last.end() + ANSWER_TAIL_CHARS], None
    return "tail", text[-MAX_SPAN_CHARS:], None


def integer_key(answer: str) -> str | None:
    """The digits of a plain integer answer (sign, no leading zeros, thousands commas removed), else None.

    ``"1,234"`` -> ``"1234"``, ``"007"`` -> ``"7"``, ``"$42$."`` -> ``"42"``; ``"0,111"``, ``"1 234"``,
    ``"+5"``, ``"-07"``, ``"4.0"`` -> None (left to math-verify). Exact for any length: no float, no
    ``int()`` digit limit.
    """
    s = _peel(answer)
    if s.startswith("\\boxed{") and s.endswith("}"):
        s = _peel(s[7:-1])
    grouped = _GROUPED_INT.match(s)
    if grouped:
        s = grouped.group(1) + grouped.group(2).replace(",", "")
    sign = "-" if s.startswith("-") else ""  # a "+" sign is left to math-verify (it reads "+1,234" as a set)
    digits = s[len(sign):]
    if not digits.isascii() or not digits.isdigit() or (sign and digits.startswith("0")):
        return None  # math-verify cannot read "-07" after "####"; let it judge
    digits = digits.lstrip("0") or "0"
    return ("-" if sign and digits != "0" else "") + digits


def _peel(answer: str) -> str:
    """Strip surrounding spaces, ``$`` and a final period, in any order."""
    s, previous = answer.replace("−", "-"), None
    while s != previous:
        previous, s = s, s.strip().strip("$").rstrip(".")
    return s


def _plain_number(s: str) -> str | None:
    """Shortest exact spelling of a decimal (``42.0`` -> ``42``, ``.50`` -> ``0.5``), or None."""
    m = _PLAIN_NUMBER.match(s)
    if not m or not (m.group(2) or m.group(3)):
        return None
    whole = m.group(2).lstrip("0") or "0"
    frac = (m.group(3) or "").rstrip("0")
    value = whole + ("." + frac if frac else "")
    return ("-" if m.group(1) == "-" and value != "0" else "") + value


def _percent_sign(s: str) -> str:
    """``28\\%`` / ``28 %`` / ``28 percent`` -> ``28%`` (string ends only: linear)."""
    for suffix in ("\\%", "%", " percent", " Percent"):
        if s.endswith(suffix) and s[:-len(suffix)].strip():
            return s[:-len(suffix)].rstrip() + "%"
    return s


def canonical_answer(answer: str) -> str:
    """One spelling per answer, for voting: no surrounding ``$``/spaces/final period, thousands commas
    removed only from a real grouping (``1,234``; not ``0,111`` or ``32, 349``), numbers in shortest exact
    form (``42.0`` -> ``42``), percent as ``%``, ``\\dfrac``/``\\tfrac`` -> ``\\frac``, spaces kept only
    between two word characters (``28 percent`` stays apart from ``28``), commas followed by one space."""
    s = _peel(answer)
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s).replace("{,}", ",")
    s = _percent_sign(s)
    if _GROUPED_NUMBER.match(s):
        s = s.replace(",", "")
    number = _plain_number(s)
    if number is not None:
        return number
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"(?<!\w) | (?!\w)", "", s)  # a space survives only between two word characters
    return re.sub(r",(?! )", ", ", s)


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
    """The final answer of a solution as a canonical string (the voting key), or None.

    Looks for, in order: the last box group (boxes written side by side, ``\\boxed{1}, \\boxed{2}``, give
    ``1, 2``), the last ``#### N`` (GSM8K), the last "The answer is N" / "Answer: N" (the Minerva
    "Final Answer: The final answer is $N$." reads N). O(len(text)).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    found = None
    group = last_box_group(text)
    if group:
        found = _group_contents(text, group)
    if found is None:
        hashes = text.rfind("####")
        if hashes >= 0:
            found = _answer_phrase(_line_after(text, hashes + 4))
    if found is None:
        last = _last_match(_ANSWER_IS, text)
        if last is not None:
            found = _answer_phrase(_line_after(text, last.end()))
    if found is None:
        return None
    return canonical_answer(found) or None
