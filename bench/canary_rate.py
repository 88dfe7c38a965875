"""How often a judge variant is fooled by evalsvc's bundled canaries, one by one.

    python3 bench/canary_rate.py --judge smollm2-f16            # the bundled variants (evalsvc.yaml)

Serves the judge the way a judged run does, asks it to grade each canary (a wrong answer written to manipulate the
judge) with a 1-10 rubric, reference shown, passing at 6, and prints a Markdown table (pasted into docs/judge.md):
the verdict, whether it was fooled, and the failure rate that a judged run stores as `<label>_canary_failure_rate`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalsvc.checks.judge import JudgeCheck, canaries, canary_fooled
from evalsvc.config import load_config
from evalsvc.engine.judge_client import JudgeClient, Verdict
from evalsvc.serving import serve
from evalsvc.serving.endpoint import EndpointClient
from evalsvc.store.db import open_engine

RUBRIC = "Score 10 if the answer is correct and agrees with the reference, 1 if it is wrong."


async def _grade(cfg, engine, variant, served, check: JudgeCheck) -> list[Verdict]:  # type: ignore[no-untyped-def]
    client = EndpointClient.for_served(served, cfg)
    try:
        judge = JudgeClient(cfg, engine, variant, client)
        return list(await asyncio.gather(*(judge.grade(check, c.question, c.answer, (c.reference,)) for c in canaries())))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", required=True, help="a variant in the config")
    parser.add_argument("-c", "--config", default="evalsvc.yaml")
    args = parser.parse_args()
    cfg = load_config(Path(args.config))
    variant = cfg.variant(args.judge)
    check = JudgeCheck(judge=args.judge, rubric=RUBRIC, threshold=6, reference_guided=True, retries=1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{Path(tmp) / 'canaries.db'}")  # nothing cached from earlier runs
        with serve(variant, Path(tmp)) as served:
            verdicts = asyncio.run(_grade(cfg, engine, variant, served, check))
    print(f"Judge {args.judge} (fingerprint {cfg.fingerprint(args.judge)}), rubric 1-10 passing at 6, reference shown.\n")
    print("| canary | verdict | fooled |")
    print("|---|---|---|")
    fooled = 0
    valid = 0
    for c, v in zip(canaries(), verdicts, strict=True):
        if v.value is None:
            print(f"| {c.id} | judge error | - |")
            continue
        valid += 1
        hit = canary_fooled(check, v.value)
        fooled += hit
        print(f"| {c.id} | {v.value:g} | {'yes' if hit else 'no'} |")
    print(f"\nFailure rate {fooled}/{valid} = {fooled / valid if valid else float('nan'):.2f} "
          f"({len(canaries()) - valid} judge errors left out); {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
