"""Lease owners and their heartbeats (`sms_gateway.owners`) on real stores shared by two "processes": two
SQLiteStores on one file, two RedisStores on one throw-away Redis. Whole gateway processes killed with -9 are
in tests/test_faults*.py."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sms_gateway.model import InboundMessage
from sms_gateway.owners import OwnerHeartbeat, machine_id, runs_here, this_process
from sms_gateway.store.base import Job, Owner, Store
from sms_gateway.store.factory import create_store
from tests.redis_server import RedisServer

BEAT = 0.1  # seconds between beats here (the gateway's: 2): a heartbeat runs out after 3 missed ones


@pytest.fixture(params=["sqlite", "redis"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """One store as two processes see it (their own connections)."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server_for_module")
        server.flush()
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'gw.db'}"
    first, second = create_store(url), create_store(url)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def elsewhere(owner: Owner) -> Owner:
    """The same owner as if it ran on another machine (whose pids this one cannot see)."""
    return dataclasses.replace(owner, machine="another-host|" + owner.machine)


async def queue_work(store: Store, n: int = 3) -> None:
    for i in range(n):
        message = InboundMessage("twilio", f"SM{i}", "+15005550006", f"+1555000000{i}", f"m{i}", ())
        assert await store.accept_inbound(message)
        assert await store.enqueue_job(Job(f"job{i}", "send", {}, run_at=0.0))


async def taken(store: Store, owner: str) -> tuple[int, int]:
    now = time.time()
    return len(await store.lease_inbound(owner, 100, 30, now)), len(await store.lease_jobs(owner, 100, 30, now))


# This machine's processes -------------------------------------------------------------------------------
def test_this_process_runs_here_a_gone_or_reused_pid_does_not_and_another_machine_cannot_be_told() -> None:
    me = this_process()
    assert me.pid == os.getpid() and me.machine == machine_id()
    assert runs_here(me, machine_id()) is True
    assert runs_here(dataclasses.replace(me, pid=gone_pid()), machine_id()) is False
    if me.started:  # /proc: a pid now used by a process started at another time is not the owner's
        assert runs_here(dataclasses.replace(me, started=str(int(me.started) - 1)), machine_id()) is False
    assert runs_here(elsewhere(me), machine_id()) is None


def test_a_zombie_is_gone() -> None:
    """Killed and not yet waited for by its parent, a process still has its pid, but holds nothing."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while (Path("/proc") / str(child.pid) / "stat").exists() and time.monotonic() < deadline:
            if (Path("/proc") / str(child.pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                owner = dataclasses.replace(this_process(), pid=child.pid, started="")
                assert runs_here(owner, machine_id()) is False
                return
            time.sleep(0.01)
        pytest.skip("no /proc here to see a zombie in")
    finally:
        child.wait()


# Taking over ---------------------------------------------------------------------------------------------
async def test_a_process_gone_from_this_machine_is_taken_over_at_the_first_beat(
    two_stores: tuple[Store, Store],
) -> None:
    """kill -9 and a restart: the new process's first beat frees what the dead one held, although the dead
    one's heartbeat has not run out yet."""
    old_store, new_store = two_stores
    dead = dataclasses.replace(this_process(), pid=gone_pid())
    await old_store.beat_owner(dead, 60.0, time.time())
    await queue_work(old_store)
    assert await taken(old_store, dead.owner_id) == (3, 3)
    released: list[str] = []
    heartbeat = OwnerHeartbeat(new_store, beat_seconds=BEAT, on_released=lambda: released.append("now"))
    await heartbeat.start()
    try:
        assert released == ["now"]
        assert await taken(new_store, heartbeat.owner.owner_id) == (3, 3)
        assert dead.owner_id not in {s.owner.owner_id for s in await new_store.owners(time.time())}
    finally:
        await heartbeat.stop()


async def test_a_process_on_another_machine_is_taken_over_when_its_heartbeat_runs_out(
    two_stores: tuple[Store, Store],
) -> None:
    a_store, b_store = two_stores
    a = OwnerHeartbeat(a_store, elsewhere(this_process()), beat_seconds=BEAT)
    b = OwnerHeartbeat(b_store, beat_seconds=BEAT)
    await a.start()
    await b.start()
    try:
        await queue_work(a_store)
        assert await taken(a_store, a.owner.owner_id) == (3, 3)
        await asyncio.sleep(BEAT * 6)
        assert await taken(b_store, b.owner.owner_id) == (0, 0), "a beats: its work stays its own"
        assert a._task is not None
        a._task.cancel()  # a dies: it beats no more and says nothing
        died = time.monotonic()
        while await taken(b_store, b.owner.owner_id) == (0, 0):
            assert time.monotonic() - died < 5, "never taken over"
            await asyncio.sleep(BEAT / 2)
        after = time.monotonic() - died
        assert after >= BEAT * 2, f"taken over {after:.2f}s after a's last beat: before its heartbeat ran out"
    finally:
        await b.stop()


async def test_a_process_of_this_machine_that_still_runs_keeps_its_work_when_its_heartbeat_lapses(
    two_stores: tuple[Store, Store],
) -> None:
    """A stalled process (or one that could not write to a locked store) is alive: its leases last as long
    as it renews them, so its turns never run twice."""
    a_store, b_store = two_stores
    stalled = dataclasses.replace(this_process(), owner_id=f"{os.getpid()}-stalled")  # this very process
    await a_store.beat_owner(stalled, BEAT * 3, time.time())
    await queue_work(a_store)
    assert await taken(a_store, stalled.owner_id) == (3, 3)
    b = OwnerHeartbeat(b_store, beat_seconds=BEAT)
    await b.start()
    try:
        await asyncio.sleep(BEAT * 10)
        assert [s.alive for s in await b_store.owners(time.time()) if s.owner == stalled] == [False]
        assert await taken(b_store, b.owner.owner_id) == (0, 0)
    finally:
        await b.stop()


async def test_stopping_deregisters_and_frees_what_is_still_held(two_stores: tuple[Store, Store]) -> None:
    a_store, b_store = two_stores
    a = OwnerHeartbeat(a_store, beat_seconds=60.0)
    await a.start()
    await queue_work(a_store)
    assert await taken(a_store, a.owner.owner_id) == (3, 3)
    await a.stop()
    assert await taken(b_store, "b") == (3, 3)
    assert await b_store.owners(time.time()) == []


async def test_a_store_that_is_unavailable_does_not_stop_the_heartbeat(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'gw.db'}")
    heartbeat = OwnerHeartbeat(store, beat_seconds=BEAT)
    await heartbeat.start()  # not open: every beat meets StoreUnavailable
    try:
        await asyncio.sleep(BEAT * 3)
        assert heartbeat._task is not None and not heartbeat._task.done()
        await store.open()
        deadline = time.monotonic() + 5
        while not [s for s in await store.owners(time.time()) if s.owner == heartbeat.owner and s.alive]:
            assert time.monotonic() < deadline, "never registered once the store was back"
            await asyncio.sleep(BEAT)
    finally:
        await heartbeat.stop()
        await store.close()
