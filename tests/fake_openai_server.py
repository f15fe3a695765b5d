"""A tiny local stand-in for a vLLM OpenAI-compatible server on 127.0.0.1 (for unit tests of the client
and of sharding): /health, /v1/models and /v1/completions over prompt token ids. ``reply(prompt_ids, body)``
builds the choices; ``fail_after`` makes every request after that many completions answer 503."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo_reply(prompt_ids, body):
    """n choices that append "x" and end at EOS (id 3)."""
    return [{"index": i, "text": "x", "token_ids": [ord("x"), 3], "finish_reason": "stop"} for i in range(body["n"])]


class FakeServer:
    def __init__(self, reply=echo_reply, fail_after: int | None = None) -> None:
        self.reply, self.fail_after = reply, fail_after
        self.completions = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code, data):
                raw = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                if owner.failing():
                    return self._send(503, {"error": "down"})
                if self.path == "/health":
                    return self._send(200, {})
                return self._send(200, {"data": [{"id": "fake-model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with owner.lock:
                    if owner.failing():
                        return self._send(503, {"error": "down"})
                    owner.completions += 1
                choices = owner.reply(body["prompt"], body)
                n_gen = sum(len(c["token_ids"]) for c in choices)
                self._send(200, {"choices": choices, "usage": {"prompt_tokens": len(body["prompt"]),
                                                               "completion_tokens": n_gen}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def failing(self) -> bool:
        return self.fail_after is not None and self.completions >= self.fail_after

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
