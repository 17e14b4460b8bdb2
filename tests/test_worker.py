"""Turns of one session run in order, one at a time; different sessions run concurrently."""

from __future__ import annotations

import asyncio

from sms_gateway.worker import KeyedRunner


async def test_same_key_in_order_one_at_a_time_other_keys_concurrently() -> None:
    runner = KeyedRunner(concurrency=10)
    events: list[tuple[str, str, int]] = []
    running: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    both_running = asyncio.Event()

    def job(key: str, n: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            running[key] += 1
            peak[key] = max(peak[key], running[key])
            events.append(("start", key, n))
            if running["a"] and running["b"]:
                both_running.set()
            await asyncio.sleep(0.01)
            events.append(("end", key, n))
            running[key] -= 1

        return run

    for n in range(5):
        runner.submit("a", job("a", n))
        runner.submit("b", job("b", n))
    await runner.join()
    assert [n for kind, key, n in events if key == "a" and kind == "start"] == [0, 1, 2, 3, 4]
    assert peak == {"a": 1, "b": 1}
    assert both_running.is_set()


async def test_a_crashing_job_does_not_stop_its_key() -> None:
    runner = KeyedRunner(concurrency=2)
    done: list[int] = []

    async def boom() -> None:
        raise RuntimeError("bug")

    async def ok() -> None:
        done.append(1)

    runner.submit("k", boom)
    runner.submit("k", ok)
    await runner.join()
    assert done == [1]


async def test_concurrency_is_bounded() -> None:
    runner = KeyedRunner(concurrency=3)
    active = 0
    peak = 0

    async def job() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    for key in range(20):
        runner.submit(key, job)
    await runner.join()
    assert peak == 3
