"""RedisStore beyond the shared contract: several clients (processes), a Redis that goes away, key prefixes,
and the same answers as MemoryStore over long random sequences of operations."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sms_gateway.model import InboundMessage, Session
from sms_gateway.ratelimit import SenderRate
from sms_gateway.store.base import Job, LeaseLost, OutboundRecord, Owner, Pipe, Store, StoreUnavailable
from sms_gateway.store.factory import create_store
from sms_gateway.store.memory import MemoryStore
from sms_gateway.store.redis import RedisStore, redis_options
from tests.redis_server import RedisServer, redis_available


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as s:
        yield s


@pytest.fixture
async def clients(server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores with their own connection pools: two gateway processes sharing one Redis."""
    server.flush()
    first, second = RedisStore(server.url), RedisStore(server.url)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def message(sid: str, user: str = "+15551230000") -> InboundMessage:
    return InboundMessage("twilio", sid, "+15005550006", user, f"text {sid}", received_at=1000.5)


# Several processes --------------------------------------------------------------------------------------
async def test_two_clients_claim_one_message_exactly_once(clients: tuple[RedisStore, RedisStore]) -> None:
    a, b = clients
    for round_ in range(5):
        results = await asyncio.gather(*((a if i % 2 else b).accept_inbound(message(f"SM{round_}")) for i in range(40)))
        assert results.count(True) == 1
    assert await a.pending_inbound_count() == 5


async def test_two_clients_claim_one_nonce_exactly_once(clients: tuple[RedisStore, RedisStore]) -> None:
    a, b = clients
    until = time.time() + 60
    for round_ in range(5):
        results = await asyncio.gather(*((a if i % 2 else b).claim_once(f"nonce-{round_}", until) for i in range(40)))
        assert results.count(True) == 1


async def test_an_owners_heartbeat_is_a_key_redis_expires_and_every_client_sees(
    clients: tuple[RedisStore, RedisStore], server: RedisServer
) -> None:
    """Across processes and hosts: Redis's clock, not the callers', ends a heartbeat; one release wins."""
    a, b = clients
    me = Owner("101-abc", "host-a|boot|pid:[1]", 101, "77")
    assert await a.beat_owner(me, 6.0, 0.0) is False
    admin = Redis.from_url(server.url, decode_responses=True)
    try:
        assert 5000 < await admin.pttl("smsgw:owner:alive:101-abc") <= 6000
    finally:
        await admin.aclose()
    assert [(s.owner, s.alive) for s in await b.owners(1e12)] == [(me, True)], "whatever the caller's clock"
    assert await b.release_owners([me.owner_id], 1e12) == []
    await a.end_owner(me.owner_id)
    results = await asyncio.gather(*((a if i % 2 else b).release_owners([me.owner_id], 0.0) for i in range(20)))
    assert results.count([me.owner_id]) == 1 and results.count([]) == 19
    assert await a.owners(0.0) == []


async def test_a_claim_is_kept_as_a_key_that_expires_at_its_until(
    clients: tuple[RedisStore, RedisStore], server: RedisServer
) -> None:
    """Redis forgets a claim by itself (there is nothing to prune), at its until to the millisecond, rounded up."""
    store, _ = clients
    until = time.time() + 60.0004
    assert await store.claim_once("twilio:nonce", until) is True
    admin = Redis.from_url(server.url, decode_responses=True)
    try:
        assert await admin.pexpiretime("smsgw:claim:twilio:nonce") == math.ceil(until * 1000)
        assert await store.claim_once("twilio:nonce-past", time.time() - 1) is True
        assert await admin.exists("smsgw:claim:twilio:nonce-past") == 0, "a claim already past stores nothing"
        assert await store.claim_once("twilio:nonce-ancient", -5.0) is True, "not an error from Redis"
    finally:
        await admin.aclose()


