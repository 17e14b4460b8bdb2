"""Fault tests with real gateway processes on a real, private Redis (`redis-server` started by the test):
one MessageSid to two processes, Redis restarted mid-run, Redis killed -9 right after acknowledgements, two
processes as one gateway (load, turn order, a shared rate limit), kill -9 of one of them, kill -9 with sends
waiting for their rate slot.

Each test prints a Tally (sent, accepted, answered, duplicated, lost); run with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from tests.harness import V1
from tests.procs import GatewayProcess, World, fault_world, reply_for, users
from tests.redis_server import RedisServer, redis_available
from tests.waiting import until

pytestmark = pytest.mark.slow

# store.leaseSeconds: how soon work leased by a killed process (or cut short by Redis) is taken over.
LEASE = 2.0


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with fault_world(tmp_path / "world") as w:
        yield w


async def ready_again(gw: GatewayProcess, timeout: float = 15.0) -> float:
    """Seconds until `/ready` answers 200 again."""
    started = time.monotonic()
    while await gw.ready_status() != 200:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{gw.name} not ready {timeout}s after Redis came back:\n{gw.log_tail()}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def leased_by(server: RedisServer, pid: int | None) -> set[str]:
    """MessageSids of unfinished inbound messages leased by the process `pid` (owner "<pid>-<hex>")."""
    client = redis_sync.Redis(port=server.port, decode_responses=True)
    try:
        found = set()
        for key in client.scan_iter("smsgw:in:msg:*", count=1000):
            owner, done = client.hmget(key, "owner", "done")
            if owner and not done and owner.split("-", 1)[0] == str(pid):
                found.add(key.rsplit(":", 1)[1])
        return found
    finally:
        client.close()


def pending_work(server: RedisServer) -> dict[str, int]:
    """Unfinished inbound messages and jobs in Redis (the RedisStore's own bookkeeping sets)."""
    client = redis_sync.Redis(port=server.port, decode_responses=True)
    try:
        return {"inbound": int(client.scard("smsgw:in:pending")), "jobs": int(client.scard("smsgw:jobs:active"))}
    finally:
        client.close()


# One MessageSid, two processes ---------------------------------------------------------------------------
async def test_same_message_sid_to_two_processes_on_one_redis_is_one_turn(world: World, redis: RedisServer) -> None:
    a = await world.gateways.start("a", store_url=redis.url)
    b = await world.gateways.start("b", store_url=redis.url)
    forms = [world.message(f"twice {i}", u) for i, u in enumerate(users(30))]
    statuses = await asyncio.gather(*(world.post(gw, form) for form in forms for gw in (a, b)))
    answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=1.5)
    turns = Counter(world.watson.turn_texts())
    claimed = sum(1 for gw in (a, b) for e in gw.log_events() if e.get("event") == "inbound_accepted")
    tally = world.tally("redis same MessageSid to 2 processes")
    tally.extra.update(
        webhooks=len(statuses), statuses=dict(Counter(statuses)), claimed=claimed, engine_turns=sum(turns.values())
    )
    tally.report()
    assert Counter(statuses) == {200: 60}
    assert claimed == 30
    assert all(turns[f"twice {i}"] == 1 for i in range(30)), turns
    assert answered == 30 and duplicated == 0 and lost == []


# Redis restarted mid-run ----------------------------------------------------------------------------------
async def test_redis_restart_mid_run_answers_503_while_down_then_loses_nothing(
    world: World, redis: RedisServer
) -> None:
    gw = await world.gateways.start("gw", store_url=redis.url, lease_seconds=LEASE)
    people = users(10)
    for i, user in enumerate(people):
        await world.deliver(gw, f"before {i}", user)
    await world.wait_answered(timeout=15)
    before = list(world.sent)

    redis.stop()
    ready_while_down = await gw.ready_status(timeout=10)
    started = time.monotonic()
    down = await asyncio.gather(*(world.deliver(gw, f"down {i}", u) for i, u in enumerate(people)))
    slowest_503 = time.monotonic() - started
    redis.start()  # same port, same directory: the append-only file brings the data back
    recovery = await ready_again(gw)

    pending = await world.redeliver(gw, [sid for sid, _ in down])  # Twilio's retry of what got no 200
    replayed = [await world.replay(gw, sid) for sid in before[:3]]  # claims from before the restart still hold
    for i, user in enumerate(people):
        await world.deliver(gw, f"after {i}", user)
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    tally = world.tally("redis restarted")
    tally.extra.update(
        statuses_while_down=dict(Counter(s for _, s in down)),
        ready_while_down=ready_while_down,
        slowest_503_s=round(slowest_503, 2),
        ready_again_s=round(recovery, 2),
        replays_of_old_sids=dict(Counter(replayed)),
        left_in_store=pending_work(redis),
    )
    tally.report()
    assert ready_while_down == 503
    assert [s for _, s in down] == [503] * 10
    assert pending == [] and replayed == [200, 200, 200]
    assert answered == 30 and duplicated == 0 and lost == []


