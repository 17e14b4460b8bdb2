"""Turns of one session run in order, one at a time; different sessions run concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from sms_gateway.metrics import Metrics
from sms_gateway.model import InboundMessage
from sms_gateway.store.base import InboundRecord, StoreUnavailable
from sms_gateway.store.sqlite import SQLiteStore
from sms_gateway.worker import InboundWorker, KeyedRunner
from tests.waiting import until


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


class _SlowTurns:
    """Stands in for Conversations: records each message's turn; user A's first turn waits for `release`."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.first_started = asyncio.Event()

    async def handle_inbound(self, message: InboundMessage, *, inbound_key: str | None = None) -> bool:
        self.started.append(message.text)
        if message.text == "a0":
            self.first_started.set()
            await self.release.wait()
        if inbound_key is not None:  # as a turn's end does
            await self.store.complete_inbound(inbound_key)
        return True


class _CountingLeases(SQLiteStore):
    leases = 0

    async def lease_inbound(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[InboundRecord]:
        self.leases += 1
        return await super().lease_inbound(owner, limit, lease_seconds, now)


async def test_messages_behind_a_running_turn_cost_no_lease_each_and_run_in_order_after_it(tmp_path: Path) -> None:
    store = _CountingLeases(f"sqlite:///{tmp_path / 'gw.db'}")
    await store.open()
    turns = _SlowTurns(store)
    worker = InboundWorker(store, turns, Metrics(), poll_interval=30.0)  # type: ignore[arg-type]
    running = asyncio.create_task(worker.run())

    async def webhook(user: str, text: str) -> None:  # what the inbound webhook does once it has parsed one
        message = InboundMessage("twilio", f"SM{user}{text}", "+15005550006", user, text, ())
        assert await store.accept_inbound(message)
        worker.notify(message)

    try:
        await webhook("+15550000001", "a0")
        await asyncio.wait_for(turns.first_started.wait(), 5.0)
        leases_before = store.leases
        for n in range(1, 21):  # the user goes on texting while the engine works on the first message
            await webhook("+15550000001", f"a{n}")
        await webhook("+15550000002", "b0")  # another user's message is leased at once all the same
        await until(lambda: "b0" in turns.started, 5.0, "the other user's turn")
        assert store.leases - leases_before <= 3, "not one lease per message queued behind the running turn"
        turns.release.set()
        await until(lambda: len(turns.started) == 22, 5.0, "every turn")
        assert [t for t in turns.started if t.startswith("a")] == [f"a{n}" for n in range(21)]
        async with asyncio.timeout(5.0):  # and each is completed in the store once its turn has ended
            while await store.pending_inbound_count():
                await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.stop()
        await store.close()


async def test_a_lease_that_took_less_than_it_had_room_for_is_not_followed_by_an_empty_one(tmp_path: Path) -> None:
    """A quiet gateway: each message costs the lease that takes it and the one its turn's end wakes (for the
    conversation's next message), not a third that asks again at once and finds nothing."""
    store = _CountingLeases(f"sqlite:///{tmp_path / 'gw.db'}")
    await store.open()
    turns = _SlowTurns(store)
    turns.release.set()
    worker = InboundWorker(store, turns, Metrics(), poll_interval=30.0)  # type: ignore[arg-type]
    running = asyncio.create_task(worker.run())

    def started(count: int) -> Callable[[], bool]:
        return lambda: len(turns.started) == count

    try:
        await until(lambda: store.leases == 1, 5.0, "the first lease at start")
        for n in range(5):
            message = InboundMessage("twilio", f"SMq{n}", "+15005550006", f"+1555000000{n}", f"q{n}", ())
            assert await store.accept_inbound(message)
            worker.notify(message)
            await until(started(n + 1), 5.0, "the turn")
            async with asyncio.timeout(5.0):
                while await store.pending_inbound_count():
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # the lease the turn's end woke
        assert store.leases - 1 == 10, "two leases per message"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.stop()
        await store.close()


class _StoreFailsOnce:
    """Stands in for Conversations: the first turn of each message meets an unavailable store (as when Redis
    restarts mid-turn); the next completes it."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.started: list[str] = []

    async def handle_inbound(self, message: InboundMessage, *, inbound_key: str | None = None) -> bool:
        self.started.append(message.text)
        if self.started.count(message.text) == 1:
            raise StoreUnavailable("redis: connection lost")
        if inbound_key is not None:
            await self.store.complete_inbound(inbound_key)
        return True


async def test_a_turn_cut_short_by_the_store_runs_again_in_seconds_not_after_its_lease(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'gw.db'}")
    await store.open()
    turns = _StoreFailsOnce(store)
    worker = InboundWorker(store, turns, Metrics(), lease_seconds=60)  # type: ignore[arg-type]
    running = asyncio.create_task(worker.run())
    try:
        for n in range(3):
            message = InboundMessage("twilio", f"SMcut{n}", "+15005550006", f"+1555000000{n}", f"cut {n}", ())
            assert await store.accept_inbound(message)
            worker.notify(message)
        await until(lambda: len(turns.started) == 6, 20.0, "each turn run again (its lease is 60 s)")
        assert sorted(turns.started) == sorted([f"cut {n}" for n in range(3)] * 2)
        async with asyncio.timeout(5.0):
            while await store.pending_inbound_count():
                await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.stop()
        await store.close()
