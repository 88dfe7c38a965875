"""A stand-in for an engine's OpenAI server, started the way a launcher starts vLLM (python -m ... --port P).

It records its argv and CUDA_VISIBLE_DEVICES, then serves echo answers; STAND_IN_MODE=crash exits at once,
STAND_IN_MODE=mute never answers; STAND_IN_IGNORE_TERM=1 ignores SIGTERM. For the launcher's lifecycle and failure paths only.
"""

from __future__ import annotations

import json
import os
import sys
import time

from tests.fake_endpoint import FakeEndpoint


def main() -> None:
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    record = os.environ.get("STAND_IN_RECORD")
    if record:
        with open(record, "w") as fh:
            json.dump({"argv": args, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}, fh)
    if os.environ.get("STAND_IN_IGNORE_TERM"):  # a server that does not stop when asked (or whose children do not)
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mode = os.environ.get("STAND_IN_MODE", "")
    if mode == "crash":
        print("stand-in: cannot load the model (simulated)", flush=True)
        sys.exit(3)
    if mode == "mute":
        time.sleep(3600)
    endpoint = FakeEndpoint(delay_s=float(os.environ.get("STAND_IN_DELAY", "0")))
    endpoint.server.server_close()
    from http.server import ThreadingHTTPServer

    endpoint.server = ThreadingHTTPServer(("127.0.0.1", port), endpoint.server.RequestHandlerClass)
    endpoint.server.serve_forever()


if __name__ == "__main__":
    main()
