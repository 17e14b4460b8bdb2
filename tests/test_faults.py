"""Fault tests with real gateway processes on SQLite: kill -9, two processes on one file, engine and provider
outages, a locked database, a full disk, SIGTERM.

Each test prints a Tally (sent, accepted, answered, duplicated, lost); run with `-s` to see them.
The fakes run in the test's event loop; every gateway is a subprocess (tests/procs.py).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.harness import V1
from tests.procs import FAILED_REPLY, ROOT, World, fault_world, reply_for, users
from tests.waiting import until

pytestmark = pytest.mark.slow

# store.leaseSeconds for tests that kill a process: how soon its leased work is taken over.
LEASE = 2.0


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with fault_world(tmp_path / "world") as w:
        yield w


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def leased_sids(db: Path) -> set[str]:
    """MessageSids of inbound messages still leased (unfinished, with an owner) in the SQLite file."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT key FROM inbound WHERE done = 0 AND owner IS NOT NULL").fetchall()
    return {key.split(":", 1)[1] for (key,) in rows}


def unfinished_jobs(db: Path) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased')").fetchone()[0])


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sms-gateway --config FILE ...` as an operator runs it (e.g. dead-letters) against the same store."""
    return subprocess.run(
        [sys.executable, "-m", "sms_gateway", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def dead_letter_count(config: Path) -> int:
    result = cli(config, "dead-letters", "list")
    assert result.returncode == 0, result.stdout + result.stderr
    return len(result.stdout.splitlines())  # one JSON line each (the count is on stderr)


# 1. kill -9 with messages accepted but unprocessed -------------------------------------------------------
async def test_kill9_with_accepted_unprocessed_messages_answers_each_once_after_restart(
    world: World, tmp_path: Path
) -> None:
    """40 users' messages accepted while the engine is stuck; kill -9; restart on the same file.

    workerConcurrency 4: the process leases 16 (4 of them in the engine, the rest waiting for a slot) and
    the other 24 are accepted but not leased when it dies. After the restart every message is answered
    exactly once: the unleased at once, the leased after their lease (LEASE s) runs out."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db), worker_concurrency=4, lease_seconds=LEASE)
    world.watson.hold(120)
    results = await asyncio.gather(*(world.deliver(gw, f"first {i}", u) for i, u in enumerate(users(40))))
    assert [status for _, status in results] == [200] * 40
    await until(lambda: len(world.watson.turn_texts()) >= 4, what="turns in the engine")
    await asyncio.sleep(0.3)
    gw.kill()  # kill -9 mid-turn
    leased = leased_sids(db)
    world.watson.release()
    restarted = time.monotonic()
    await gw.restart()
    answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=1.0)
    tally = world.tally("sqlite kill -9 with accepted, unprocessed messages")
    tally.extra.update(
        leased_by_dead_process=len(leased),
        unleased=40 - len(leased),
        engine_turns=len(world.watson.turn_texts()),
        all_answered_after_s=round(time.monotonic() - restarted, 1),
    )
    tally.report()
    assert 4 <= len(leased) <= 16
    assert answered == 40 and duplicated == 0 and lost == []


async def test_kill9_between_sent_and_marked_does_not_send_twice(world: World, tmp_path: Path) -> None:
    """Twilio has the send (it answers 1 s later) when the gateway is killed: the restarted gateway must not
    send the reply again (the window the issue asks to narrow "as far as the provider allows": e.g. look the
    message up - To, From, DateSent, Body - before re-sending a job whose outbound record has no provider id)."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db), lease_seconds=LEASE)
    world.twilio.answer_late(1, seconds=1.0)
    await world.deliver(gw, "only once", users(1)[0])
    await until(lambda: world.twilio.arrived >= 1, what="the send at the provider")
    await asyncio.sleep(0.3)
    gw.kill()
    await gw.restart()
    answered, duplicated, lost, _ = await world.wait_answered(timeout=10, quiet=LEASE * 2)
    tally = world.tally("sqlite kill -9 between sent and marked")
    tally.extra["provider_sends"] = len(world.twilio.messages)
    tally.report()
    assert answered == 1 and lost == []
    assert duplicated == 0


async def test_kill9_with_a_send_in_flight_the_takeover_waits_for_the_provider_not_for_the_lease(
    world: World, tmp_path: Path
) -> None:
    """As above with the default 30 s lease: the dead process's send job is taken over once the provider has
    surely answered (2 x its 5 s read timeout), not at once (the provider is still creating the message: a
    look-up would not find it and the reply would go twice) nor after the lease."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db))
    world.twilio.answer_late(1, seconds=1.0)
    await world.deliver(gw, "only once", users(1)[0])
    await until(lambda: world.twilio.arrived >= 1, what="the send at the provider")
    await asyncio.sleep(0.3)
    gw.kill()
    killed = time.monotonic()
    await gw.restart()
    await until(lambda: not unfinished_jobs(db), timeout=40, what="the send job taken over and finished")
    settled_after = time.monotonic() - killed
    answered, duplicated, lost, _ = await world.wait_answered(timeout=10, quiet=1.0)
    found = [e for e in gw.log_events() if e.get("event") == "send_found_at_provider"]
    tally = world.tally("sqlite kill -9 with a send in flight, default lease")
    tally.extra.update(
        provider_sends=len(world.twilio.messages),
        found_at_provider=len(found),
        job_finished_after_kill_s=round(settled_after, 1),
    )
    tally.report()
    assert answered == 1 and lost == [] and duplicated == 0
    assert len(found) == 1, "the new process asked the provider instead of sending again"
    assert 4 < settled_after < 25, f"taken over {settled_after:.1f}s after the kill (settle 10 s, lease 30 s)"


def leased_sends(db: Path) -> tuple[set[str], set[str]]:
    """Users whose reply's send job is leased in the SQLite file: (those whose attempt had not begun - its
    request not yet sent -, those whose attempt had: in flight)."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute(
            "SELECT payload, begun_attempt < attempts FROM jobs WHERE kind = 'send' AND state = 'leased'"
        ).fetchall()
    users_of = [(json.loads(payload)["userNumber"], bool(waiting)) for payload, waiting in rows]
    return {user for user, waiting in users_of if waiting}, {user for user, waiting in users_of if not waiting}


async def test_kill9_with_sends_waiting_for_their_slot_sends_them_at_once_and_the_one_in_flight_once(
    world: World, tmp_path: Path
) -> None:
    """rateLimits caps the tenant's number at 2/s (burst 2): of 6 replies at once, 2 go at once (the provider
    holds them 2 s: in flight) and 4 wait 0.5-2 s for their slots, leased, when the gateway is killed -9.
    Restarted with the default 30 s lease (a send in flight settles 2 x the 10 s read timeout): the waiting
    replies had not been sent, so they go out within seconds of `/ready`; the ones in flight are looked up at
    the provider once they have settled, and found. Each reply goes once."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start(
        "gw", store_url=sqlite_url(db), rate_limits={"numbers": {V1: 2}}, provider={"readTimeout": 10000}
    )
    world.twilio.answer_late(2, seconds=2.0)
    people = users(6)
    texts = [f"paced {i}" for i in range(6)]
    assert await world.deliver_each([gw], texts, people) == [200] * 6
    await until(
        lambda: world.twilio.arrived >= 2 and bool(leased_sends(db)[0]), what="sends in flight and sends waiting"
    )
    gw.kill()
    killed = time.monotonic()
    waiting, in_flight = leased_sends(db)
    await gw.restart()
    ready = time.monotonic()
    await until(lambda: not unfinished_jobs(db), timeout=60, what="every send job finished")
    settled_after = time.monotonic() - killed
    answered, duplicated, lost, _ = await world.wait_answered(timeout=10, quiet=1.0)
    sent_at = {m.to: at for m, at in zip(world.twilio.messages, world.twilio.sent_at, strict=True)}
    waiting_sent_after = max(sent_at[user] for user in waiting) - ready
    found = [e for e in gw.log_events() if e.get("event") == "send_found_at_provider"]
    tally = world.tally("sqlite kill -9 with sends waiting for their slot and in flight, default lease")
    tally.extra.update(
        waiting_at_kill=len(waiting),
        in_flight_at_kill=len(in_flight),
        waiting_sent_after_ready_s=round(waiting_sent_after, 1),
        in_flight_found_at_provider=len(found),
        all_jobs_finished_after_kill_s=round(settled_after, 1),
    )
    tally.report()
    assert waiting and len(in_flight) >= 2
    assert answered == 6 and duplicated == 0 and lost == []
    assert waiting_sent_after < 10, f"the waiting replies went {waiting_sent_after:.1f}s after /ready (settle 20 s)"
    assert len(found) == len(in_flight), "the sends in flight were looked up at the provider, not sent again"
    assert settled_after > 10, "the sends in flight waited for their provider (20 s from the restart)"


async def test_kill9_mid_turn_the_restarted_process_runs_the_interrupted_turns_at_once(
    world: World, tmp_path: Path
) -> None:
    """20 turns in the engine when the gateway is killed with -9; restarted on the same file with the default
    30 s lease: the dead process's leases are free as soon as the new one sees its pid gone, so the turns run
    again within seconds of `/ready`, each user answered once."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db))
    world.watson.hold(120)
    texts = [f"cut short {i}" for i in range(20)]
    assert await world.deliver_each([gw], texts, users(20)) == [200] * 20
    await world.wait_turns(texts, times=1, timeout=20)
    gw.kill()
    assert len(leased_sids(db)) == 20
    world.watson.release()
    await gw.restart()
    ready = time.monotonic()
    turns_again = await world.wait_turns(texts, times=2, timeout=40) - ready
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    tally = world.tally("sqlite kill -9 mid-turn, default lease")
    tally.extra.update(turns_again_after_ready_s=round(turns_again, 2), lease_s=30)
    tally.report()
    assert turns_again < 15, f"the interrupted turns ran {turns_again:.1f}s after /ready: they waited for the lease"
    assert answered == 20 and duplicated == 0 and lost == []
    assert Counter(world.watson.turn_texts()) == {text: 2 for text in texts}


async def test_a_turn_slower_than_the_lease_runs_once_with_two_processes_on_one_file(
    world: World, tmp_path: Path
) -> None:
    """Each turn takes 8 s, longer than the 2 s lease and than a heartbeat's life: the process running it is
    alive, so the other never takes it (no turn twice)."""
    db = tmp_path / "gw.db"
    a = await world.gateways.start("a", store_url=sqlite_url(db), lease_seconds=LEASE)
    b = await world.gateways.start("b", store_url=sqlite_url(db), lease_seconds=LEASE)
    world.watson.hold(8.0)
    texts = [f"slow {i}" for i in range(10)]
    assert await world.deliver_each([a, b], texts, users(10)) == [200] * 10
    answered, duplicated, lost, _ = await world.wait_answered(timeout=40, quiet=3.0)
    turns = Counter(world.watson.turn_texts())
    tally = world.tally("sqlite turns slower than the lease, two processes")
    tally.extra.update(engine_turns=sum(turns.values()))
    tally.report()
    assert turns == {text: 1 for text in texts}
    assert answered == 10 and duplicated == 0 and lost == []


# 2. one MessageSid, two processes, one file -------------------------------------------------------------
async def test_same_message_sid_to_two_processes_on_one_sqlite_file_is_one_turn(world: World, tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    a = await world.gateways.start("a", store_url=sqlite_url(db))
    b = await world.gateways.start("b", store_url=sqlite_url(db))
    forms = [world.message(f"twice {i}", u) for i, u in enumerate(users(30))]
    statuses = await asyncio.gather(*(world.post(gw, form) for form in forms for gw in (a, b)))
    answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=1.5)
    turns = Counter(world.watson.turn_texts())
    accepted_events = [e for gw in (a, b) for e in gw.log_events() if e.get("event") == "inbound_accepted"]
    duplicate_events = [e for gw in (a, b) for e in gw.log_events() if e.get("event") == "inbound_duplicate"]
    tally = world.tally("sqlite same MessageSid to 2 processes")
    tally.extra.update(
        webhooks=len(statuses),
        statuses=dict(Counter(statuses)),
        claimed=len(accepted_events),
        duplicates_seen=len(duplicate_events),
        engine_turns=sum(turns.values()),
    )
    tally.report()
    assert Counter(statuses) == {200: 60}
    assert len(accepted_events) == 30 and len(duplicate_events) == 30
    assert all(turns[f"twice {i}"] == 1 for i in range(30)), turns
    assert answered == 30 and duplicated == 0 and lost == []


# 3. engine down for a while ------------------------------------------------------------------------------
async def test_engine_outage_every_user_gets_a_reply_or_the_failure_message(world: World, tmp_path: Path) -> None:
    """Watson answers 503 for 3 s while 20 users write over 4.5 s: each gets exactly one answer, the reply or
    CONVERSATION_FAILED_REPLY_MESSAGE; the failed turns are dead letters, and replaying them answers them."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db), conversation={"maxRetryNum": 2})
    world.watson.down_for(3.0)

    async def write(i: int, user: str) -> None:
        await asyncio.sleep(i * 0.225)
        await world.deliver(gw, f"outage {i}", user)

    await asyncio.gather(*(write(i, u) for i, u in enumerate(users(20))))
    answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=1.0, also=lambda m: [FAILED_REPLY])
    replies = world.twilio.replies()
    failed = [m for m in world.sent.values() if replies[(m.user, FAILED_REPLY)]]
    replied = [m for m in world.sent.values() if replies[(m.user, reply_for(m.text))]]
    tally = world.tally("engine outage", also=lambda m: [FAILED_REPLY])
    tally.extra.update(failure_message=len(failed), replied=len(replied), engine_503s=world.watson.down_hits)
    assert answered == 20 and duplicated == 0 and lost == [], tally.line()
    assert failed and replied  # both outcomes happened: the outage is real, and it ended
    config = gw.config_path
    assert dead_letter_count(config) == len(failed)

    # The operator replays the unanswered turns: each gets its real reply, once.
    result = cli(config, "dead-letters", "replay", "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    await world.wait_answered(failed, timeout=20, quiet=1.0)
    replies = world.twilio.replies()
    replayed = [m for m in failed if replies[(m.user, reply_for(m.text))] == 1]
    tally.extra.update(replayed_and_answered=len(replayed))
    tally.extra["replayed_doubled"] = sum(1 for m in failed if replies[(m.user, reply_for(m.text))] > 1)
    tally.report()
    assert len(replayed) == len(failed)
    assert all(replies[(m.user, FAILED_REPLY)] == 1 for m in failed)
    assert dead_letter_count(config) == 0


# 4. provider storms ---------------------------------------------------------------------------------------
async def test_provider_429_and_5xx_storm_delivers_each_reply_once(world: World, tmp_path: Path) -> None:
    gw = await world.gateways.start("gw", store_url=sqlite_url(tmp_path / "gw.db"), provider={"maxRetryNum": 8})
    world.twilio.fail_next(20, status=429, retry_after=1)
    world.twilio.fail_next(20, status=500)
    world.twilio.fail_next(10, status=503)
    results = await asyncio.gather(*(world.deliver(gw, f"storm {i}", u) for i, u in enumerate(users(20))))
    assert [status for _, status in results] == [200] * 20
    answered, duplicated, lost, _ = await world.wait_answered(timeout=60, quiet=1.0)
    tally = world.tally("provider 429/500/503 storm")
    tally.extra.update(provider_errors=len(world.twilio.rejected), provider_requests=world.twilio.request_count)
    tally.report()
    assert len(world.twilio.rejected) == 50
    assert answered == 20 and duplicated == 0 and lost == []
    assert len(world.twilio.messages) == 20
    assert dead_letter_count(gw.config_path) == 0


async def test_provider_permanent_errors_are_not_retried_and_reach_the_engine(world: World, tmp_path: Path) -> None:
    """21610 (unsubscribed), 21211 (bad To), 21623 (too many media): one attempt, a dead letter, and the
    engine sees smsError on the user's next turn."""
    gw = await world.gateways.start("gw", store_url=sqlite_url(tmp_path / "gw.db"))
    codes = [21610, 21211, 21623]
    people = users(3)
    for code, user in zip(codes, people, strict=True):
        world.twilio.fail_next(1, status=400, code=code)
        before = world.twilio.request_count
        await world.deliver(gw, f"first {code}", user)
        await until(lambda before=before: world.twilio.request_count > before, what=f"the send failing {code}")
    await asyncio.sleep(2.0)  # room for a (wrong) retry: the outbox's first backoff is 0.25-0.5 s
    assert world.twilio.request_count == 3 and world.twilio.messages == []
    assert dead_letter_count(gw.config_path) == 3
    for code, user in zip(codes, people, strict=True):
        await world.deliver(gw, f"second {code}", user)
    second = [m for m in world.sent.values() if m.text.startswith("second")]
    answered, duplicated, lost, _ = await world.wait_answered(second, timeout=20)
    first_delivered = world.count([m for m in world.sent.values() if m.text.startswith("first")])[0]
    errors = {}
    for rec in world.watson.of_kind("v1"):
        body = rec.json or {}
        text = (body.get("input") or {}).get("text", "")
        if text.startswith("second"):
            errors[text] = ((body.get("context") or {}).get("smsError") or {}).get("code")
    tally = world.tally("provider permanent errors (next turn)", second)
    tally.extra.update(
        provider_requests=world.twilio.request_count,
        undeliverable_first_replies=3,
        first_replies_delivered=first_delivered,
        sms_errors=errors,
    )
    tally.report()
    assert first_delivered == 0
    assert answered == 3 and duplicated == 0 and lost == []
    assert errors == {f"second {code}": str(code) for code in codes}


async def test_provider_timeouts_lose_nothing(world: World, tmp_path: Path) -> None:
    """Twilio answers too late (after the gateway's read timeout) but did send: the retry must not lose the
    reply, nor send it twice (Twilio's Messages API has no idempotency key: the outbox asks ListMessage)."""
    gw = await world.gateways.start(
        "gw", store_url=sqlite_url(tmp_path / "gw.db"), provider={"readTimeout": 1000, "maxRetryNum": 4}
    )
    world.twilio.answer_late(5, seconds=2.0)
    results = await asyncio.gather(*(world.deliver(gw, f"slow {i}", u) for i, u in enumerate(users(5))))
    assert [status for _, status in results] == [200] * 5
    answered, duplicated, lost, _ = await world.wait_answered(timeout=30, quiet=3.0)
    tally = world.tally("provider timeouts")
    tally.extra.update(provider_requests=world.twilio.request_count, provider_sends=len(world.twilio.messages))
    tally.report()
    # Before a retry the outbox looks the message up at Twilio (ListMessage): it finds the late ones.
    assert answered == 5 and lost == [] and duplicated == 0


# 6. SQLite locked, disk full ------------------------------------------------------------------------------
async def test_sqlite_locked_answers_503_then_recovers(world: World, tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db))
    for i, user in enumerate(users(3)):
        await world.deliver(gw, f"before {i}", user)
    await world.wait_answered(timeout=10)

    lock = sqlite3.connect(db, isolation_level=None, timeout=10)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        await asyncio.sleep(0.5)
        started = time.monotonic()
        locked = [world.message(f"locked {i}", u) for i, u in enumerate(users(6, base=15550200000))]
        timings: list[float] = []

        async def post(form: dict[str, str]) -> int | None:
            t0 = time.monotonic()
            status = await world.post(gw, form, timeout=30)
            timings.append(time.monotonic() - t0)
            return status

        statuses = await asyncio.gather(*(post(f) for f in locked))
        ready_while_locked = await gw.ready_status(timeout=15)
        locked_for = time.monotonic() - started
    finally:
        lock.rollback()
        lock.close()
    pending = await world.redeliver(gw, [f["MessageSid"] for f in locked])
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20)
    tally = world.tally("sqlite locked")
    tally.extra.update(
        statuses_while_locked=dict(Counter(statuses)),
        ready_while_locked=ready_while_locked,
        slowest_503_s=round(max(timings), 2),
        locked_s=round(locked_for, 1),
    )
    tally.report()
    assert ready_while_locked == 503
    assert statuses == [503] * 6, statuses
    assert pending == []
    assert answered == 9 and duplicated == 0 and lost == []
    assert max(timings) < 15.0, "Twilio gives up on a webhook after 15 s: a 503 must come sooner"


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=10) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def test_sqlite_full_disk_answers_503_and_corrupts_nothing(world: World, tmp_path: Path) -> None:
    """Writes fail with EFBIG (RLIMIT_FSIZE on the gateway process): webhooks answer 503, never 500; the file
    passes integrity_check; after "disk space is freed" (a restart without the limit) every accepted and every
    re-delivered message is answered once."""
    db = tmp_path / "gw.db"
    first = await world.gateways.start("first", store_url=sqlite_url(db))
    await world.deliver(first, "warm up", users(1, base=15550300000)[0])
    await world.wait_answered(timeout=10)
    assert await first.terminate_and_wait() == 0
    limit = db.stat().st_size + 64 * 1024
    gw = await world.gateways.start(
        "limited", store_url=sqlite_url(db), preexec_fn=_limit_file_size(limit), lease_seconds=LEASE
    )
    statuses: list[int | None] = []
    refused = 0
    for i, user in enumerate(users(300)):
        _, status = await world.deliver(gw, f"full {i}", user)
        statuses.append(status)
        refused += status == 503
        if refused >= 5:
            break
    ready_when_full = await gw.ready_status()
    await asyncio.sleep(1.0)
    gw.kill()
    check_after_crash = integrity(db)
    leased_when_killed = leased_sids(db)  # turns cut short by the full disk (handing them back is a write too)
    gw.preexec_fn = None  # "disk space freed": the same config and file, no size limit
    await gw.restart()
    refused_sids = [sid for sid, m in world.sent.items() if sid not in world.accepted]
    pending = await world.redeliver(gw, refused_sids)
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    assert await gw.terminate_and_wait() == 0
    tally = world.tally("sqlite full disk")
    tally.extra.update(
        statuses=dict(Counter(statuses)),
        ready_when_full=ready_when_full,
        integrity_after_crash=check_after_crash,
        integrity_at_end=integrity(db),
        leased_when_killed=len(leased_when_killed),
    )
    tally.report()
    assert 503 in statuses and set(statuses) <= {200, 503}, statuses
    assert check_after_crash == "ok" and integrity(db) == "ok"
    assert pending == []
    assert answered == len(world.sent) and duplicated == 0 and lost == []


# 7. SIGTERM ------------------------------------------------------------------------------------------------
async def test_sigterm_goes_unready_finishes_in_flight_turns_and_exits_zero(world: World, tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db), drain_seconds=2)
    world.watson.hold(1.0)
    people = users(15)
    results = await asyncio.gather(*(world.deliver(gw, f"before {i}", u) for i, u in enumerate(people[:10])))
    assert [status for _, status in results] == [200] * 10
    await until(lambda: len(world.watson.turn_texts()) >= 5, what="turns in flight")
    gw.kill(signal.SIGTERM)
    await asyncio.sleep(0.3)
    ready_in_drain = await gw.ready_status()
    during = await asyncio.gather(*(world.deliver(gw, f"during {i}", u) for i, u in enumerate(people[10:])))
    code = await gw.wait_exit(30)
    answered_at_exit = world.count()[0]
    await gw.restart()
    world.watson.release()
    answered, duplicated, lost, _ = await world.wait_answered(timeout=20, quiet=1.0)
    tally = world.tally("sigterm")
    tally.extra.update(
        ready_in_drain=ready_in_drain,
        accepted_in_drain=sum(s == 200 for _, s in during),
        exit_code=code,
        answered_before_exit=answered_at_exit,
    )
    tally.report()
    assert ready_in_drain == 503
    assert [status for _, status in during] == [200] * 5
    assert code == 0
    assert answered_at_exit == 15  # every in-flight and drained turn finished before the exit
    assert answered == 15 and duplicated == 0 and lost == []


async def test_sigterm_hands_back_turns_it_cannot_finish(world: World, tmp_path: Path) -> None:
    """Turns stuck in the engine past the shutdown grace period are handed back on SIGTERM: the next process
    takes them at once, not after the lease (the gateway's default, 30 s)."""
    db = tmp_path / "gw.db"
    gw = await world.gateways.start("gw", store_url=sqlite_url(db))
    world.watson.hold(120)
    results = await asyncio.gather(*(world.deliver(gw, f"stuck {i}", u) for i, u in enumerate(users(5))))
    assert [status for _, status in results] == [200] * 5
    await until(lambda: len(world.watson.turn_texts()) >= 5, what="turns in the engine")
    stopping = time.monotonic()
    code = await gw.terminate_and_wait(timeout=40)
    stopped_after = time.monotonic() - stopping
    handed_back = sum(e.get("count", 0) for e in gw.log_events() if e.get("event") == "leases_handed_back")
    with sqlite3.connect(db, timeout=10) as conn:
        owners_left = conn.execute("SELECT COUNT(*) FROM owners").fetchone()[0]
    world.watson.release()
    restarted = time.monotonic()
    await gw.restart()
    answered, duplicated, lost, _ = await world.wait_answered(timeout=8, quiet=1.0)
    tally = world.tally("sigterm hands back")
    tally.extra.update(
        exit_code=code,
        stopped_after_s=round(stopped_after, 1),
        handed_back=handed_back,
        answered_after_restart_s=round(time.monotonic() - restarted, 1),
    )
    tally.report()
    assert code == 0 and handed_back == 5
    assert owners_left == 0, "a process that stops deregisters"
    assert answered == 5 and duplicated == 0 and lost == []