async def test_redis_restart_with_turns_in_flight_loses_nothing(world: World, redis: RedisServer) -> None:
    """Redis goes away while turns are in the engine; when it is back (3 s later) every message is answered
    once, without a restart of the gateway (turns cut short are taken again after their lease)."""
    gw = await world.gateways.start("gw", store_url=redis.url, lease_seconds=LEASE)
    world.watson.hold(1.5)
    results = await asyncio.gather(*(world.deliver(gw, f"inflight {i}", u) for i, u in enumerate(users(10))))
    assert [s for _, s in results] == [200] * 10
    await until(lambda: len(world.watson.turn_texts()) >= 10, what="10 turns in the engine")
    redis.stop()
    await asyncio.sleep(3.0)  # the engine answers while Redis is down
    redis.start()
    await ready_again(gw)
    world.watson.release()
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    tally = world.tally("redis restarted, turns in flight")
    tally.extra.update(engine_turns=len(world.watson.turn_texts()), left_in_store=pending_work(redis))
    tally.report()
    assert answered == 10 and duplicated == 0 and lost == []


# Redis killed -9 right after acknowledgements ---------------------------------------------------------------
async def test_redis_killed_right_after_a_burst_of_acknowledgements_loses_none(world: World, tmp_path: Path) -> None:
    """appendonly yes, appendfsync always: 30 webhooks (3 users x 10) all acknowledged 200 while the engine holds
    each user's first turn, so the other 27 are nowhere but in Redis; redis-server is killed with SIGKILL at the
    last 200 and restarted on its append-only file: every message reaches the engine once and is answered once."""
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always") as redis:
        gw = await world.gateways.start("gw", store_url=redis.url)
        durability = [e for e in gw.log_events() if e.get("event") == "store_durability"]
        assert [e.get("mode") for e in durability] == ["fsync_always"], durability
        world.watson.hold(60)
        burst = [(f"crash {u} {k}", user) for k in range(10) for u, user in enumerate(users(3))]
        results = await asyncio.gather(*(world.deliver(gw, text, user) for text, user in burst))
        redis.kill()
        in_engine_at_kill = len(world.watson.turn_texts())
        assert [s for _, s in results] == [200] * 30
        redis.start()  # the same port and directory: the append-only file is all it has
        await ready_again(gw)
        world.watson.release()
        answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=1.5)
        turns = Counter(world.watson.turn_texts())
        tally = world.tally("redis kill -9 after 30 acknowledgements")
        tally.extra.update(
            in_engine_at_kill=in_engine_at_kill, engine_turns=sum(turns.values()), left_in_store=pending_work(redis)
        )
        tally.report()
        assert in_engine_at_kill <= 3, "the other messages must wait in Redis, or the test shows nothing"
        assert all(turns[text] == 1 for text, _ in burst), {t: n for t, n in turns.items() if n != 1}
        assert answered == 30 and duplicated == 0 and lost == []
        assert pending_work(redis) == {"inbound": 0, "jobs": 0}


# Two processes, one gateway -------------------------------------------------------------------------------
async def test_two_processes_share_the_load_and_keep_each_users_turns_in_order(
    world: World, redis: RedisServer
) -> None:
    """40 users x 5 messages, webhooks round-robin over two processes: each answered once, in order."""
    gws = [await world.gateways.start(name, store_url=redis.url) for name in ("a", "b")]
    people = users(40)

    async def conversation(u: int, user: str) -> None:
        for k in range(5):
            sid, status = await world.deliver(gws[(u + k) % 2], f"u{u} turn {k}", user)
            assert status == 200, (sid, status)

    await asyncio.gather(*(conversation(u, user) for u, user in enumerate(people)))
    answered, duplicated, lost, _ = await world.wait_answered(timeout=40, quiet=1.0)
    engine_order: dict[str, list[int]] = defaultdict(list)
    for text in world.watson.turn_texts():
        who, _, k = text.partition(" turn ")
        engine_order[who].append(int(k))
    sent_order: dict[str, list[str]] = defaultdict(list)
    for m in world.twilio.messages:
        sent_order[m.to].append(m.body or "")
    turns_by = {gw.name: sum(1 for e in gw.log_events() if e.get("event") == "message_sent") for gw in gws}
    out_of_order = [who for who, ks in engine_order.items() if ks != sorted(ks)]
    tally = world.tally("redis 2 processes, 200 messages")
    tally.extra.update(sends_by_process=turns_by, users_out_of_order=len(out_of_order))
    tally.report()
    assert answered == 200 and duplicated == 0 and lost == []
    assert out_of_order == [], {who: engine_order[who] for who in out_of_order[:5]}
    assert all(ks == [0, 1, 2, 3, 4] for ks in engine_order.values())
    assert all(sent_order[user] == [reply_for(f"u{u} turn {k}") for k in range(5)] for u, user in enumerate(people))
    assert all(count > 0 for count in turns_by.values()), turns_by  # both processes did work