async def test_two_clients_never_lease_the_same_message(clients: tuple[RedisStore, RedisStore]) -> None:
    a, b = clients
    users = [f"+1555000{u:04d}" for u in range(20)]
    for i in range(200):
        await (a if i % 2 else b).accept_inbound(message(f"SM{i:03d}", user=users[i % 20]))
    seen: list[str] = []
    in_flight: set[str] = set()
    order: dict[str, list[int]] = {user: [] for user in users}
    now = time.time()

    async def worker(store: RedisStore, name: str) -> None:
        idle = 0
        while idle < 3:
            records = await store.lease_inbound(name, 7, 60, now)
            if not records:
                idle += 1
                await asyncio.sleep(0.005)
                continue
            idle = 0
            assert all(r.attempts == 1 for r in records)
            for r in records:
                user = r.message.user_number
                assert user not in in_flight, "two turns of one conversation at once"
                in_flight.add(user)
                seen.append(r.message.message_id)
                order[user].append(int(r.message.message_id[2:]))
            await asyncio.sleep(0)
            for r in records:
                in_flight.discard(r.message.user_number)  # before completing: the next one may be leased at once
                await store.complete_inbound(r.key)

    await asyncio.gather(worker(a, "a"), worker(b, "b"), worker(a, "a2"), worker(b, "b2"))
    assert sorted(seen) == [f"SM{i:03d}" for i in range(200)], "every message once, none twice"
    assert all(numbers == sorted(numbers) for numbers in order.values()), "each conversation in arrival order"
    assert await a.pending_inbound_count() == 0
    assert await b.accept_inbound(message("SM000")) is False, "processed messages stay claimed"


async def test_job_order_per_key_holds_across_two_clients(clients: tuple[RedisStore, RedisStore]) -> None:
    a, b = clients
    keys = ["u1", "u2", "u3", None]
    for n in range(15):
        for key in keys:
            job = Job(f"{key}-{n}", "send", {"n": n}, order_key=key)
            assert await (a if n % 2 else b).enqueue_job(job) is True
    running: set[str] = set()
    done: dict[str | None, list[int]] = {key: [] for key in keys}

    async def worker(store: RedisStore) -> None:
        idle = 0
        while idle < 3:
            jobs = await store.lease_jobs("w", 3, 60, now=10.0)
            if not jobs:
                idle += 1
                await asyncio.sleep(0.005)
                continue
            idle = 0
            for job in jobs:
                if job.order_key is not None:
                    assert job.order_key not in running, "two jobs of one order key at once"
                    running.add(job.order_key)
            await asyncio.sleep(0)
            for job in jobs:
                done[job.order_key].append(job.payload["n"])
                running.discard(job.order_key or "")  # before completing: the next one may be leased right after
                await store.complete_job(job.job_id)

    await asyncio.gather(worker(a), worker(b), worker(a), worker(b))
    for key in ["u1", "u2", "u3"]:
        assert done[key] == list(range(15)), f"order of {key}"
    assert sorted(done[None]) == list(range(15))
    assert await a.pending_job_count() == 0


async def test_send_slots_from_two_clients_are_distinct(clients: tuple[RedisStore, RedisStore]) -> None:
    a, b = clients
    cap = SenderRate(10.0, 1)
    waits = await asyncio.gather(*((a if i % 2 else b).reserve_send_slot("+1500", cap, 500.0) for i in range(40)))
    assert sorted(waits) == pytest.approx([i / 10 for i in range(40)])
    assert len(set(waits)) == 40


async def test_a_slowdown_seen_by_one_client_paces_the_other(clients: tuple[RedisStore, RedisStore]) -> None:
    a, b = clients
    assert await b.reserve_send_slot("+1500", None, 500.0) == 0.0, "no pace, no cap: nothing to wait for"
    await a.slow_sender("+1500", now=500.0, paced_at=500.0, retry_after=1.0, start_rate=8.0)
    waits = await asyncio.gather(*((a if i % 2 else b).reserve_send_slot("+1500", None, 500.0) for i in range(8)))
    assert sorted(waits) == pytest.approx([1.0 + i / 4 for i in range(8)]), "one queue at 4/s after the hold"
    # The pace is one key that expires once it limits nothing: 4/s grows past 1000/s in 2 * log2(250) s.
    ttl = await a._redis.pttl(a._k("pace", "+1500"))
    assert 1000 + 2000 * 7.9 <= ttl <= 1000 + 2000 * 8.0 + 2000


