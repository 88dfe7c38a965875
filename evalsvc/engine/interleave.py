"""Two runs of one suite measured together: each case's two requests sent at once, case after case.

Latency and throughput depend on how loaded the serving machine is at the moment of each request. Two runs
made one after the other each meet their own load (another job, a warm or cold cache, a throttled clock):
an effect common to every case of a run, it moves the runs' difference while the paired intervals, which
resample cases, cannot see it, so A/A speed intervals exclude 0 far more often than their level says. The
gate therefore interleaves its two arms: one worker sends a case's baseline request and its candidate
request together (started in an order a seeded coin draws), and ``concurrency`` workers move through the
suite side by side, so each arm has ``concurrency`` requests in flight, as in a run of its own, and never
waits for a connection of its client. Whatever load the machine is under then falls on both requests of a
case alike and cancels in the case's difference; what is left is per-case noise, which the paired bootstrap
does see (bench/speed_aa.py measures the A/A rate: docs/performance.md). Sending the two one after the other
from twice as many workers would give each arm a varying share of the requests in flight, so that requests
queue for their arm's connections in bursts common to many cases of one arm: an arm-level effect again.

Each arm keeps its own run, writer, breaker and progress bar, exactly as a run of its own does
(``Generator.send_one`` sends and records one request).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from evalsvc.config import VariantConfig
from evalsvc.engine.generate import FLUSH_S, Generator, Writer
from evalsvc.engine.plan import Item, Job, Planner
from evalsvc.engine.progress import RunBar
from evalsvc.serving import Served
from evalsvc.serving.endpoint import EndpointClient


@dataclass
class Side:
    """One side of an interleaved measurement: its run, how it is reached, and what plans its requests."""

    job: Job
    variant: VariantConfig
    fp: str
    served: Served
    planner: Planner


def pairs(order: dict[str, int], first: Iterator[Item], second: Iterator[Item]) -> Iterator[tuple[Item | None, Item | None]]:
    """Merge two arms' missing requests of one suite, both in suite order, into (first, second) pairs of the same
    case and sample; a request only one arm still lacks (a resumed run) comes alone."""
    a, b = next(first, None), next(second, None)
    while a is not None or b is not None:
        ka = (order[a.case.id], a.sample) if a is not None else None
        kb = (order[b.case.id], b.sample) if b is not None else None
        if kb is None or (ka is not None and ka < kb):
            yield a, None
            a = next(first, None)
        elif ka is None or kb < ka:
            yield None, b
            b = next(second, None)
        else:
            yield a, b
            a, b = next(first, None), next(second, None)


def interleaved(generator: Generator, arms: tuple[Side, Side], concurrency: int, seed: int, progress: bool | None) -> None:
    """Send both arms' missing requests of one suite, case by case, in one time window (see the module docstring)."""
    asyncio.run(_send_pairs(generator, arms, concurrency, seed, progress))


async def _send_pairs(generator: Generator, arms: tuple[Side, Side], concurrency: int, seed: int, progress: bool | None) -> None:
    clients = [EndpointClient.for_served(arm.served, generator.cfg) for arm in arms]
    writers = [Writer(generator.engine, arm.job) for arm in arms]
    bars = []
    for arm in arms:
        total = arm.job.asked
        bars.append(RunBar(arm.job.suite.name, arm.variant.name, total, total - arm.job.to_send, enabled=progress))
    order = {case.id: i for i, case in enumerate(arms[0].job.suite.cases)}
    queue = pairs(order, *(arm.planner.unfinished(arm.job, arm.variant, arm.fp) for arm in arms))
    coin = random.Random(seed)

    async def worker() -> None:
        for pair in queue:  # the workers share one iterator: memory stays flat however many cases
            sides = [side for side in ((0, 1) if coin.random() < 0.5 else (1, 0))
                     if pair[side] is not None and not arms[side].job.breaker_open]
            await asyncio.gather(*(generator.send_one(clients[side], arms[side].served, arms[side].variant, arms[side].fp,
                                                      arms[side].job, pair[side], writers[side], bars[side])  # type: ignore[arg-type]
                                   for side in sides))
            if all(arm.job.breaker_open for arm in arms):
                return

    async def tick() -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            for writer in writers:
                writer.flush()

    ticker = asyncio.create_task(tick())
    try:
        todo = max(arm.job.to_send for arm in arms)
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, todo)))))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker  # an exception the ticker died of is raised here, not lost with the task
        for writer, bar, client, arm in zip(writers, bars, clients, arms, strict=True):
            writer.flush()
            bar.close()
            await client.aclose()
            arm.job.sent = client.requests_sent
    for arm in arms:
        if arm.job.store_lost is not None:
            raise arm.job.store_lost
