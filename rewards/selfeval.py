"""Adaptive self-evaluation probe (arXiv 2410.02725): P("No") to "Would you do better if you started over?".

After a partial or full response the model is asked the question; one forced-choice probe reads the
next-token logprobs of "Yes" and "No" (their first tokens) through ``engine.next_token_logprobs`` and
renormalises over the two. P("No") is the model's confidence that restarting would not help: high means
keep this response. As a TRL reward it returns P("No") per completion.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twinloop.rewards.base import RewardBase, message_text
from twinloop.rewards.process import encode_prompt, text_ids, two_way_probability

SELF_EVAL_QUESTION = 'Would you do better if you started over? ("Yes." or "No.")'

class SelfEvalProbe(RewardBase):
    """P("No") on any Engine (optionally through a LoRA adapter trained for the probe).

    With a chat template (``chat=None`` picks it when the tokenizer has one) the question is a new user
    turn after the response as an assistant turn; otherwise it follows the response after a blank line.
    When neither answer has a finite logprob the probe gives ½ and counts it as unparseable.
    """

    name = "self_eval"
    kinds = ("selfeval",)
    head = "causal_lm"

    def __init__(self, engine: Any, question: str = SELF_EVAL_QUESTION, yes: str = "Yes", no: str = "No",
                 lora: str | None = None, chat: bool | None = None) -> None:
        super().__init__()
        self.engine, self.question, self.lora = engine, question, lora
        self.tokenizer = engine.tokenizer
        self.chat = bool(getattr(self.tokenizer, "chat_template", None)) if chat is None else chat
        self.yes_id, self.no_id = text_ids(self.tokenizer, yes)[0], text_ids(self.tokenizer, no)[0]
        if self.yes_id == self.no_id:
            raise ValueError(f"{yes!r} and {no!r} start with the same token; the probe cannot tell them apart")

    def probe_ids(self, prompt: Any, response: Any) -> list[int]:
        """Token ids of prompt + response + question, ending where the answer token goes."""
        if self.chat:
            messages = list(prompt) if isinstance(prompt, (list, tuple)) else [{"role": "user", "content": prompt}]
            messages += [{"role": "assistant", "content": message_text(response)},
                         {"role": "user", "content": self.question}]
            return encode_prompt(self.tokenizer, messages)
        text = f"{message_text(prompt)}{message_text(response)}\n\n{self.question}\n"
        return text_ids(self.tokenizer, text)

    def p_no(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float]:
        """P("No") per (prompt, response), in one engine call."""
        prefixes = [self.probe_ids(p, r) for p, r in zip(prompts, responses)]
        if not prefixes:
            return []
        logprobs = self.engine.next_token_logprobs(prefixes, [self.no_id, self.yes_id], lora=self.lora)
        self.usage.model_calls += len(prefixes)
        self.usage.input_tokens += sum(len(p) for p in prefixes)
        out = []
        for lp_no, lp_yes in logprobs:
            p = two_way_probability(lp_no, lp_yes)
            if p is None:
                self.usage.unparseable += 1
                p = 0.5
            out.append(p)
        return out

    def p_better(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float]:
        """P("Yes"): the model expects a restart to do better (used to stop sampling or prune)."""
        return [1.0 - p for p in self.p_no(prompts, responses)]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        return self.p_no(prompts, completions)
