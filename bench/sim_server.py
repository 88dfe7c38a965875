"""An OpenAI-compatible serving simulator: N parallel slots, a fixed delay per generated token.

Each request waits for a free slot, holds it for ``tokens x per_token_ms``, and answers with that many
tokens, the way a server with N decode slots and no batching slowdown would. A client that keeps every
slot busy finishes ``n`` requests in ``ceil(n / slots) x tokens x per_token_ms``: the ideal time the
engine benchmark compares against.

    python3 bench/sim_server.py --port 8099 --slots 8 --tokens 32 --per-token-ms 4

It also stands in for vLLM's server (``entrypoint: bench.sim_server`` of a vllm variant; the launcher's other
arguments are ignored), so a Ray task can hold a GPU and serve a "checkpoint" without one (bench/ray_scaleout.py).

A chat request whose messages ask for a ``VERDICT:`` line (an evalsvc judge) gets one at the end of its
answer, so the simulator can also judge. Serves POST /v1/chat/completions and /v1/completions, GET /v1/models,
and for the benchmark GET /stats (requests answered, slot-seconds busy, first start and last end) and POST /reset.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

WORDS = "the answer is 42 because six times seven makes forty two and nothing else".split()


class Simulator:
    def __init__(self, slots: int, tokens: int, per_token_s: float) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.tokens = tokens
        self.per_token_s = per_token_s
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.busy_s = 0.0
        self.first: float | None = None
        self.last: float | None = None

    async def generate(self, max_tokens: int | None) -> tuple[str, int]:
        n = min(self.tokens, max_tokens or self.tokens)
        async with self.slots:
            start = time.monotonic()
            self.first = start if self.first is None else self.first
            await asyncio.sleep(n * self.per_token_s)
            end = time.monotonic()
        self.requests += 1
        self.busy_s += end - start
        self.last = end
        return " ".join(WORDS[i % len(WORDS)] for i in range(n)), n

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        text, n = await self.generate(body.get("max_tokens"))
        if any("VERDICT" in str(m.get("content")) for m in body.get("messages", [])):
            text += "\nVERDICT: 7"
        return web.json_response({
            "id": f"sim-{self.requests}", "object": "chat.completion", "model": body.get("model", "sim"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 16, "completion_tokens": n, "total_tokens": 16 + n}})

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        text, n = await self.generate(body.get("max_tokens"))
        return web.json_response({
            "id": f"sim-{self.requests}", "object": "text_completion", "model": body.get("model", "sim"),
            "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 16, "completion_tokens": n, "total_tokens": 16 + n}})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim", "object": "model"}]})

    async def stats(self, request: web.Request) -> web.Response:
        span = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        return web.json_response({"requests": self.requests, "busy_s": self.busy_s, "span_s": span})

    async def do_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="tokens per answer (fewer when max_tokens asks for fewer)")
    ap.add_argument("--per-token-ms", type=float, default=4.0)
    args, _ = ap.parse_known_args()  # launched as a vLLM stand-in (bench/ray_scaleout.py): --model etc. are ignored
    sim = Simulator(args.slots, args.tokens, args.per_token_ms / 1000)
    app = web.Application(client_max_size=16 * 2**20)
    app.add_routes([web.post("/v1/chat/completions", sim.chat), web.post("/v1/completions", sim.completions),
                    web.get("/v1/models", sim.models), web.get("/stats", sim.stats), web.post("/reset", sim.do_reset)])
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main()
