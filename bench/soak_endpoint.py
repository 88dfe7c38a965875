"""One model server of bench/soak.py as its own process, so the soak can SIGKILL it and start it again on its port.

    python3 bench/soak_endpoint.py --port 8101 --role cand --work DIR --seed 7 --hang-s 3

An OpenAI-compatible stand-in (tests/fake_endpoint.py) answering "echo N" to "say N". The candidate answers
"no idea" to every third case while the file ``DIR/regressed`` exists. A share ``--fault-p`` of the requests gets
one fault, drawn evenly from ``FAULTS``; each fault is appended to ``DIR/faults-ROLE.txt`` (its kind, one a line)
so that the soak can count them after this process is killed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_endpoint import MALFORMED, FakeEndpoint, Override, Reset, Truncated, answer

# what evalsvc must meet and survive: 5xx and resets and hangs (transient: backoff), truncated JSON and answers of the
# wrong shape (malformed: backoff), 429 with a short Retry-After (waits for it), content: null (fatal: the case is
# stored as errored, never scored)
FAULTS = ("5xx", "reset", "hang", "truncated", "wrong_shape", "null_content", "429")
WRONG_SHAPES = ("content_number", "body_not_object", "usage_not_object", "finish_reason_object")


def case_number(body: dict[str, Any]) -> int:
    return int(re.findall(r"\d+", body["messages"][-1]["content"])[0])


class Server:
    def __init__(self, role: str, work: Path, seed: int, fault_p: float, hang_s: float) -> None:
        self.role, self.work, self.fault_p, self.hang_s = role, work, fault_p, hang_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def reply(self, body: dict[str, Any]) -> str:
        n = case_number(body)
        regressed = self.role == "cand" and (self.work / "regressed").exists()
        return "no idea" if regressed and n % 3 == 0 else f"echo {n}"

    def fault(self, number: int, body: dict[str, Any]) -> Override | None:
        with self.lock:
            if self.rng.random() >= self.fault_p:
                return None
            kind = self.rng.choice(FAULTS)
            shape = self.rng.choice(WRONG_SHAPES)
            with (self.work / f"faults-{self.role}.txt").open("a") as f:
                f.write(kind + "\n")
        if kind == "5xx":
            return self.rng.choice((500, 502, 503)), {}, b"injected fault"
        if kind == "reset":
            return Reset()
        if kind == "hang":  # longer than the soak's request_timeout_s: the client has given up when this answers
            time.sleep(self.hang_s)
            return None
        if kind == "truncated":
            whole = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": self.reply(body)}}]}).encode()
            return Truncated(whole, len(whole) // 2)
        if kind == "wrong_shape":
            return MALFORMED[shape][0]
        if kind == "null_content":
            return answer(None)
        return 429, {"retry-after": "1"}, b"slow down"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--role", choices=("base", "cand"), required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fault-p", type=float, default=0.05)
    ap.add_argument("--hang-s", type=float, default=3.0)
    args = ap.parse_args()
    server = Server(args.role, args.work, args.seed, args.fault_p, args.hang_s)
    endpoint = FakeEndpoint(reply=server.reply, port=args.port)
    endpoint.behaviour = server.fault
    with endpoint:
        threading.Event().wait()  # until SIGTERM or SIGKILL


if __name__ == "__main__":
    main()
