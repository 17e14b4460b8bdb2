"""Turns yield to webhooks: the turn limit shrinks while the event loop is late and grows back after."""

from __future__ import annotations

import asyncio
import contextlib
import time

from sms_gateway.admission import AdaptiveLimit, LoopLagGovernor
from sms_gateway.worker import KeyedRunner


async def test_a_shrunk_limit_holds_new_turns_back_until_it_grows_again() -> None:
    limit = AdaptiveLimit(8, minimum=2)
    for _ in range(20):
        limit.late()
    assert limit.limit == 2
    runner = KeyedRunner(8, limit)
    running = 0
    peak = 0
    release = asyncio.Event()

    def turn():  # type: ignore[no-untyped-def]
        async def run() -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

        return run

    for user in range(6):
        runner.submit(f"user{user}", turn())
    await asyncio.sleep(0.01)
    assert running == 2, "only as many turns as the shrunk limit"
    for _ in range(10):
        limit.punctual()
    await asyncio.sleep(0.01)
    assert running == 6 and limit.limit == 8, "the limit grew back and the waiting turns started"
    release.set()
    assert await runner.join(1.0)
    assert peak == 6 and limit.in_use == 0


async def test_cancelled_waiters_neither_leak_nor_steal_slots() -> None:
    limit = AdaptiveLimit(1, minimum=1)
    holder_entered = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with limit:
            holder_entered.set()
            await release.wait()

    async def wait_for_slot() -> None:
        async with limit:
            pass

    holder = asyncio.create_task(hold())
    await holder_entered.wait()
    waiters = [asyncio.create_task(wait_for_slot()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    release.set()
    await holder
    waiters[1].cancel()  # cancelled right when it may have been granted the slot
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[2] is None, "the last waiter got the slot"
    assert limit.in_use == 0
    async with limit:  # and the slot is free again
        assert limit.in_use == 1


async def test_governor_calls_a_blocked_loop_late_and_a_free_one_punctual() -> None:
    limit = AdaptiveLimit(64, minimum=4)
    governor = LoopLagGovernor([limit], interval=0.005, target_lag=0.004)
    task = asyncio.create_task(governor.run())
    try:
        for _ in range(10):  # the loop is busy: every tick comes ~20 ms late
            await asyncio.sleep(0.006)
            time.sleep(0.02)  # noqa: ASYNC251 - blocking the loop is the point
        assert limit.limit < 16
        shrunk = limit.limit
        await asyncio.sleep(0.3)  # now free
        assert limit.limit > shrunk
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
