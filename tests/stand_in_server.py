"""A stand-in for an engine's OpenAI server, started the way a launcher starts vLLM (python -m ... --port P).

It records its argv and CUDA_VISIBLE_DEVICES, then serves echo answers; STAND_IN_MODE=crash exits at once,
STAND_IN_MODE=mute never answers; STAND_IN_IGNORE_TERM=1 ignores SIGTERM. STAND_IN_LOG appends one JSON line per
event (start, request, stop) with the served model name, devices, Ray node, pid and time; STAND_IN_KILL_PARENT_AT=N
SIGKILLs the process that started it (a Ray worker dying mid-run) at its N-th request, once per STAND_IN_KILL_MARK file.
Each may also be given on the command line (--stand-in-log ..., from a variant's extra_args).
For the launcher's lifecycle and failure paths, and the Ray executor's placement and failures, only.
"""

from __future__ import annotations

import json
import os
import sys
import time

from tests.fake_endpoint import FakeEndpoint


def _opt(name: str) -> str | None:
    """STAND_IN_<NAME> from the command line (--stand-in-<name>, as a variant's extra_args) or the environment."""
    flag = "--stand-in-" + name.lower().replace("_", "-")
    if flag in sys.argv:
        return sys.argv[sys.argv.index(flag) + 1]
    return os.environ.get("STAND_IN_" + name)


def _event(kind: str, model: str, **fields: object) -> None:
    log = _opt("LOG")
    if log:
        line = {"event": kind, "model": model, "pid": os.getpid(), "t": time.time(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "node": os.environ.get("EVALSVC_DEVICE_SCOPE"), **fields}
        with open(log, "a") as fh:
            fh.write(json.dumps(line) + "\n")


def _kill_parent_once(number: int) -> None:
    at, mark = _opt("KILL_PARENT_AT"), _opt("KILL_MARK")
    if at and number == int(at) and mark and not os.path.exists(mark):
        import signal

        open(mark, "w").close()
        os.kill(os.getppid(), signal.SIGKILL)


def main() -> None:
    args = sys.argv[1:]
    port = int(args[args.index("--port") + 1])
    model = args[args.index("--served-model-name") + 1] if "--served-model-name" in args else "stand-in"
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
    endpoint = FakeEndpoint(delay_s=float(_opt("DELAY") or 0))
    if _opt("LOG") or _opt("KILL_PARENT_AT"):
        import signal

        def stopped(*_: object) -> None:
            _event("stop", model)
            os._exit(0)

        if not os.environ.get("STAND_IN_IGNORE_TERM"):
            signal.signal(signal.SIGTERM, stopped)

        def behaviour(number: int, body: dict) -> None:
            _event("request", model, prompt=body["messages"][-1]["content"])
            _kill_parent_once(number)

        endpoint.behaviour = behaviour
        _event("start", model)
    endpoint.server.server_close()
    from http.server import ThreadingHTTPServer

    endpoint.server = ThreadingHTTPServer(("127.0.0.1", port), endpoint.server.RequestHandlerClass)
    endpoint.server.serve_forever()


if __name__ == "__main__":
    main()
