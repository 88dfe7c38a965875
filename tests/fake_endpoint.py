"""An OpenAI-compatible stand-in for fault injection: counts requests, misbehaves on cue.

Only used where a real server cannot be made to fail on purpose; every feature is
also exercised against the real llama.cpp server in the ``model`` tests.
"""

from __future__ import annotations

import io
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reset:
    """Answer nothing: drop the connection with a TCP RST (SO_LINGER 0), as a crashing proxy does."""


@dataclass(frozen=True)
class Truncated:
    """Declare the whole body's Content-Length, send only its first ``sent`` bytes, then close."""

    body: bytes
    sent: int
    status: int = 200


@dataclass(frozen=True)
class Trickle:
    """Send the body one byte every ``interval_s``: each read is quick, the whole response is not."""

    body: bytes
    interval_s: float


Override = tuple[int, dict[str, str], bytes] | Reset | Truncated | Trickle
Behaviour = Callable[[int, dict[str, Any]], Override | None]


def answer(content: object = "echo", *, finish_reason: object = "stop", usage: object = None, **choice: object,
           ) -> tuple[int, dict[str, str], bytes]:
    """A 200 chat answer with any field of any shape, the way a misbehaving server would send it."""
    body: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": finish_reason,
                                         "message": {"role": "assistant", "content": content}, **choice}]}
    if usage is not None:
        body["usage"] = usage
    return 200, {}, json.dumps(body).encode()


# 200 answers that do not fit the OpenAI response schema: name -> (the answer, the field the error must name)
MALFORMED: dict[str, tuple[tuple[int, dict[str, str], bytes], str]] = {
    "content_number": (answer(12345), r"choices\[0\]\.message\.content is int 12345"),
    "content_part_not_text": (answer([{"type": "image_url", "image_url": {"url": "x"}}]),
                              r"choices\[0\]\.message\.content\[0\] is dict"),
    "usage_not_object": (answer(usage="n/a"), r"usage is str 'n/a'"),
    "tokens_past_2_31": (answer(usage={"prompt_tokens": 10**30, "completion_tokens": 2}),
                         r"usage\.prompt_tokens is int 1000000000000000000000000000000"),
    "tokens_as_text": (answer(usage={"prompt_tokens": "five"}), r"usage\.prompt_tokens is str 'five'"),
    "finish_reason_object": (answer(finish_reason={"type": "stop"}), r"choices\[0\]\.finish_reason is dict"),
    "logprobs_not_object": (answer(logprobs=[1, 2]), r"choices\[0\]\.logprobs is list"),
    "body_not_object": ((200, {}, b"[1, 2]"), r"the body is list"),
    "broken_gzip": ((200, {"content-encoding": "gzip"}, b"this is no gzip stream"),
                    r"the body could not be decoded \(Content-Encoding: gzip\)"),
}


def answer_from_prompt(body: dict[str, Any]) -> str:
    """Deterministic reply: echoes the last user message, so checks can be aimed at it."""
    return "echo: " + body["messages"][-1]["content"]


def word_logprobs(body: dict[str, Any], text: str, sureness: float = 0.8) -> dict[str, Any]:
    """Chat log-probabilities for an answer whose tokens are its words: each word chosen with probability
    ``sureness``, the alternatives "x" and "y" sharing half the rest (the tail holds the other half)."""
    k = int(body.get("top_logprobs", 2))
    chosen, alt = math.log(sureness), math.log((1 - sureness) / 4)
    return {"content": [{"token": w, "logprob": chosen,
                         "top_logprobs": [{"token": w, "logprob": chosen}, {"token": "x", "logprob": alt},
                                          {"token": "y", "logprob": alt}][:k]} for w in text.split(" ")]}


class FakeEndpoint:
    def __init__(self, reply: Callable[[dict[str, Any]], str] = answer_from_prompt, delay_s: float = 0.0,
                 port: int = 0) -> None:
        """``port`` 0 takes a free one; a fixed port lets a restarted process serve the same base_url."""
        self.reply = reply
        self.delay_s = delay_s
        self.behaviour: Behaviour | None = None  # (request number, body) -> override response or None
        self.logprobs: Callable[[dict[str, Any], str], dict[str, Any]] | None = None  # (body, text) -> choice logprobs
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {}, json.dumps({"data": [{"id": "fake"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with outer._lock:
                    outer.requests.append(body)
                    number = len(outer.requests)
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                override = outer.behaviour(number, body) if outer.behaviour else None
                if isinstance(override, Reset):
                    self._reset()
                    return
                if isinstance(override, Truncated):
                    self._send(override.status, {}, override.body, cut=override.sent)
                    return
                if isinstance(override, Trickle):
                    self._send(200, {}, override.body, cut=0)
                    self._trickle(override)
                    return
                if override is not None:
                    self._send(*override)
                    return
                text = outer.reply(body)
                payload = {"id": f"c{number}", "object": "chat.completion", "model": body.get("model"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split())}}
                if outer.logprobs is not None and body.get("logprobs"):
                    payload["choices"][0]["logprobs"] = outer.logprobs(body, text)
                self._send(200, {}, json.dumps(payload).encode())

            def _send(self, status: int, headers: dict[str, str], data: bytes, cut: int | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data if cut is None else data[:cut])
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if cut is not None:
                    self.close_connection = True  # the client sees EOF before Content-Length bytes arrived

            def _trickle(self, how: Trickle) -> None:
                try:
                    for byte in how.body:
                        time.sleep(how.interval_s)
                        self.wfile.write(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _reset(self) -> None:
                sock = self.connection
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()  # drop the makefile reference so close() really closes: an RST, not a FIN
                sock.close()
                self.rfile, self.wfile = io.BytesIO(), io.BytesIO()  # what the handler closes afterwards
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
