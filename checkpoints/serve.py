"""A small HTTP scoring endpoint for an exported reward (`twinloop serve-reward OUT --port P`), and a client
for a vLLM OpenAI-compatible pooling server's ``/classify`` endpoint.

Endpoints (JSON in, JSON out; 127.0.0.1 by default):
- ``GET /health`` -> ``{"status": "ok"}``; ``GET /info`` -> kind, class, settings, score range, usage;
- ``POST /score`` ``{"prompts": [...], "completions": [...], "columns": {...}}`` -> ``{"scores": [...]}``;
  prompts and completions are strings or chat message lists (``[{"role", "content"}]``);
- ``POST /step_scores`` (PRM) ``{"prompts": [...], "steps": [[...], ...]}`` -> ``{"step_scores": [[...]]}``;
- ``POST /compare`` (pairwise) ``{"prompt", "a", "b"}`` -> ``{"p_a_wins": p}``;
- ``POST /vote`` (GRM) ``{"query", "responses": [...], "k": k}`` -> totals, best and the judgments.

A request that does not parse gets a 400 naming the problem; a scoring error gets a 500 with its message,
and the server keeps serving. Scoring calls are serialised (the engine and the reward's counters are not
thread-safe); ``/health`` answers meanwhile.
"""
from __future__ import annotations

import json
import math
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 32 << 20  # bytes


