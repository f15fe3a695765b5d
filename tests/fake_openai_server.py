"""A tiny local stand-in for a vLLM OpenAI-compatible server on 127.0.0.1 (for unit tests of the client
and of sharding): /health, /v1/models and /v1/completions over prompt token ids. ``reply(prompt_ids, body)``
builds the choices; ``fail_after`` makes every request after that many completions answer 503; ``delay``
seconds pass before each completion is answered; the response id is ``cmpl-<X-Request-Id>`` as vLLM's is.
``mixup`` answers each completion with the previous request's response (a broken proxy), to show that the
client's request-id check refuses it.

As a script it runs in a process of its own, so a test can kill it by PID:
``python fake_openai_server.py PORT_FILE [--delay S] [--die-after N] [--reply answer]``; ``--die-after N``
ends the process (``os._exit``) when completion N+1 arrives, mid-request, as a killed server would.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def echo_reply(prompt_ids, body):
    """n choices that append "x" and end at EOS (id 3)."""
    return [{"index": i, "text": "x", "token_ids": [ord("x"), 3], "finish_reason": "stop"} for i in range(body["n"])]


def prompt_key(prompt_ids) -> int:
    """A number that depends on the whole prompt: the answer a client of this prompt must get back."""
    key = 17
    for t in prompt_ids:
        key = (key * 31 + int(t)) % 1_000_003
    return key


def answer_reply(prompt_ids, body):
    """n choices answering ``\\boxed{prompt_key(prompt)}``: a response that went to another prompt is visible."""
    text = f"\\boxed{{{prompt_key(prompt_ids)}}}"
    return [{"index": i, "text": text, "token_ids": [ord(c) for c in text] + [3], "finish_reason": "stop"}
            for i in range(body["n"])]


class FakeServer:
    def __init__(self, reply=echo_reply, fail_after: int | None = None, delay: float = 0.0, mixup: bool = False,
                 die_after: int | None = None, port: int = 0) -> None:
        self.reply, self.fail_after, self.delay, self.mixup, self.die_after = reply, fail_after, delay, mixup, die_after
        self.completions = 0
        self.lock = threading.Lock()
        self._previous: dict | None = None
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
                    if owner.die_after is not None and owner.completions >= owner.die_after:
                        os._exit(1)  # the process dies mid-request, connections and all
                    owner.completions += 1
                if owner.delay:
                    time.sleep(owner.delay)
                choices = owner.reply(body["prompt"], body)
                n_gen = sum(len(c["token_ids"]) for c in choices)
                data = {"id": f"cmpl-{self.headers.get('X-Request-Id', 'none')}", "choices": choices,
                        "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": n_gen}}
                if owner.mixup:
                    with owner.lock:
                        data, owner._previous = owner._previous or data, data
                self._send(200, data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def failing(self) -> bool:
        return self.fail_after is not None and self.completions >= self.fail_after

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("port_file", help="the URL is written here once the server listens")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--die-after", type=int, default=None)
    parser.add_argument("--reply", choices=["echo", "answer"], default="answer")
    args = parser.parse_args()
    server = FakeServer(answer_reply if args.reply == "answer" else echo_reply, delay=args.delay,
                        die_after=args.die_after)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(server.url)
    os.replace(tmp, args.port_file)
    server.thread.join()


if __name__ == "__main__":
    main()