async def test_key_prefix_isolates_two_gateways(server: RedisServer) -> None:
    server.flush()
    one, two = RedisStore(server.url + "?prefix=one"), RedisStore(server.url + "?prefix=two")
    await one.open()
    await two.open()
    try:
        assert (one.prefix, two.prefix) == ("one", "two")
        assert await one.accept_inbound(message("SMshared")) is True
        assert await two.accept_inbound(message("SMshared")) is True, "another gateway's claim is not ours"
        await one.accept_inbound(message("SMonly1"))
        assert [r.message.message_id for r in await two.lease_inbound("w", 10, 30, 0.0)] == ["SMshared"]
        session = Session.new("+1500", "+1555", 60, now=0.0)
        await one.save_session(session)
        assert await two.load_session("+1500", "+1555") is None
        assert await two.find_session(session.session_id) is None
        assert await two.expired_sessions(1e12, 10) == []
        await one.enqueue_job(Job("j", "send", {}))
        assert await two.lease_jobs("w", 10, 30, 0.0) == []
        assert await two.enqueue_job(Job("j", "send", {})) is True
        assert await one.claim_once("nonce", time.time() + 60) is True
        assert await two.claim_once("nonce", time.time() + 60) is True, "another gateway's nonce is not ours"
        admin = Redis.from_url(server.url, decode_responses=True)
        try:
            keys = await admin.keys("*")
        finally:
            await admin.aclose()
        assert keys and all(k.startswith(("one:", "two:")) for k in keys)
    finally:
        await one.close()
        await two.close()


# A Redis that goes away -------------------------------------------------------------------------------------
def every_method(store: Store) -> dict[str, Callable[[], Awaitable[Any]]]:
    session = Session.new("+1500", "+1555", 60, now=0.0)
    pipe = Pipe("p1", "+1500", "+1555", "http://vgw/sms", 0.0, 100.0)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "ping": lambda: store.ping(),
        "accept_inbound": lambda: store.accept_inbound(message("SMdown")),
        "lease_inbound": lambda: store.lease_inbound("w", 10, 30, 0.0),
        "complete_inbound": lambda: store.complete_inbound("twilio:SM1"),
        "extend_inbound_leases": lambda: store.extend_inbound_leases("w", ["twilio:SM1"], 1.0),
        "extend_job_leases": lambda: store.extend_job_leases("w", ["j"], 1.0),
        "pending_inbound_count": lambda: store.pending_inbound_count(),
        "load_session": lambda: store.load_session("+1500", "+1555"),
        "save_session": lambda: store.save_session(session),
        "insert_session": lambda: store.insert_session(session),
        "delete_session": lambda: store.delete_session("+1500", "+1555", session.session_id),
        "find_session": lambda: store.find_session(session.session_id),
        "expired_sessions": lambda: store.expired_sessions(100.0, 10),
        "push_sms_error": lambda: store.push_sms_error("+1500", "+1555", {"code": "1"}),
        "pop_sms_errors": lambda: store.pop_sms_errors("+1500", "+1555"),
        "record_outbound": lambda: store.record_outbound(OutboundRecord("m", "+1500", "+1555", None, None)),
        "find_outbound": lambda: store.find_outbound("m"),
        "claim_status": lambda: store.claim_status("SM1", "sent"),
        "claim_once": lambda: store.claim_once("nonce", time.time() + 60),
        "save_pipe": lambda: store.save_pipe(pipe),
        "get_pipe": lambda: store.get_pipe("p1"),
        "pipe_for": lambda: store.pipe_for("+1500", "+1555", 0.0),
        "delete_pipe": lambda: store.delete_pipe("p1"),
        "enqueue_job": lambda: store.enqueue_job(Job("j", "send", {})),
        "lease_jobs": lambda: store.lease_jobs("w", 10, 30, 0.0),
        "pending_job_count": lambda: store.pending_job_count(),
        "complete_job": lambda: store.complete_job("j"),
        "retry_job": lambda: store.retry_job("j", 1.0, "e"),
        "dead_letter_job": lambda: store.dead_letter_job("j", "e", 1.0),
        "dead_letters": lambda: store.dead_letters(10),
        "replay_dead_letter": lambda: store.replay_dead_letter("j", 1.0),
        "reserve_send_slot": lambda: store.reserve_send_slot("k", SenderRate(1.0, 1), 0.0),
        "slow_sender": lambda: store.slow_sender("k", 0.0, 0.0, None, 10.0),
        "defer_job": lambda: store.defer_job("j", 1.0),
        "begin_job": lambda: store.begin_job(Job("j", "send", {}, owner="w")),
        "begin_send": lambda: store.begin_send("k", None, 0.0, OutboundRecord("m", "+1500", "+1555", None, None)),
        "beat_owner": lambda: store.beat_owner(Owner("1-a", "m", 1), 6.0, 0.0),
        "owners": lambda: store.owners(0.0),
        "end_owner": lambda: store.end_owner("1-a"),
        "release_owners": lambda: store.release_owners(["1-a"], 0.0),
    }
    assert set(Store.__abstractmethods__) <= set(calls), "a Store method is missing from this list"
    return calls