async def test_the_per_sender_rate_limit_is_shared_by_two_processes(world: World, redis: RedisServer) -> None:
    """5 messages/s for the tenant's number (burst 5): 20 replies, whichever process sends them, take ~3 s
    (20 - 5 in the burst, then 5/s); a limit per process would let them out in ~1 s.

    Which process sends a reply is whichever leases its job first; on a loaded machine one process now and then
    sends all 20 (seen three rounds in a row during a full run), which says nothing about sharing, so such a round
    is run again (at most eight rounds)."""
    limits = {"numbers": {"+15005550001": 5}}
    a = await world.gateways.start("a", store_url=redis.url, rate_limits=limits)
    b = await world.gateways.start("b", store_url=redis.url, rate_limits=limits)

    def sends_by_process() -> dict[str, int]:
        return {gw.name: sum(1 for e in gw.log_events() if e.get("event") == "message_sent") for gw in (a, b)}

    for round_no in range(8):
        before, first = sends_by_process(), len(world.twilio.sent_at)
        results = await asyncio.gather(
            *(world.deliver((a, b)[i % 2], f"rate {round_no} {i}", u) for i, u in enumerate(users(20)))
        )
        assert [s for _, s in results] == [200] * 20
        answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=0.5)
        assert answered == 20 * (round_no + 1) and duplicated == 0 and lost == []
        stamps = sorted(world.twilio.sent_at[first:])
        spread = stamps[-1] - stamps[0]
        by_process = {name: count - before[name] for name, count in sends_by_process().items()}
        tally = world.tally(f"redis shared rate limit 5/s, round {round_no}")
        tally.extra.update(spread_s=round(spread, 2), sends_by_process=by_process)
        tally.report()
        if all(by_process.values()):
            break
        await asyncio.sleep(1.2)  # the burst refills before the next round
    assert all(by_process.values()), f"one process sent every reply in eight rounds: {by_process}"
    assert 2.5 <= spread <= 6.0, f"20 sends at 5/s (burst 5) across two processes took {spread:.2f}s"


async def test_kill9_one_of_two_processes_the_other_finishes_everything(world: World, redis: RedisServer) -> None:
    """Two processes share 60 users' messages; one is killed with SIGKILL mid-turn: the survivor answers every
    message exactly once (what the dead one held, after its lease)."""
    a = await world.gateways.start("a", store_url=redis.url, lease_seconds=LEASE)
    b = await world.gateways.start("b", store_url=redis.url, lease_seconds=LEASE)
    world.watson.hold(60)
    results = await asyncio.gather(*(world.deliver((a, b)[i % 2], f"k{i}", u) for i, u in enumerate(users(60))))
    assert [s for _, s in results] == [200] * 60
    await until(lambda: len(world.watson.turn_texts()) >= 60, what="60 turns in the engine")
    pid = a.pid
    a.kill()
    stuck = leased_by(redis, pid)
    world.watson.release()
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    tally = world.tally("redis kill -9 one of two")
    tally.extra.update(
        leased_by_killed_process=len(stuck),
        answered_by_survivor=sum(1 for e in b.log_events() if e.get("event") == "message_sent"),
    )
    tally.report()
    assert answered == 60 and duplicated == 0 and lost == []


@pytest.mark.parametrize(
    ("module", "within"), [("sms_gateway", 15.0), ("tests.elsewhere", 20.0)], ids=["same-host", "other-host"]
)
async def test_kill9_one_of_two_the_survivor_takes_its_turns_over_in_seconds(
    world: World, redis: RedisServer, module: str, within: float
) -> None:
    """Two processes with the default 30 s lease; one is killed with -9 with turns in the engine. The survivor
    runs them again within seconds: at its next beat when it sees the dead one's pid gone (same host), once the
    dead one's heartbeat has run out (6 s) when it cannot (`tests.elsewhere`: as from another host)."""
    a = await world.gateways.start("a", store_url=redis.url, module=module)
    b = await world.gateways.start("b", store_url=redis.url)
    world.watson.hold(120)
    texts = [f"over {i}" for i in range(20)]
    assert await world.deliver_each([a, b], texts, users(20)) == [200] * 20
    await world.wait_turns(texts, times=1, timeout=20)
    pid = a.pid
    a.kill()
    died = time.monotonic()
    held = leased_by(redis, pid)
    assert held, "the killed process held no turn"
    world.watson.release()
    held_texts = [world.sent[sid].text for sid in held]
    taken_over = await world.wait_turns(held_texts, times=2, timeout=40) - died
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    tally = world.tally(f"redis kill -9 one of two ({module}), default lease")
    tally.extra.update(held_by_killed=len(held), taken_over_after_s=round(taken_over, 2), lease_s=30)
    tally.report()
    assert taken_over < within, f"taken over {taken_over:.1f}s after the kill: it waited for the lease"
    assert answered == 20 and duplicated == 0 and lost == []
    turns = Counter(world.watson.turn_texts())
    assert all(turns[t] == (2 if t in held_texts else 1) for t in texts), turns


