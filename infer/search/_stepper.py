"""What one "step" of a step-level search is: up to a string delimiter, up to a delimiter token id, or a
fixed number of tokens. The stepper turns a sampling config into one-step sampling and tells, from a
completion's ``finish_reason`` (never ``stop_reason``), whether the step ended at a boundary, at EOS, or
was truncated."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from twinloop.infer.engine import Completion, SamplingConfig

STEP, EOS, TRUNCATED = "step", "eos", "truncated"


@dataclass
class Stepper:
    """Exactly one of ``delimiter`` (string), ``delimiter_ids`` (token ids) or ``tokens_per_step``.

    ``max_step_tokens`` caps one delimited step; a step that hits it counts as truncated (the whole
    candidate ends there), since continuing mid-step would hand the PRM a broken step.
    """

    delimiter: str | None = "\n\n"
    delimiter_ids: Sequence[int] | None = None
    tokens_per_step: int | None = None
    max_step_tokens: int = 128

    def __post_init__(self) -> None:
        explicit_other = self.delimiter_ids is not None or self.tokens_per_step is not None
        if explicit_other and self.delimiter == "\n\n":  # the default yields to an explicit other mode
            self.delimiter = None
        modes = sum(x is not None for x in (self.delimiter, self.delimiter_ids, self.tokens_per_step))
        if modes != 1:
            raise ValueError("a Stepper needs exactly one of delimiter, delimiter_ids or tokens_per_step")
        if self.delimiter is not None and not self.delimiter:
            raise ValueError("the step delimiter must be a non-empty string")
        if self.tokens_per_step is not None and self.tokens_per_step < 1:
            raise ValueError(f"tokens_per_step must be >= 1, got {self.tokens_per_step}")

    def sampling(self, base: SamplingConfig, remaining_tokens: int, n: int = 1) -> SamplingConfig:
        """``base`` cut down to one step of at most ``remaining_tokens`` tokens, ``n`` samples."""
        if self.tokens_per_step is not None:
            return replace(base, n=n, max_tokens=max(1, min(self.tokens_per_step, remaining_tokens))).validate()
        cap = max(1, min(self.max_step_tokens, remaining_tokens))
        if self.delimiter is not None:
            stop = list(base.stop or []) + [self.delimiter]
            return replace(base, n=n, max_tokens=cap, stop=stop, include_stop_str_in_output=True).validate()
        ids = list(base.stop_token_ids or []) + [int(t) for t in self.delimiter_ids or []]
        return replace(base, n=n, max_tokens=cap, stop_token_ids=ids).validate()

    def outcome(self, completion: Completion) -> str:
        """STEP (ended at a step boundary), EOS (the response is finished) or TRUNCATED (hit max_tokens, or
        the backend aborted the request)."""
        if completion.finish_reason == "abort":
            return TRUNCATED
        if self.tokens_per_step is not None:
            return STEP if completion.finish_reason == "length" else EOS
        if completion.finish_reason == "length":
            return TRUNCATED
        if self.delimiter is not None:
            return STEP if completion.text.endswith(self.delimiter) else EOS
        ids = completion.token_ids
        return STEP if ids and ids[-1] in set(self.delimiter_ids or []) else EOS

    def step_text(self, completion: Completion) -> str:
        """The step as the PRM sees it: the delimiter string is dropped."""
        text = completion.text
        if self.delimiter is not None and text.endswith(self.delimiter):
            return text[: -len(self.delimiter)]
        return text

    def split(self, text: str) -> list[str]:
        """Steps of a whole response (string mode); other modes treat the response as one step."""
        if self.delimiter is None:
            return [text]
        return [s for s in text.split(self.delimiter) if s.strip()] or [text]