@asynccontextmanager
async def restartable(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisStore]]:
    """A Redis of the test's own that keeps its data across a restart, and an open store on it."""
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        store = RedisStore(server.url)
        await store.open()
        try:
            yield server, store
        finally:
            await store.close()


async def test_redis_down_is_unavailable_fast_and_restart_loses_nothing(tmp_path: Path) -> None:
    async with restartable(tmp_path) as (server, store):
        for i in range(3):
            assert await store.accept_inbound(message(f"SM{i}", user=f"+1555000000{i}")) is True
        await store.enqueue_job(Job("j1", "send", {"n": 1}, order_key="u"))
        await store.save_session(Session.new("+1500", "+1555", 60, now=0.0))
        assert await store.claim_once("nonce", time.time() + 600) is True

        server.stop()
        for name, call in every_method(store).items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call()
            assert time.monotonic() - started < 3.0, name

        server.start()
        assert server.port == int(server.url.rsplit(":", 1)[1].split("/")[0])
        await store.ping()  # the same store object, not reopened
        assert await store.accept_inbound(message("SM1", user="+15550000001")) is False, "claims survived"
        leased = await store.lease_inbound("w", 10, 30, 0.0)
        assert [r.message.message_id for r in leased] == ["SM0", "SM1", "SM2"]
        assert [j.job_id for j in await store.lease_jobs("w", 10, 30, 0.0)] == ["j1"]
        assert await store.load_session("+1500", "+1555") is not None
        assert await store.claim_once("nonce", time.time() + 600) is False, "a claim survives a restart"


async def test_open_while_redis_is_down_raises_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{_closed_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.open()
    assert time.monotonic() - started < 3.0
    for name, call in every_method(store).items():  # never opened: still a clean StoreUnavailable
        with pytest.raises(StoreUnavailable):
            await call()
            pytest.fail(name)
    await store.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_hung_redis_times_out_as_unavailable(server: RedisServer) -> None:
    server.flush()
    store = RedisStore(server.url + "?socket_timeout=0.3")  # redis-py options pass through the URL
    await store.open()
    try:
        server.pause()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.accept_inbound(message("SMhung"))
        assert time.monotonic() - started < 1.5
    finally:
        server.resume()
    try:
        await store.ping()
        # The timed-out write may or may not have reached Redis; either way it is claimed at most once.
        await store.accept_inbound(message("SMhung"))
        assert await store.accept_inbound(message("SMhung")) is False
    finally:
        await store.close()


async def test_cancelled_calls_stop_and_leave_the_pool_healthy(server: RedisServer) -> None:
    """A worker cancelled in the middle of a store call stops (no swallowed cancellation: an app that never
    shuts down) and leaves no half-read connection behind for the next caller, nor a connection out of the pool."""
    server.flush()
    store = RedisStore(server.url + "?max_connections=3")
    await store.open()
    rng = random.Random(7)
    errors: list[str] = []

    async def steady(tag: int) -> None:
        n = 0
        while True:
            try:
                assert await store.enqueue_job(Job(f"s{tag}-{n}", "k", {"n": n})) is True
                assert await store.reserve_send_slot(f"k{tag}", SenderRate(1e6, 1), 0.0) >= 0.0
            except AssertionError as exc:
                errors.append(repr(exc))
            except StoreUnavailable as exc:
                errors.append(str(exc))
            n += 1

    background = [asyncio.create_task(steady(tag)) for tag in range(2)]
    try:
        for _ in range(150):

            async def loop() -> None:
                while True:
                    await store.lease_jobs("w", 2, 30, 0.0)
                    await store.accept_inbound(message(f"SM{rng.random()}"))

            task = asyncio.create_task(loop())
            await asyncio.sleep(rng.random() * 0.002)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1.0)
            assert done, "the cancellation was swallowed"
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    try:
        assert errors == []
        await store.ping()
    finally:
        await store.close()


