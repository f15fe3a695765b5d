"""A scripted fake Engine for unit tests of search procedures: exact, fast, and accountable.

Tokens are characters (id = code point; EOS = 3). A script maps a problem's prompt to the full responses
the "model" can write. A request whose prompt is that problem's prompt plus a partial response
continues one scripted response that starts with the partial (round-robin over the matching ones at
temperature > 0, the first at temperature 0), honouring stop strings, stop token ids and max_tokens
the way vLLM does: stop strings end the text (kept with ``include_stop_str_in_output``), EOS and stop
token ids stay in ``token_ids``. Prefix caching is simulated with block size 1.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from twinloop.infer.engine import Completion, Request, Result, SamplingConfig, Usage
from twinloop.rewards.base import RewardUsage

EOS_ID = 3


class CharTokenizer:
    eos_token_id = EOS_ID
    pad_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == EOS_ID))

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = False, **_):
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        text += "<assistant>" if add_generation_prompt else ""
        return self.encode(text) if tokenize else text


@dataclass
class Call:
    """One generate call as the engine saw it (for assertions on batching and prompt ids)."""

    prompts: list[list[int]]
    sampling: SamplingConfig
    via_ids: list[bool] = field(default_factory=list)


class ScriptedEngine:
    """``script`` maps prompt text (or a chat prompt's user content) to candidate full responses."""

    def __init__(self, script: dict[str, list[str]], yes_no_logprobs: dict[str, tuple[float, float]] | None = None):
        self.tokenizer = CharTokenizer()
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[Call] = []
        self.seen: list[tuple[int, ...]] = []
        self.turn: dict[str, int] = defaultdict(int)
        self.yes_no_logprobs = yes_no_logprobs or {}

    # -- prompts
    def render(self, req: Request) -> list[int]:
        if req.prompt_ids is not None:
            return list(req.prompt_ids)
        if req.messages is not None:
            return self.tokenizer.apply_chat_template(req.messages, tokenize=True)
        return self.tokenizer.encode(req.text or "")

    def _rendered_keys(self) -> list[tuple[str, str]]:
        out = []
        for key in self.script:
            if key.endswith("*"):
                continue
            out.append((key, key))
            out.append((key, self.tokenizer.apply_chat_template([{"role": "user", "content": key}])))
        return out

    def _match(self, text: str) -> tuple[str, str]:
        """(script key, partial response already in the prompt) for the longest rendered key prefix.

        A key ending in ``*`` matches any prompt that starts with the rest of it, with no partial response
        (for prompts built from earlier outputs, such as refinement feedback).
        """
        wild = [k for k in self.script if k.endswith("*") and text.startswith(k[:-1])]
        if wild:
            return max(wild, key=len), ""
        best = None
        for key, rendered in self._rendered_keys():
            if text.startswith(rendered) and (best is None or len(rendered) > len(best[1])):
                best = (key, rendered)
        if best is None:
            raise KeyError(f"scripted engine has no script for prompt {text[:60]!r}")
        return best[0], text[len(best[1]):]

    def _cached(self, ids: list[int]) -> int:
        best = 0
        for seen in self.seen:
            k = 0
            for a, b in zip(seen, ids):
                if a != b:
                    break
                k += 1
            best = max(best, k)
        return best

    # -- generation
    def _continue(self, key: str, partial: str, s: SamplingConfig) -> Completion:
        options = [r for r in self.script[key] if r.startswith(partial)]
        if not options:
            raise KeyError(f"no scripted response for {key!r} continues {partial!r}")
        slot = key + "\x00" + partial
        pick = options[0] if s.temperature == 0 else options[self.turn[slot] % len(options)]
        self.turn[slot] += 1
        rest = pick[len(partial):]
        ids: list[int] = []
        text = ""
        stop_ids = set(s.stop_token_ids or [])
        for ch in list(rest) + [None]:
            if len(ids) >= s.max_tokens:
                return Completion(ids, text, "length", logprobs=[-0.1] * len(ids) if s.logprobs is not None else None)
            if ch is None:
                ids.append(EOS_ID)
                break
            ids.append(ord(ch))
            text += ch
            if ord(ch) in stop_ids:
                text = text[:-1]
                break
            hit = next((st for st in (s.stop or []) if text.endswith(st)), None)
            if hit is not None:
                if not s.include_stop_str_in_output:
                    text = text[: -len(hit)]
                break
        return Completion(ids, text, "stop", logprobs=[-0.1] * len(ids) if s.logprobs is not None else None)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Result]:
        sampling.validate()
        prompts = [self.render(r) for r in requests]
        self.calls.append(Call(prompts, sampling, [r.prompt_ids is not None for r in requests]))
        out = []
        for ids in prompts:
            key, partial = self._match(self.tokenizer.decode(ids))
            comps = [self._continue(key, partial, sampling) for _ in range(sampling.n)]
            usage = Usage(prompt_tokens=len(ids), cached_prompt_tokens=self._cached(ids),
                          generated_tokens=sum(len(c.token_ids) for c in comps))
            self.seen.append(tuple(ids))
            out.append(Result(prompt_ids=ids, completions=comps, usage=usage))
        return out

    def next_token_logprobs(self, prefixes, token_ids, lora=None) -> list[list[float]]:
        """Yes/No probes: logprobs looked up by the longest scripted substring in the decoded prefix."""
        out = []
        for ids in prefixes:
            text = self.tokenizer.decode(ids)
            hits = [k for k in self.yes_no_logprobs if k in text]
            key = max(hits, key=len) if hits else None
            out.append(list(self.yes_no_logprobs[key]) if key else [-0.69] * len(token_ids))
        return out

    def continuation_logprobs(self, prefixes, continuations, lora=None) -> list[list[float]]:
        return [[-0.1] * len(c) for c in continuations]

    def close(self) -> None:
        pass


class TableReward:
    """Outcome reward: score = the first table entry whose key occurs in the completion (else default).

    Counts one model call per item and ``len(completion)`` input tokens, like a model RM would.
    """

    name = "table"
    __name__ = "table"

    def __init__(self, table: dict[str, float], default: float | None = 0.0) -> None:
        self.table, self.default = table, default
        self.usage = RewardUsage()

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        out = []
        for c in completions:
            text = c if isinstance(c, str) else c[-1]["content"]
            self.usage.model_calls += 1
            self.usage.input_tokens += len(text)
            out.append(next((v for k, v in self.table.items() if k in text), self.default))
        return out


class TablePRM(TableReward):
    """Process reward: each step scores the table value of the first key it contains (else default)."""

    name = "table_prm"
    __name__ = "table_prm"

    def __init__(self, table: dict[str, float], default: float = 0.5, aggregation: str = "last") -> None:
        super().__init__(table, default)
        self.aggregation = aggregation
        self.step_calls: list[list[list[str]]] = []

    def step_scores(self, prompts, steps, **columns) -> list[list[float]]:
        self.usage.calls += 1
        self.usage.items += len(steps)
        self.step_calls.append([list(s) for s in steps])
        out = []
        for ss in steps:
            self.usage.model_calls += 1
            self.usage.input_tokens += sum(len(s) for s in ss)
            out.append([next((v for k, v in self.table.items() if k in s), self.default) for s in ss])
        return out

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        steps = [[s for s in (c if isinstance(c, str) else c[-1]["content"]).split("\n\n") if s.strip()]
                 for c in completions]
        rows = self.step_scores(prompts, steps, **columns)
        return [r[-1] if r else 0.0 for r in rows]