def leased_sends(server: RedisServer) -> tuple[set[str], set[str]]:
    """Users whose reply's send job is leased in Redis: (those whose attempt had not begun, those in flight)."""
    client = redis_sync.Redis(port=server.port, decode_responses=True)
    try:
        waiting, in_flight = set(), set()
        for key in client.scan_iter("smsgw:jobs:id:*", count=1000):
            kind, state, attempts, begun, payload = client.hmget(key, "kind", "state", "attempts", "begun", "payload")
            if kind == "send" and state == "leased":
                user = json.loads(payload)["userNumber"]
                (waiting if begun is not None and int(begun) < int(attempts) else in_flight).add(user)
        return waiting, in_flight
    finally:
        client.close()


async def test_kill9_with_sends_waiting_for_their_slot_sends_them_at_once_and_the_one_in_flight_once(
    world: World, redis: RedisServer
) -> None:
    """As tests/test_faults.py's test of the same name, on Redis: 6 replies capped at 2/s, 2 held in flight by the
    provider and the others waiting for their slots when the one process is killed -9; after its restart the
    waiting ones go within seconds, the ones in flight are found at the provider once settled (20 s)."""
    gw = await world.gateways.start(
        "gw", store_url=redis.url, rate_limits={"numbers": {V1: 2}}, provider={"readTimeout": 10000}
    )
    world.twilio.answer_late(2, seconds=2.0)
    texts = [f"paced {i}" for i in range(6)]
    assert await world.deliver_each([gw], texts, users(6)) == [200] * 6
    await until(
        lambda: world.twilio.arrived >= 2 and bool(leased_sends(redis)[0]), what="sends in flight and sends waiting"
    )
    gw.kill()
    waiting, in_flight = leased_sends(redis)
    await gw.restart()
    ready = time.monotonic()
    await until(lambda: not pending_work(redis)["jobs"], timeout=60, what="every send job finished")
    answered, duplicated, lost, _ = await world.wait_answered(timeout=10, quiet=1.0)
    sent_at = {m.to: at for m, at in zip(world.twilio.messages, world.twilio.sent_at, strict=True)}
    waiting_sent_after = max(sent_at[user] for user in waiting) - ready
    found = [e for e in gw.log_events() if e.get("event") == "send_found_at_provider"]
    tally = world.tally("redis kill -9 with sends waiting for their slot and in flight, default lease")
    tally.extra.update(
        waiting_at_kill=len(waiting),
        in_flight_at_kill=len(in_flight),
        waiting_sent_after_ready_s=round(waiting_sent_after, 1),
        in_flight_found_at_provider=len(found),
    )
    tally.report()
    assert waiting and len(in_flight) >= 2
    assert answered == 6 and duplicated == 0 and lost == []
    assert waiting_sent_after < 10, f"the waiting replies went {waiting_sent_after:.1f}s after /ready (settle 20 s)"
    assert len(found) == len(in_flight), "the sends in flight were looked up at the provider, not sent again"


async def test_a_turn_slower_than_the_lease_and_the_heartbeat_runs_once_across_hosts(
    world: World, redis: RedisServer
) -> None:
    """Each turn takes 8 s, longer than the 2 s lease and than a heartbeat's life, on two processes that
    cannot see each other's pids (`tests.elsewhere`): each keeps its heartbeat and its leases alive, so
    nothing runs twice."""
    a = await world.gateways.start("a", store_url=redis.url, lease_seconds=LEASE, module="tests.elsewhere")
    b = await world.gateways.start("b", store_url=redis.url, lease_seconds=LEASE)
    world.watson.hold(8.0)
    texts = [f"slow {i}" for i in range(10)]
    assert await world.deliver_each([a, b], texts, users(10)) == [200] * 10
    answered, duplicated, lost, _ = await world.wait_answered(timeout=40, quiet=3.0)
    turns = Counter(world.watson.turn_texts())
    tally = world.tally("redis turns slower than the lease, two hosts")
    tally.extra.update(engine_turns=sum(turns.values()))
    tally.report()
    assert turns == {text: 1 for text in texts}
    assert answered == 10 and duplicated == 0 and lost == []