class BadRequest(ValueError):
    """The request does not parse; the message goes back to the client with a 4xx status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------ validation
def _is_message_list(x: Any) -> bool:
    return isinstance(x, list) and bool(x) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x)


def _texts(body: dict[str, Any], key: str, n: int | None = None) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise BadRequest(f"field {key!r} must be a list (of strings or chat message lists)")
    for i, x in enumerate(value):
        if not isinstance(x, str) and not _is_message_list(x):
            raise BadRequest(f"{key}[{i}] must be a string or a list of {{'role', 'content'}} messages")
    if n is not None and len(value) != n:
        raise BadRequest(f"{len(value)} {key} for {n} prompts: the lists must have the same length")
    return value


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string")
    return value


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------ handlers
def handle_score(reward: Any, body: dict[str, Any]) -> dict[str, Any]:
    prompts = _texts(body, "prompts")
    completions = _texts(body, "completions", len(prompts))
    columns = body.get("columns") or {}
    if not isinstance(columns, dict) or not all(isinstance(v, list) and len(v) == len(prompts)
                                                for v in columns.values()):
        raise BadRequest("field 'columns' must map names to lists with one value per completion")
    return {"scores": _finite(reward(prompts, completions, **columns))}


def handle_step_scores(reward: Any, body: dict[str, Any]) -> dict[str, Any]:
    if not hasattr(reward, "step_scores"):
        raise BadRequest("this reward has no per-step scores (not a PRM)", 404)
    prompts = _texts(body, "prompts")
    steps = body.get("steps")
    if not isinstance(steps, list) or len(steps) != len(prompts) or not all(
            isinstance(s, list) and s and all(isinstance(t, str) for t in s) for s in steps):
        raise BadRequest("field 'steps' must hold, per prompt, a non-empty list of step strings")
    return {"step_scores": _finite(reward.step_scores(prompts, steps))}


def handle_compare(reward: Any, body: dict[str, Any]) -> dict[str, Any]:
    if not hasattr(reward, "compare"):
        raise BadRequest("this reward does not compare two solutions (not pairwise)", 404)
    return {"p_a_wins": reward.compare(_string(body, "prompt"), _string(body, "a"), _string(body, "b"))}


def handle_vote(reward: Any, body: dict[str, Any]) -> dict[str, Any]:
    if not hasattr(reward, "vote") or not hasattr(reward, "judge_many"):
        raise BadRequest("this reward does not vote (not a GRM)", 404)
    responses = body.get("responses")
    if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
        raise BadRequest("field 'responses' must be a non-empty list of strings")
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 64):
        raise BadRequest("field 'k' must be an integer from 1 to 64")
    v = reward.vote(_string(body, "query"), responses, k)
    return {"totals": v.totals, "best": v.best, "used": v.used,
            "judgments": [{"scores": j.scores, "text": j.text} for j in v.judgments]}


ROUTES = {"/score": handle_score, "/step_scores": handle_step_scores, "/compare": handle_compare,
          "/vote": handle_vote}


class RewardServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding one reward; scoring under a lock."""

    daemon_threads = True

    def __init__(self, reward: Any, info: dict[str, Any], host: str = "127.0.0.1", port: int = 0) -> None:
        self.reward, self.info, self.lock = reward, info, threading.Lock()
        self.failures = 0
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: RewardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; errors are answered in JSON
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/info":
            usage = getattr(getattr(self.server.reward, "usage", None), "as_dict", dict)()
            self._send(200, {**self.server.info, "usage": usage, "failures": self.server.failures})
        else:
            self._send(404, {"error": f"no such endpoint {self.path}; GET /health or /info, POST {sorted(ROUTES)}"})

    def do_POST(self) -> None:  # noqa: N802
        route = ROUTES.get(self.path)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._send(413 if length > MAX_BODY else 400, {"error": f"bad Content-Length (max {MAX_BODY} bytes)"})
            return
        raw = self.rfile.read(length)
        if route is None:
            self._send(404, {"error": f"no such endpoint {self.path}; POST one of {sorted(ROUTES)}"})
            return
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            self._send(400, {"error": f"the request body is not valid JSON: {e}"})
            return
        if not isinstance(body, dict):
            self._send(400, {"error": "the request body must be a JSON object"})
            return
        try:
            with self.server.lock:
                result = route(self.server.reward, body)
        except BadRequest as e:
            self._send(e.status, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - a scoring failure answers 500 and the server keeps serving
            self.server.failures += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            self._send(500, {"error": f"scoring failed: {type(e).__name__}: {str(e)[:500]}",
                             "at": f"{where.filename}:{where.lineno}"})
        else:
            self._send(200, result)


def make_server(reward: Any, spec: dict[str, Any] | None = None, host: str = "127.0.0.1",
                port: int = 0) -> RewardServer:
    """A server for ``reward`` (not yet serving: call ``serve_forever`` or run it in a thread)."""
    spec = spec or {}
    info = {k: spec.get(k) for k in ("kind", "reward_class", "score_range", "settings")}
    info["endpoints"] = sorted(ROUTES)
    return RewardServer(reward, info, host, port)


# ------------------------------------------------------------------------------------------ vLLM /classify
class ServedClassifier:
    """Engine-like ``classify`` over a vLLM pooling server (``python -m vllm.entrypoints.openai.api_server
    --runner pooling``): token ids go to ``POST /classify`` with ``use_activation: false`` and come back as
    raw logits, so ``ScalarRM(engine=ServedClassifier(url, tokenizer))`` scores through the server."""

    def __init__(self, base_url: str, tokenizer: Any, model: str | None = None, timeout: float = 60.0) -> None:
        import requests

        self.base_url, self.tokenizer, self.timeout = base_url.rstrip("/"), tokenizer, timeout
        self.session = requests.Session()
        self.model = model or self._get("/v1/models")["data"][0]["id"]

    def _get(self, path: str) -> dict[str, Any]:
        r = self.session.get(self.base_url + path, timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def classify(self, prompts: list[list[int]]) -> list[list[float]]:
        if not prompts:
            return []
        r = self.session.post(self.base_url + "/classify", timeout=self.timeout,
                              json={"model": self.model, "input": [list(map(int, p)) for p in prompts],
                                    "use_activation": False})
        if r.status_code != 200:
            raise RuntimeError(f"vLLM /classify answered {r.status_code}: {r.text[:300]}")
        rows = sorted(r.json()["data"], key=lambda d: d["index"])
        return [[float(x) for x in d["probs"]] for d in rows]
