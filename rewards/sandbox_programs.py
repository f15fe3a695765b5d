"""Reading a completion as a program: the fenced code block, then the program to run.

Both run in the caller's process on untrusted model output, so they parse in linear time: fences are
found line by line (no backtracking regex over the whole completion), and the entry-point search is
anchored at line starts with no nested repetition.
"""
from __future__ import annotations

import re
import warnings

_PYTHON_LABELS = ("python", "py", "python3", "")


def _fence_label(line: str) -> str | None:
    """The language label when ``line`` opens or closes a fence (``` at the line start, after blanks)."""
    stripped = line.lstrip(" \t")
    if not stripped.startswith("```"):
        return None
    rest = stripped[3:].lstrip(" \t")
    end = 0
    while end < len(rest) and (rest[end].isascii() and (rest[end].isalnum() or rest[end] in "_+-")):
        end += 1
    return rest[:end]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(label, body) of every fenced block; an unclosed block runs to the end of the text."""
    blocks: list[tuple[str, str]] = []
    label: str | None = None
    body_start = 0
    position = 0
    lines = text.split("\n")
    for number, line in enumerate(lines):
        has_newline = number < len(lines) - 1
        end = position + len(line) + has_newline
        if label is None:
            opened = _fence_label(line)
            if opened is not None and has_newline:  # the body starts on the next line
                label, body_start = opened, end
        else:
            closing = line.find("```")
            if closing >= 0:
                blocks.append((label, text[body_start:position + closing]))
                label = None
        position = end
    if label is not None:
        blocks.append((label, text[body_start:]))
    return blocks


def _defines(entry_point: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(entry_point)}[ \t]*\(", re.MULTILINE)


def extract_code(text: str, entry_point: str = "") -> str:
    """The code in a completion: the fenced block defining ``entry_point``, else the first python (or
    unlabelled) fenced block, else the whole text. Fences open at a line start; an unclosed one runs to
    the end."""
    blocks = fenced_blocks(text)
    if not blocks:
        return text
    python = [body for label, body in blocks if label.lower() in _PYTHON_LABELS]
    python = python or [body for _, body in blocks]
    if entry_point:
        defining = _defines(entry_point)
        for body in python:
            if defining.search(body):
                return body
    return python[0]


def build_program(code: str, prefix: str, entry_point: str) -> str | None:
    """The program to run, or None when it has no code or does not compile."""
    if not code.strip():
        return None
    if entry_point and _defines(entry_point).search(code):
        program = (prefix.rstrip() + "\n\n\n" if prefix.strip() else "") + code
    else:  # a function body continuing the prompt, as in HumanEval's own harness
        program = prefix + code
    try:
        with warnings.catch_warnings():  # model output is full of e.g. "invalid decimal literal"
            warnings.simplefilter("ignore")
            compile(program, "candidate.py", "exec")
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError (null bytes), RecursionError, MemoryError
        return None
    return program
