"""transformers ``generate`` backend: the fallback when vLLM is unavailable, and the reference in tests."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .engine import (
    Completion,
    EngineError,
    Request,
    Result,
    SamplingConfig,
    Usage,
    check_dtype,
    check_model_dir,
    encode_request,
)


class _AllowOnly:
    """Logits processor that masks every token outside ``allowed`` (forced-choice probes)."""

    def __init__(self, allowed: Sequence[int]) -> None:
        self.allowed = list(allowed)

    def __call__(self, input_ids, scores):
        import torch

        mask = torch.full_like(scores, float("-inf"))
        mask[:, self.allowed] = 0.0
        return scores + mask


class HFEngine:
    """Engine over a transformers causal LM. LoRA adapters (peft folders) are loaded per request."""

    def __init__(self, model: Any, tokenizer: Any = None, dtype: str = "float32", device: str = "cpu") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_dtype(dtype)
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}[dtype]
        if isinstance(model, str):
            check_model_dir(model)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        else:
            if tokenizer is None:
                raise EngineError("HFEngine(model_object) also needs tokenizer=")
            self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.device = device
        self._peft = None  # PeftModel wrapping self.model once an adapter is requested
        self._adapters: dict[str, str] = {}

    # ---- LoRA -------------------------------------------------------------------------------------------
    def _model_for(self, lora: str | None):
        import contextlib

        if lora is None:
            return self.model if self._peft is None else self._peft, (
                contextlib.nullcontext() if self._peft is None else self._peft.disable_adapter())
        import os

        from peft import PeftModel
        if not os.path.isdir(lora):
            raise EngineError(f"LoRA adapter folder {lora!r} does not exist")
        name = self._adapters.get(lora)
        if name is None:
            name = f"adapter{len(self._adapters) + 1}"
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, lora, adapter_name=name).eval()
            else:
                self._peft.load_adapter(lora, adapter_name=name)
            self._adapters[lora] = name
        self._peft.set_adapter(name)
        return self._peft, contextlib.nullcontext()

    # ---- generation -------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Result]:
        sampling.validate()
        return [self._generate_one(encode_request(self.tokenizer, r), r.lora, sampling, i)
                for i, r in enumerate(requests)]

    def _generate_one(self, ids: list[int], lora: str | None, s: SamplingConfig, index: int) -> Result:
        import torch
        from transformers import LogitsProcessorList

        model, ctx = self._model_for(lora)
        eos = {self.tokenizer.eos_token_id, *(s.stop_token_ids or [])} - {None}
        kwargs: dict[str, Any] = dict(max_new_tokens=s.max_tokens, num_return_sequences=s.n,
                                      eos_token_id=sorted(eos), pad_token_id=self.tokenizer.pad_token_id,
                                      return_dict_in_generate=True, output_logits=True)
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        if s.allowed_token_ids:
            kwargs["logits_processor"] = LogitsProcessorList([_AllowOnly(s.allowed_token_ids)])
        if s.seed is not None:
            torch.manual_seed(s.seed + index * s.n)
        x = torch.tensor([ids], device=self.device)
        with ctx, torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kwargs)
        # raw (untempered) logprobs, as vLLM reports by default
        logps = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # [n, T, V]
        comps = []
        for j in range(s.n):
            gen = out.sequences[j, len(ids):].tolist()
            comps.append(self._completion(gen, logps[j], s, eos))
        usage = Usage(prompt_tokens=len(ids), generated_tokens=sum(len(c.token_ids) for c in comps))
        return Result(prompt_ids=ids, completions=comps, usage=usage)

    def _completion(self, gen: list[int], logps, s: SamplingConfig, eos: set[int]) -> Completion:
        pad = self.tokenizer.pad_token_id
        # a sample ends at its first EOS/stop token; what follows is padding (shorter samples of an n-sample
        # batch), even when the pad token is the EOS token, so it is neither returned nor counted as generated
        first = next((k for k, t in enumerate(gen) if t in eos), None)
        if first is not None:
            gen = gen[: first + 1]
        else:
            end = len(gen)
            while end > 0 and gen[end - 1] == pad:
                end -= 1
            gen = gen[:end]
        body = self.tokenizer.decode([t for t in gen if t not in eos], skip_special_tokens=True)
        if s.stop and pad in eos and first is not None and any(st in body for st in s.stop):
            gen = gen[:first]  # stopped by a stop string: the "EOS" after it is a pad token
        finish = "length"
        if gen and gen[-1] in eos:
            finish = "stop"
            # vLLM leaves the EOS token in token_ids but not in the text
        text = self.tokenizer.decode([t for t in gen if t not in eos], skip_special_tokens=True)
        if s.stop:
            hits = [(text.find(st), st) for st in s.stop if st in text]
            if hits:
                pos, st = min(hits)
                text = text[: pos + len(st)] if s.include_stop_str_in_output else text[:pos]
                finish = "stop"
        lps = tops = None
        if s.logprobs is not None:
            lps = [float(logps[t, tok]) for t, tok in enumerate(gen)]
            if s.logprobs > 0:
                tops = []
                for t, tok in enumerate(gen):
                    vals, idx = logps[t].topk(s.logprobs)
                    row = {int(i): float(v) for v, i in zip(vals, idx)}
                    row[int(tok)] = float(logps[t, tok])
                    tops.append(row)
        return Completion(token_ids=gen, text=text, finish_reason=finish, logprobs=lps, top_logprobs=tops)

    # ---- scoring ----------------------------------------------------------------------------------------
    def _logprobs_of(self, ids: list[int], lora: str | None):
        import torch

        model, ctx = self._model_for(lora)
        with ctx, torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    def continuation_logprobs(self, prefixes: Sequence[list[int]], continuations: Sequence[list[int]],
                              lora: str | None = None) -> list[list[float]]:
        if len(prefixes) != len(continuations):
            raise EngineError("continuation_logprobs needs one continuation per prefix")
        out = []
        for p, c in zip(prefixes, continuations):
            if not c:
                out.append([])
                continue
            if not p:
                raise EngineError("continuation_logprobs needs a non-empty prefix (the first token has no logprob)")
            lp = self._logprobs_of(list(p) + list(c), lora)
            out.append([float(lp[len(p) - 1 + k, tok]) for k, tok in enumerate(c)])
        return out

    def next_token_logprobs(self, prefixes: Sequence[list[int]], token_ids: Sequence[int],
                            lora: str | None = None) -> list[list[float]]:
        out = []
        for p in prefixes:
            last = self._logprobs_of(list(p), lora)[-1]
            out.append([float(last[t]) for t in token_ids])
        return out

    def load_weights(self, named_tensors: Sequence[tuple[str, Any]]) -> None:
        self.model.load_state_dict(dict(named_tensors), strict=False)

    def close(self) -> None:
        self.model = None
        self._peft = None