async def test_out_of_memory_is_unavailable(clients: tuple[RedisStore, RedisStore], server: RedisServer) -> None:
    store, _ = clients
    admin = Redis.from_url(server.url, decode_responses=True)
    try:
        await admin.config_set("maxmemory", 1)
        with pytest.raises(StoreUnavailable):
            await store.accept_inbound(message("SMoom"))
        with pytest.raises(StoreUnavailable):
            await store.claim_status("SM1", "sent")
        with pytest.raises(StoreUnavailable):
            await store.claim_once("nonce", time.time() + 60)
    finally:
        await admin.config_set("maxmemory", 0)
        await admin.aclose()
    assert await store.accept_inbound(message("SMoom")) is True, "nothing half-stored by the refused write"


async def test_a_caller_whose_clock_is_behind_gets_nothing_early(clients: tuple[RedisStore, RedisStore]) -> None:
    """Leasing moves due items aside for the caller's `now`; a later caller with an earlier clock must still see
    them as not due / still leased, exactly as the other back ends do."""
    redis_store, _ = clients
    for store in (MemoryStore(), redis_store):
        await store.enqueue_job(Job("j1", "send", {}, run_at=10.0))
        await store.enqueue_job(Job("j2", "send", {}, run_at=10.0))
        assert [j.job_id for j in await store.lease_jobs("w", 1, 10, now=20.0)] == ["j1"]
        assert await store.lease_jobs("w", 5, 10, now=5.0) == [], "j2 is not due at 5"
        await store.enqueue_job(Job("k1", "send", {}, run_at=0.0))
        await store.enqueue_job(Job("k2", "send", {}, run_at=0.0))
        assert [j.job_id for j in await store.lease_jobs("w", 3, 10, now=20.0)] == ["j2", "k1", "k2"]
        assert [j.job_id for j in await store.lease_jobs("w", 1, 10, now=40.0)] == ["j1"]
        assert await store.lease_jobs("w", 5, 10, now=25.0) == [], "leases until 30 are still held at 25"

        await store.accept_inbound(message("SMx", user="+1"))
        await store.accept_inbound(message("SMy", user="+2"))
        assert len(await store.lease_inbound("w", 2, 10, now=0.0)) == 2
        assert [r.message.message_id for r in await store.lease_inbound("w", 1, 10, now=20.0)] == ["SMx"]
        assert await store.lease_inbound("w", 5, 10, now=5.0) == [], "SMy's lease runs until 10"


# URLs -------------------------------------------------------------------------------------------------------
def test_urls() -> None:
    assert redis_options("redis://localhost:6379/0") == ("redis://localhost:6379/0", "smsgw", None)
    assert redis_options(
        "rediss://:s3cret@redis.example.com:6380/2?prefix=gw1&socket_timeout=5&socket_connect_timeout=1"
    ) == ("rediss://:s3cret@redis.example.com:6380/2?socket_connect_timeout=1", "gw1", 5.0)
    for bad in ("redis://localhost/0?prefix=", "redis://localhost/0?socket_timeout=x", "memcached://localhost"):
        with pytest.raises(ValueError):
            redis_options(bad)
    assert isinstance(create_store("redis://localhost:6379/0"), RedisStore)
    assert isinstance(create_store("rediss://localhost:6380/1?prefix=x"), RedisStore)


# Same answers as MemoryStore ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
async def test_random_operations_answer_like_memory(clients: tuple[RedisStore, RedisStore], seed: int) -> None:
    """Long random mixes of every operation, odd ones included (retrying a finished job, completing a dead
    one...): RedisStore must answer exactly as the reference MemoryStore does."""
    redis_a, redis_b = clients
    memory = MemoryStore()
    rng = random.Random(seed)
    marks = random.Random(f"marks {seed}")
    now = 1000.0
    job_ids = [f"j{i}" for i in range(12)]
    sids = [f"SM{i}" for i in range(15)]
    pairs = [("+1500", f"+1555{i}") for i in range(4)]
    sessions: dict[tuple[str, str], Session] = {}
    leased: dict[str, Job] = {}  # each job as last leased, to begin its attempt with

    def pick_store() -> RedisStore:
        return redis_a if rng.random() < 0.5 else redis_b

    for step in range(400):
        op = rng.randrange(18)
        if op == 0:
            now += rng.choice([0.0, 0.5, 3.0, 11.0, 40.0, -6.0, -25.0])  # negative: a process whose clock is behind
            continue
        calls: Callable[[Store], Awaitable[Any]]
        if op == 1:
            job = Job(
                rng.choice(job_ids),
                rng.choice(["send", "relay"]),
                {"step": step},
                order_key=rng.choice([None, "a", "b", "c"]),
                run_at=now + rng.choice([-5.0, 0.0, 2.0, 20.0]),
                attempts=rng.choice([0, 0, 2]),
                last_error=rng.choice([None, "earlier"]),
                begun_attempt=marks.choice([None, 0, 0, 2]),
            )

            def calls(s: Store, job: Job = job) -> Awaitable[Any]:
                return s.enqueue_job(job)
        elif op in (2, 3):
            limit, lease, at = rng.randint(1, 5), rng.choice([5.0, 30.0]), now

            def calls(s: Store, limit: int = limit, lease: float = lease, at: float = at) -> Awaitable[Any]:
                return s.lease_jobs("w", limit, lease, at)
        elif op == 4:
            jid = rng.choice(job_ids)

            def calls(s: Store, jid: str = jid) -> Awaitable[Any]:
                return s.complete_job(jid)
        elif op == 5:
            jid, at, error = rng.choice(job_ids), now + rng.choice([0.0, 4.0]), f"err{step}"

            def calls(s: Store, jid: str = jid, at: float = at, error: str = error) -> Awaitable[Any]:
                return s.retry_job(jid, at, error)
        elif op == 6:
            jid, error, at = rng.choice(job_ids), f"dead{step}", now

            def calls(s: Store, jid: str = jid, error: str = error, at: float = at) -> Awaitable[Any]:
                return s.dead_letter_job(jid, error, at)
        elif op == 7:
            jid, at = rng.choice(job_ids), now

            def calls(s: Store, jid: str = jid, at: float = at) -> Awaitable[Any]:
                return s.replay_dead_letter(jid, at)
        elif op == 8:
            limit = rng.randint(1, 5)

            def calls(s: Store, limit: int = limit) -> Awaitable[Any]:
                return s.dead_letters(limit)
        elif op == 9:

            def calls(s: Store) -> Awaitable[Any]:
                return s.pending_job_count()
        elif op == 10:
            # three conversations, one of them with its tenant number written two ways
            tenant, user = rng.choice([("+1500", "+1555"), ("1500", "+1555"), ("+1500", "+1666"), ("+1500", "+1777")])
            msg = InboundMessage("twilio", rng.choice(sids), tenant, user, f"t{step}", received_at=now)

            def calls(s: Store, msg: InboundMessage = msg) -> Awaitable[Any]:
                return s.accept_inbound(msg)
        elif op == 11:
            limit, lease, at = rng.randint(1, 4), rng.choice([5.0, 30.0]), now

            def calls(s: Store, limit: int = limit, lease: float = lease, at: float = at) -> Awaitable[Any]:
                return s.lease_inbound("w", limit, lease, at)
        elif op == 12:
            key = f"twilio:{rng.choice(sids)}"

            def calls(s: Store, key: str = key) -> Awaitable[Any]:
                return s.complete_inbound(key)
        elif op == 13:

            def calls(s: Store) -> Awaitable[Any]:
                return s.pending_inbound_count()
        elif op == 14:
            tenant, user = rng.choice(pairs)
            if rng.random() < 0.5 or (tenant, user) not in sessions:
                session = Session.new(tenant, user, rng.choice([5, 60]), now=now + rng.random())
            else:
                session = sessions[(tenant, user)]
                session.last_activity = now + rng.random()
            sessions[(tenant, user)] = session
            insert = rng.random() < 0.3

            def calls(s: Store, session: Session = session, insert: bool = insert) -> Awaitable[Any]:
                return s.insert_session(session) if insert else s.save_session(session)
        elif op == 15:
            at, limit = now, rng.randint(1, 4)

            def calls(s: Store, at: float = at, limit: int = limit) -> Awaitable[Any]:
                return s.expired_sessions(at, limit)
        elif op == 16:
            tenant, user = rng.choice(pairs)
            known = sessions.get((tenant, user))
            sid = known.session_id if known is not None and rng.random() < 0.7 else "other"

            async def calls(s: Store, tenant: str = tenant, user: str = user, sid: str = sid) -> Any:
                return (
                    await s.delete_session(tenant, user, sid),
                    await s.find_session(sid),
                    await s.load_session(tenant, user),
                )
        else:
            pipe = Pipe(
                rng.choice(["p1", "p2", "p3"]),
                "+1500",
                rng.choice(["+1", "+2"]),
                "http://vgw/sms",
                now,
                now + rng.choice([1.0, 30.0]),
            )
            choice, at = rng.randrange(4), now

            async def calls(s: Store, pipe: Pipe = pipe, choice: int = choice, at: float = at) -> Any:
                if choice == 0:
                    await s.save_pipe(pipe)
                elif choice == 1:
                    return await s.delete_pipe(pipe.pipe_id)
                return (
                    await s.get_pipe(pipe.pipe_id),
                    await s.pipe_for("+1500", "+1", at),
                    await s.pipe_for("+1500", "+2", at),
                )

        expected = await calls(memory)
        got = await calls(pick_store())
        assert got == expected, f"seed {seed}, step {step}, op {op}"
        if op in (2, 3):
            leased.update((job.job_id, job) for job in expected)
        if marks.random() < 0.15:  # an attempt begins, or is deferred (`marks`: the other ops' sequence stays)
            jid, at, defer = marks.choice(job_ids), now + marks.choice([0.0, 4.0]), marks.random() < 0.5
            held = []
            for s in (memory, redis_a if marks.random() < 0.5 else redis_b):
                if defer:
                    await s.defer_job(jid, at)
                    continue
                try:
                    await s.begin_job(leased.get(jid, Job(jid, "send", {}, owner="w")))
                    held.append(True)
                except LeaseLost:
                    held.append(False)
            assert len(set(held)) <= 1, f"seed {seed}, step {step}: the lease check differs"


async def test_after_a_redis_restart_only_the_first_call_fails_not_one_per_pooled_connection(tmp_path: Path) -> None:
    async with restartable(tmp_path) as (server, store):
        await asyncio.gather(*(store.pending_inbound_count() for _ in range(20)))  # 20 connections in the pool
        server.stop()
        server.start()
        failed = 0
        for _ in range(3):  # what the first operations after the restart meet
            try:
                await store.ping()
                break
            except StoreUnavailable:
                failed += 1
        assert failed <= 1
        outcomes = await asyncio.gather(*(store.pending_inbound_count() for _ in range(20)), return_exceptions=True)
        assert [o for o in outcomes if isinstance(o, Exception)] == [], "stale pooled connections were used"
