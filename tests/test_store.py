"""The store contract, run against every back end (a real SQLite file, memory, a throw-away redis-server)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sms_gateway.model import InboundMessage, Media, Session
from sms_gateway.ratelimit import Pace, SenderRate
from sms_gateway.retention import RetentionSweeper
from sms_gateway.store.base import Job, LeaseLost, OutboundRecord, Owner, Pipe, Store, StoreUnavailable, TurnStart
from sms_gateway.store.factory import create_store
from sms_gateway.store.memory import MemoryStore
from sms_gateway.store.sqlite import SQLiteStore, sqlite_path
from tests.redis_server import RedisServer


@pytest.fixture(params=["sqlite", "memory", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server_for_module")
        server.flush()
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'gw.db'}" if request.param == "sqlite" else "memory://"
    s = create_store(url)
    await s.open()
    yield s
    await s.close()


def message(sid: str, user: str = "+15551230000", text: str = "hi") -> InboundMessage:
    return InboundMessage("twilio", sid, "+15005550006", user, text, (Media("https://e.com/a.jpg", "image/jpeg"),))


async def test_accept_is_a_claim_and_replays_are_duplicates(store: Store) -> None:
    assert await store.accept_inbound(message("SM1")) is True
    assert await store.accept_inbound(message("SM1", text="replayed")) is False
    leased = await store.lease_inbound("w", 10, 60, time.time())
    assert [r.message.text for r in leased] == ["hi"]
    assert leased[0].message.media == (Media("https://e.com/a.jpg", "image/jpeg"),)
    await store.complete_inbound(leased[0].key)
    assert await store.accept_inbound(message("SM1")) is False, "a processed message stays claimed"
    assert await store.pending_inbound_count() == 0


async def test_concurrent_identical_claims_accept_exactly_one(store: Store) -> None:
    results = await asyncio.gather(*(store.accept_inbound(message("SMsame")) for _ in range(50)))
    assert results.count(True) == 1


async def test_lease_is_ordered_exclusive_and_expires(store: Store) -> None:
    for i in range(5):
        await store.accept_inbound(message(f"SM{i}", user=f"+1555123000{i}"))
    now = time.time()
    first = await store.lease_inbound("a", 3, 30, now)
    assert [r.message.message_id for r in first] == ["SM0", "SM1", "SM2"]
    second = await store.lease_inbound("b", 10, 30, now)
    assert [r.message.message_id for r in second] == ["SM3", "SM4"]
    assert await store.lease_inbound("c", 10, 30, now) == []
    # A worker that died: its lease runs out and the message is handed out again, attempt 2.
    again = await store.lease_inbound("c", 10, 30, now + 31)
    assert [r.message.message_id for r in again] == ["SM0", "SM1", "SM2", "SM3", "SM4"]
    assert {r.attempts for r in again} == {2}


async def test_sessions_round_trip_and_guarded_delete(store: Store) -> None:
    s = Session.new("+15005550006", "+15551230000", 60, now=1000.0)
    s.engine_state = {"context": {"conversation_id": "c1", "system": {"dialog_turn_counter": 2}}}
    s.user_data = {"account": "42"}
    await store.save_session(s)
    loaded = await store.load_session("+15005550006", "+15551230000")
    assert loaded == s
    assert await store.find_session(s.session_id) == s
    assert await store.delete_session("+15005550006", "+15551230000", "other-id") is False
    assert await store.delete_session("+15005550006", "+15551230000", s.session_id) is True
    assert await store.load_session("+15005550006", "+15551230000") is None


async def test_expired_sessions(store: Store) -> None:
    old = Session.new("+1500", "+1555000001", 10, now=100.0)
    fresh = Session.new("+1500", "+1555000002", 10, now=200.0)
    await store.save_session(old)
    await store.save_session(fresh)
    assert [s.session_id for s in await store.expired_sessions(150.0, 10)] == [old.session_id]
    assert len(await store.expired_sessions(300.0, 10)) == 2


async def test_a_session_saved_many_times_expires_once_at_its_last_expiry(store: Store) -> None:
    session = Session.new("+1500", "+1555000001", 10, now=100.0)
    for turn in range(50):  # every turn saves the session and pushes its expiry later
        session.last_activity = 100.0 + turn
        await store.save_session(session)
    if isinstance(store, MemoryStore):
        assert len(store._expiries) == 1, "saves of one session do not pile up entries until they come due"
    assert await store.expired_sessions(140.0, 10) == [], "due at 159, not at any earlier save's expiry"
    assert [s.last_activity for s in await store.expired_sessions(160.0, 10)] == [149.0]
    session.timeout_seconds = 1  # a shorter timeout brings the expiry forward
    await store.save_session(session)
    assert [s.session_id for s in await store.expired_sessions(150.5, 10)] == [session.session_id]


async def test_sms_errors_are_popped_once_in_order(store: Store) -> None:
    await store.push_sms_error("+1500", "+1555", {"code": "21610", "message": "unsubscribed"})
    await store.push_sms_error("+1500", "+1555", {"code": "30007", "message": "filtered"})
    assert [e["code"] for e in await store.pop_sms_errors("+1500", "+1555")] == ["21610", "30007"]
    assert await store.pop_sms_errors("+1500", "+1555") == []


async def test_outbound_records_and_status_dedupe(store: Store) -> None:
    record = OutboundRecord("mg1", "+1500", "+1555", "sess", None)
    await store.record_outbound(record)
    await store.record_outbound(OutboundRecord("mg1", "+1500", "+1555", "sess", "SM9"))
    assert await store.find_outbound("mg1") == OutboundRecord("mg1", "+1500", "+1555", "sess", "SM9")
    assert await store.find_outbound("nope") is None
    through_pipe = OutboundRecord(
        "mg2",
        "+1500",
        "+1555",
        None,
        "SM10",
        {"smsPipeID": "p1", "callbackURL": "https://vgw.example/cb"},
        1700000000.25,
    )
    await store.record_outbound(through_pipe)
    assert await store.find_outbound("mg2") == through_pipe, "a pipe's send keeps what its failure event needs"
    assert await store.claim_status("SM9", "sent") is True
    assert await store.claim_status("SM9", "sent") is False
    assert await store.claim_status("SM9", "delivered") is True


async def wait_past(until: float) -> None:
    """Until the wall clock (the one every store judges claims by) is past `until`."""
    while time.time() <= until + 0.01:
        await asyncio.sleep(0.02)


async def test_a_nonce_is_claimed_once_while_its_claim_lasts(store: Store) -> None:
    until = time.time() + 60
    assert await store.claim_once("twilio:nonce-1", until) is True
    assert await store.claim_once("twilio:nonce-1", until) is False, "a replayed nonce is refused"
    assert await store.claim_once("twilio:nonce-1", until + 3600) is False, "a later until does not take it over"
    assert await store.claim_once("twilio:nonce-2", until) is True, "another key is claimed on its own"
    assert await store.claim_once("sinch:nonce-1", until) is True


async def test_concurrent_claims_of_one_nonce_grant_exactly_one(store: Store) -> None:
    until = time.time() + 60
    results = await asyncio.gather(*(store.claim_once("nonce-raced", until) for _ in range(20)))
    assert results.count(True) == 1


async def test_a_claim_is_free_again_after_its_until(store: Store) -> None:
    until = time.time() + 0.3
    assert await store.claim_once("nonce-short", until) is True
    assert await store.claim_once("nonce-short", until) is False
    await wait_past(until)
    renewed_until = time.time() + 60
    assert await store.claim_once("nonce-short", renewed_until) is True, "an expired claim refuses nothing"
    assert await store.claim_once("nonce-short", renewed_until) is False, "the new claim holds"


async def test_a_claim_whose_until_has_passed_lasts_no_time_and_never_frees_a_live_one(store: Store) -> None:
    past = time.time() - 5
    assert await store.claim_once("nonce-late", past) is True
    assert await store.claim_once("nonce-late", time.time() + 60) is True, "the past claim held nothing"
    assert await store.claim_once("nonce-late", past) is False, "nor does a past claim end a live one"


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    first = SQLiteStore(url)
    await first.open()
    await first.accept_inbound(message("SMdurable"))
    await first.close()
    second = SQLiteStore(url)
    await second.open()
    assert await second.accept_inbound(message("SMdurable")) is False
    assert [r.message.message_id for r in await second.lease_inbound("w", 5, 30, time.time())] == ["SMdurable"]
    await second.close()


async def test_sqlite_database_of_the_previous_version_is_migrated_with_its_queue(tmp_path: Path) -> None:
    """A file made before conversations' heads were kept (and jobs' begun attempts): queued messages stay
    queued, in order, one at a time per conversation; nothing is lost and no message jumps its conversation's
    queue."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE inbound (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, conv TEXT NOT NULL, payload TEXT NOT NULL,"
        " owner TEXT, lease_until REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
        " done INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);"
        "CREATE INDEX inbound_conv ON inbound (conv, done, seq);"
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,"
        " order_key TEXT, state TEXT NOT NULL DEFAULT 'queued', run_at REAL NOT NULL,"
        " lease_until REAL NOT NULL DEFAULT 0, owner TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);"
        "CREATE INDEX jobs_order ON jobs (order_key, seq);"
    )
    rows = [
        ("SMa0", "+15550000001", 1),
        ("SMa1", "+15550000001", 0),
        ("SMb0", "+15550000002", 0),
        ("SMa2", "+15550000001", 0),
    ]
    for seq, (sid, user, done) in enumerate(rows, start=1):
        queued = message(sid, user=user)
        old.execute(
            "INSERT INTO inbound (key, seq, conv, payload, done, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (f"twilio:{sid}", seq, f"15005550006:{user}", json.dumps(queued.to_json()), done, time.time()),
        )
    old.execute("INSERT INTO jobs (job_id, seq, kind, payload, run_at) VALUES ('mg-queued', 1, 'send', '{}', 0)")
    old.commit()
    old.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        now = time.time()
        [queued_before] = await store.lease_jobs("w", 10, 30, now)
        assert (queued_before.job_id, queued_before.begun_attempt) == ("mg-queued", None), (
            "a job queued before attempts were marked may have begun: a takeover waits for it"
        )
        first = await store.lease_inbound("w", 10, 30, now)
        assert [r.message.message_id for r in first] == ["SMa1", "SMb0"]
        assert await store.accept_inbound(message("SMa3", user="+15550000001")) is True
        assert await store.lease_inbound("w", 10, 30, now) == []
        await store.complete_inbound(first[0].key)
        assert [r.message.message_id for r in await store.lease_inbound("w", 10, 30, now)] == ["SMa2"]
        assert await store.pending_inbound_count() == 3
    finally:
        await store.close()
    reopened = SQLiteStore(f"sqlite:///{path}")  # a second open finds nothing left to migrate
    await reopened.open()
    await reopened.close()


async def test_sqlite_claims_from_two_stores_on_one_file_grant_exactly_one(tmp_path: Path) -> None:
    """Two SQLiteStore objects are two connections with their own threads, as two processes would be."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = SQLiteStore(url), SQLiteStore(url)
    await first.open()
    await second.open()
    try:
        for round_ in range(5):
            until = time.time() + 60
            results = await asyncio.gather(
                *((first if i % 2 else second).claim_once(f"nonce-{round_}", until) for i in range(20))
            )
            assert results.count(True) == 1
    finally:
        await first.close()
        await second.close()


async def test_sqlite_a_slowdown_seen_by_one_process_paces_the_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = SQLiteStore(url), SQLiteStore(url)
    await first.open()
    await second.open()
    try:
        assert await second.reserve_send_slot("+1500", None, now=100.0) == 0.0
        await first.slow_sender("+1500", now=100.0, paced_at=100.0, retry_after=1.0, start_rate=8.0)
        waits = await asyncio.gather(
            *((first if i % 2 else second).reserve_send_slot("+1500", None, now=100.0) for i in range(8))
        )
        assert sorted(waits) == pytest.approx([1.0 + i / 4 for i in range(8)]), "one queue at 4/s after the hold"
        # Throttled again by an answer to a send paced before the cut: nothing changes for either.
        await second.slow_sender("+1500", now=100.5, paced_at=99.0, retry_after=1.0, start_rate=8.0)
        assert await first.reserve_send_slot("+1500", None, now=100.0) == pytest.approx(3.0)
    finally:
        await first.close()
        await second.close()


async def test_sqlite_database_made_before_claims_opens_and_claims(tmp_path: Path) -> None:
    path = tmp_path / "before-claims.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    await store.accept_inbound(message("SMkept"))
    await store.close()
    old = sqlite3.connect(path)  # the file as the code before claim_once left it
    old.execute("DROP TABLE once_claims")
    old.commit()
    old.close()

    until = time.time() + 60
    upgraded = SQLiteStore(f"sqlite:///{path}")
    await upgraded.open()
    try:
        assert await upgraded.claim_once("nonce-after-upgrade", until) is True
        assert await upgraded.claim_once("nonce-after-upgrade", until) is False
        assert await upgraded.accept_inbound(message("SMkept")) is False, "what the file held is still there"
        assert await upgraded.pending_inbound_count() == 1
    finally:
        await upgraded.close()
    reopened = SQLiteStore(f"sqlite:///{path}")  # a second open finds the table there, claims and all
    await reopened.open()
    try:
        assert await reopened.claim_once("nonce-after-upgrade", until) is False
        assert await reopened.claim_once("nonce-after-reopen", until) is True
    finally:
        await reopened.close()


async def test_sqlite_locked_file_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(f"sqlite:///{path}", busy_timeout_ms=50)
    await store.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.accept_inbound(message("SMlocked"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await store.accept_inbound(message("SMlocked")) is True, "nothing half-stored by the failed attempt"
    await store.close()


async def test_sqlite_unwritable_location_is_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "x.db"
    with pytest.raises(StoreUnavailable):
        await SQLiteStore(f"sqlite:///{missing}").open()


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///sms-gateway.db") == ("sms-gateway.db", "FULL")
    assert sqlite_path("sqlite:////var/lib/gw.db?synchronous=normal") == ("/var/lib/gw.db", "NORMAL")
    with pytest.raises(ValueError):
        sqlite_path("sqlite:///x.db?synchronous=off")
    with pytest.raises(ValueError):
        create_store("postgres://x")
    assert os.path.basename(sqlite_path("sqlite:///a/b.db")[0]) == "b.db"


async def test_insert_session_is_a_claim_on_the_pair(store: Store) -> None:
    first = Session.new("+1500", "+1555", 60, now=0.0)
    assert await store.insert_session(first) is None
    second = Session.new("+1500", "+1555", 60, now=1.0)
    existing = await store.insert_session(second)
    assert existing is not None and existing.session_id == first.session_id
    results = await asyncio.gather(*(store.insert_session(Session.new("+1500", "+1666", 60)) for _ in range(10)))
    assert sum(r is None for r in results) == 1


async def test_pipes(store: Store) -> None:
    pipe = Pipe("p1", "+1500", "+1555", "http://vgw.example.com/sms", created_at=0.0, expires_at=100.0)
    await store.save_pipe(pipe)
    assert await store.get_pipe("p1") == pipe
    assert await store.pipe_for("+1500", "+1555", now=50.0) == pipe
    assert await store.pipe_for("+1500", "+1555", now=100.0) is None, "expired"
    replacement = Pipe("p2", "+1500", "+1555", "http://vgw.example.com/sms", created_at=1.0, expires_at=200.0)
    await store.save_pipe(replacement)
    assert await store.get_pipe("p1") is None, "a new pipe for the pair replaces the old one"
    assert await store.pipe_for("+1500", "+1555", now=50.0) == replacement
    assert await store.delete_pipe("p2") is True
    assert await store.delete_pipe("p2") is False
    assert await store.pipe_for("+1500", "+1555", now=50.0) is None


async def test_jobs_are_idempotent_ordered_per_key_retried_and_dead_lettered(store: Store) -> None:
    assert await store.enqueue_job(Job("j1", "send", {"n": 1}, order_key="userA", run_at=0.0)) is True
    assert await store.enqueue_job(Job("j1", "send", {"n": 99}, order_key="userA", run_at=0.0)) is False
    await store.enqueue_job(Job("j2", "send", {"n": 2}, order_key="userA", run_at=0.0))
    await store.enqueue_job(Job("j3", "send", {"n": 3}, order_key="userB", run_at=0.0))
    await store.enqueue_job(Job("j4", "relay", {"n": 4}, order_key=None, run_at=50.0))
    leased = await store.lease_jobs("w", 10, 30, now=10.0)
    assert [j.job_id for j in leased] == ["j1", "j3"], "one per key, not before run_at"
    assert leased[0].payload == {"n": 1} and leased[0].attempts == 1
    assert await store.lease_jobs("w", 10, 30, now=10.0) == []
    await store.retry_job("j1", run_at=20.0, error="429")
    assert await store.lease_jobs("w", 10, 30, now=15.0) == [], "j2 waits behind j1's retry"
    again = await store.lease_jobs("w", 10, 30, now=20.0)
    assert [(j.job_id, j.attempts, j.last_error) for j in again] == [("j1", 2, "429")]
    await store.complete_job("j1")
    await store.complete_job("j3")
    assert [j.job_id for j in await store.lease_jobs("w", 10, 30, now=60.0)] == ["j2", "j4"]
    await store.dead_letter_job("j2", "21610 unsubscribed", now=65.0)
    dead = await store.dead_letters(10)
    assert [(j.job_id, j.last_error, j.run_at) for j in dead] == [("j2", "21610 unsubscribed", 65.0)], (
        "kept with its cause and when it was given up on"
    )
    assert await store.replay_dead_letter("j2", now=70.0) is True
    assert await store.replay_dead_letter("j2", now=70.0) is False
    assert await store.dead_letters(10) == []
    replayed = await store.lease_jobs("w", 10, 30, now=70.0)
    assert [(j.job_id, j.attempts) for j in replayed] == [("j2", 1)]
    # A worker that died: the lease runs out and the job is handed out again.
    expired = await store.lease_jobs("w2", 10, 30, now=101.0)
    assert sorted(j.job_id for j in expired) == ["j2", "j4"]


async def test_send_slots_queue_bursts_at_the_configured_rate(store: Store) -> None:
    waits = [await store.reserve_send_slot("+1500", SenderRate(1.0, 1), now=100.0) for _ in range(4)]
    assert waits == [0.0, 1.0, 2.0, 3.0]
    burst = [await store.reserve_send_slot("toll-free", SenderRate(3.0, 3), now=100.0) for _ in range(6)]
    assert burst[:3] == [0.0, 0.0, 0.0] and burst[3] == pytest.approx(1 / 3)
    assert await store.reserve_send_slot("+1500", SenderRate(1.0, 1), now=200.0) == 0.0, "an idle bucket refills"


async def test_a_sender_never_throttled_and_without_a_cap_never_waits(store: Store) -> None:
    assert [await store.reserve_send_slot("+1500", None, now=100.0) for _ in range(100)] == [0.0] * 100


async def test_a_wait_longer_than_allowed_reserves_nothing(store: Store) -> None:
    cap = SenderRate(1.0, 1)
    assert [await store.reserve_send_slot("+1500", cap, 100.0, max_wait=2.0) for _ in range(3)] == [0.0, 1.0, 2.0]
    assert await store.reserve_send_slot("+1500", cap, 100.0, max_wait=2.0) == 3.0
    assert await store.reserve_send_slot("+1500", cap, 100.0, max_wait=2.0) == 3.0, "the first took no slot"
    assert await store.reserve_send_slot("+1500", cap, 100.0) == 3.0


async def test_a_throttled_sender_holds_for_retry_after_then_goes_at_half_its_rate(store: Store) -> None:
    pace = await store.slow_sender("+1500", now=100.0, paced_at=99.9, retry_after=1.0, start_rate=10.0)
    assert pace == Pace(5.0, 100.0, 101.0)
    waits = [await store.reserve_send_slot("+1500", None, now=100.0) for _ in range(3)]
    assert waits == pytest.approx([1.0, 1.2, 1.4]), "nothing before Retry-After, then 5/s"
    assert await store.reserve_send_slot("+1666", None, now=100.0) == 0.0, "other senders are not slowed"


async def test_sends_of_a_burst_already_paced_cut_the_rate_once(store: Store) -> None:
    first = await store.slow_sender("+1500", now=100.0, paced_at=99.9, retry_after=1.0, start_rate=40.0)
    assert first == Pace(20.0, 100.0, 101.0)
    for _ in range(10):  # throttled answers to sends whose slots were taken before the cut
        pace = await store.slow_sender("+1500", now=100.5, paced_at=99.95, retry_after=1.0, start_rate=40.0)
        assert pace == first, "the first cut and its Retry-After answer them"
    pace = await store.slow_sender("+1500", now=103.0, paced_at=102.5, retry_after=None, start_rate=40.0)
    assert pace.cut_at == 103.0 and pace.rate == pytest.approx(20.0 * 2 ** (2.0 / 2) / 2), (
        "a send paced after the cut and throttled again cuts again, from the rate it had grown to"
    )


async def test_a_throttled_sender_recovers_until_it_is_unlimited_again(store: Store) -> None:
    await store.slow_sender("+1500", now=100.0, paced_at=100.0, retry_after=None, start_rate=2.0)  # 1/s
    gaps = []
    for at in (100.0, 104.0, 108.0):  # two slots a moment apart: their gap is the interval then
        first = await store.reserve_send_slot("+1500", None, now=at)
        second = await store.reserve_send_slot("+1500", None, now=at)
        gaps.append(second - first)
    assert gaps == pytest.approx([1.0, 1 / 4, 1 / 16]), "the rate doubles every 2 s"
    # 1/s grows past 1000/s in 2 * log2(1000) ~ 20 s: the sender no longer waits at all.
    assert [await store.reserve_send_slot("+1500", None, now=121.0) for _ in range(50)] == [0.0] * 50


async def test_a_cap_and_a_pace_the_slower_wins(store: Store) -> None:
    cap = SenderRate(2.0, 2)
    await store.slow_sender("+1500", now=100.0, paced_at=100.0, retry_after=None, start_rate=2.0)  # 1/s
    assert [await store.reserve_send_slot("+1500", cap, now=100.0) for _ in range(2)] == [0.0, 1.0]
    assert [await store.reserve_send_slot("+1600", cap, now=100.0) for _ in range(3)] == [0.0, 0.0, 0.5]


async def test_a_deferred_job_keeps_its_attempts_and_last_error(store: Store) -> None:
    await store.enqueue_job(Job("mg1", "send", {}, order_key="userA", run_at=0.0))
    await store.enqueue_job(Job("mg2", "send", {}, order_key="userA", run_at=0.0))
    [job] = await store.lease_jobs("w", 10, 30, now=1.0)
    await store.retry_job(job.job_id, 2.0, "timeout: no answer")
    [job] = await store.lease_jobs("w", 10, 30, now=2.0)
    assert job.attempts == 2
    await store.defer_job(job.job_id, 3.0)
    assert await store.lease_jobs("w", 10, 30, now=2.5) == [], "not before its time, and mg2 still waits"
    [job] = await store.lease_jobs("w", 10, 30, now=3.0)
    assert (job.job_id, job.attempts, job.last_error) == ("mg1", 2, "timeout: no answer")


async def test_one_conversation_is_leased_one_message_at_a_time_in_order(store: Store) -> None:
    for i in range(3):
        await store.accept_inbound(message(f"SMa{i}", user="+15550000001"))
    await store.accept_inbound(message("SMb0", user="+15550000002"))
    now = time.time()
    first = await store.lease_inbound("a", 10, 30, now)
    assert [r.message.message_id for r in first] == ["SMa0", "SMb0"]
    assert await store.lease_inbound("b", 10, 30, now) == [], "SMa1 waits while SMa0 is in flight"
    await store.complete_inbound(first[0].key)
    assert [r.message.message_id for r in await store.lease_inbound("b", 10, 30, now)] == ["SMa1"]
    # The same conversation with the tenant number written differently is still one conversation.
    await store.accept_inbound(InboundMessage("twilio", "SMc0", "15005550006", "+15550000001", "x"))
    assert await store.lease_inbound("c", 10, 30, now) == []


async def test_a_turn_begins_with_the_pipe_or_else_the_session_and_its_waiting_errors_taken(store: Store) -> None:
    session = Session.new("+1500", "+1555", 60, now=0.0)
    await store.save_session(session)
    await store.push_sms_error("+1500", "+1555", {"code": "30007"})
    pipe = Pipe("p1", "+1500", "+1555", "http://vgw.example.com/sms", created_at=0.0, expires_at=100.0)
    await store.save_pipe(pipe)
    during_call = await store.begin_turn("+1500", "+1555", now=50.0)
    assert (during_call.pipe, during_call.session, during_call.errors) == (pipe, None, [])
    after_call = await store.begin_turn("+1500", "+1555", now=100.0)
    assert (after_call.pipe, after_call.session, after_call.errors) == (None, session, [{"code": "30007"}])
    assert (await store.begin_turn("+1500", "+1555", now=100.0)).errors == [], "taken once"
    assert await store.begin_turn("+1500", "+1999", now=0.0) == TurnStart(None, None, [])


async def test_a_turn_ends_with_its_session_saved_or_deleted_and_its_message_processed(store: Store) -> None:
    for sid in ("SMa0", "SMa1"):
        await store.accept_inbound(message(sid, user="+15550000001"))
    now = time.time()
    [first] = await store.lease_inbound("w", 10, 30, now)
    session = Session.new("+15005550006", "+15550000001", 60, now=now)
    session.user_data = {"turn": 1}
    reply = Job("mg-reply", "send", {"text": "hello"}, order_key="+15005550006:+15550000001", run_at=0.0)
    assert await store.end_turn(session, ended=False, inbound_key=first.key, jobs=[reply]) == 1
    assert await store.load_session("+15005550006", "+15550000001") == session
    leased = await store.lease_jobs("w", 10, 30, now)
    assert [(j.job_id, j.payload) for j in leased] == [("mg-reply", {"text": "hello"})]
    assert await store.end_turn(session, ended=False, inbound_key=None, jobs=[reply]) == 0, "a re-run turn's reply"
    [second] = await store.lease_inbound("w", 10, 30, now)
    assert second.message.message_id == "SMa1", "the conversation's next message is free once the turn ended"
    assert await store.accept_inbound(message("SMa0", user="+15550000001")) is False, "still claimed"

    replaced = Session.new("+15005550006", "+15550000001", 60, now=now)  # e.g. by the REST API meanwhile
    await store.save_session(replaced)
    await store.end_turn(session, ended=True, inbound_key=None)
    assert await store.load_session("+15005550006", "+15550000001") == replaced, "only this turn's session ends"
    assert await store.pending_inbound_count() == 1, "without a key no message is marked processed"
    await store.end_turn(replaced, ended=True, inbound_key=second.key)
    assert await store.load_session("+15005550006", "+15550000001") is None
    assert await store.pending_inbound_count() == 0


async def test_a_turn_that_ends_with_several_replies_queues_each_in_its_order(store: Store) -> None:
    """A turn with text, an MMS and a Voice Gateway relay: every job as given (Redis passes them to one script
    as a flat argument list), one after another per order key, a job without a key free at once."""
    session = Session.new("+1500", "+1555", 60, now=0.0)
    order = "+1500:+1555"
    jobs = [
        Job("mg-1", "send", {"text": "first"}, order_key=order, run_at=0.0),
        Job(
            "mg-2",
            "send",
            {"media": ["https://example.com/a.jpg"]},
            order_key=order,
            run_at=0.0,
            attempts=2,
            last_error="20429",
        ),
        Job("relay-1", "pipe_relay", {"smsMessage": "x"}, order_key=None, run_at=0.0),
    ]
    assert await store.end_turn(session, ended=False, inbound_key=None, jobs=jobs) == 3
    leased = await store.lease_jobs("w", 10, 30, now=1.0)
    assert sorted(j.job_id for j in leased) == ["mg-1", "relay-1"], "mg-2 waits for mg-1"
    await store.complete_job("mg-1")
    [second] = await store.lease_jobs("w", 10, 30, now=1.0)
    assert (second.job_id, second.payload, second.attempts, second.last_error) == (
        "mg-2",
        {"media": ["https://example.com/a.jpg"]},
        3,
        "20429",
    ), "a lease counts an attempt"
    assert await store.load_session("+1500", "+1555") == session


async def test_a_send_begins_with_its_slot_and_record_and_completes_with_its_provider_id(store: Store) -> None:
    await store.enqueue_job(Job("mg1", "send", {}, order_key="userA", run_at=0.0))
    await store.enqueue_job(Job("mg2", "send", {}, order_key="userA", run_at=0.0))
    [job] = await store.lease_jobs("w", 10, 30, now=1.0)
    unsent = OutboundRecord("mg1", "+1500", "+1555", "sess", None, None, 1.0)
    assert await store.begin_send("send:+1500", SenderRate(1.0, 1), 1.0, unsent) == 0.0
    assert await store.find_outbound("mg1") == unsent, "known before the request leaves"
    assert await store.begin_send("send:+1500", SenderRate(1.0, 1), 1.0, unsent) == 1.0, (
        "the next slot is a second later"
    )
    await store.complete_send(job.job_id, OutboundRecord("mg1", "+1500", "+1555", "sess", "SM9", None, 1.0))
    assert await store.find_outbound("mg1") == OutboundRecord("mg1", "+1500", "+1555", "sess", "SM9", None, 1.0)
    assert [j.job_id for j in await store.lease_jobs("w", 10, 30, now=1.0)] == ["mg2"], "mg1 is done"
    assert await store.pending_job_count() == 1


async def test_leases_are_renewed_and_handed_back_by_their_owner_only(store: Store) -> None:
    await store.accept_inbound(message("SMlease"))
    await store.enqueue_job(Job("jlease", "send", {}, run_at=0.0))
    [record] = await store.lease_inbound("a", 10, 30, now=100.0)
    [job] = await store.lease_jobs("a", 10, 30, now=100.0)
    await store.extend_inbound_leases("a", [record.key], until=200.0)
    await store.extend_job_leases("a", [job.job_id], until=200.0)
    await store.extend_inbound_leases("intruder", [record.key], until=100.0)
    await store.extend_job_leases("intruder", [job.job_id], until=100.0)
    assert await store.lease_inbound("b", 10, 30, now=150.0) == [], "renewed past the first lease"
    assert await store.lease_jobs("b", 10, 30, now=150.0) == []
    await store.extend_inbound_leases("a", [record.key], until=150.0)  # handed back at shutdown
    await store.extend_job_leases("a", [job.job_id], until=150.0)
    assert [r.key for r in await store.lease_inbound("b", 10, 30, now=150.0)] == [record.key]
    assert [j.job_id for j in await store.lease_jobs("b", 10, 30, now=150.0)] == ["jlease"]
    await store.extend_inbound_leases("a", [record.key], until=999.0)
    assert await store.lease_inbound("c", 10, 30, now=170.0) == [], "b's lease still holds; a lost it"


def owner(owner_id: str) -> Owner:
    return Owner(owner_id, "host-a|boot|pid:[1]", 4242, "123")


async def test_an_owner_is_alive_while_it_beats_and_its_end_is_seen_by_everyone(store: Store) -> None:
    now = time.time()
    assert await store.beat_owner(owner("a"), 6.0, now) is False, "new"
    assert await store.beat_owner(owner("a"), 6.0, now + 1) is True
    await store.beat_owner(owner("b"), 6.0, now)
    states = sorted(await store.owners(now + 2), key=lambda s: s.owner.owner_id)
    assert [(s.owner, s.alive) for s in states] == [(owner("a"), True), (owner("b"), True)]
    await store.end_owner("b")
    assert {s.owner.owner_id: s.alive for s in await store.owners(now + 2)} == {"a": True, "b": False}
    assert await store.beat_owner(owner("b"), 6.0, now + 3) is False, "its heartbeat had ended"


async def test_a_heartbeat_runs_out_after_its_ttl(store: Store) -> None:
    """By the clock of whoever keeps the heartbeats: real time here, as Redis expires them by its own."""
    await store.beat_owner(owner("brief"), 0.2, time.time())
    assert [s.alive for s in await store.owners(time.time())] == [True]
    await asyncio.sleep(0.5)
    assert [s.alive for s in await store.owners(time.time())] == [False]
    assert await store.release_owners(["brief"], time.time()) == ["brief"]


async def test_the_leases_of_an_owner_whose_heartbeat_ended_are_free_at_once(store: Store) -> None:
    now = time.time()
    for name in ("a", "c"):
        await store.beat_owner(owner(name), 6.0, now)
    await store.accept_inbound(message("SMa", user="+15550000001"))
    await store.accept_inbound(message("SMa-next", user="+15550000001"))
    await store.accept_inbound(message("SMc", user="+15550000002"))
    await store.enqueue_job(Job("ja", "send", {}, order_key="k", run_at=0.0))
    await store.enqueue_job(Job("ja-next", "send", {}, order_key="k", run_at=0.0))
    await store.enqueue_job(Job("jc", "send", {}, run_at=0.0))
    assert [r.message.message_id for r in await store.lease_inbound("a", 1, 30, now)] == ["SMa"]
    assert [j.job_id for j in await store.lease_jobs("a", 1, 30, now)] == ["ja"]
    assert [r.message.message_id for r in await store.lease_inbound("c", 10, 30, now)] == ["SMc"]
    assert [j.job_id for j in await store.lease_jobs("c", 10, 30, now)] == ["jc"]

    assert await store.release_owners(["a", "c"], now + 1) == [], "both still beat: they keep their leases"
    assert await store.lease_inbound("b", 10, 30, now + 1) == []
    assert await store.lease_jobs("b", 10, 30, now + 1) == []

    await store.end_owner("a")
    assert await store.release_owners(["a", "c", "unknown"], now + 1) == ["a"]
    assert await store.release_owners(["a"], now + 1) == [], "released once"
    assert [s.owner.owner_id for s in await store.owners(now + 1)] == ["c"], "a is forgotten"
    # a's work is taken at once (its leases ran until now + 30), in order; c's stays c's.
    assert [r.message.message_id for r in await store.lease_inbound("b", 10, 30, now + 1)] == ["SMa"]
    assert [j.job_id for j in await store.lease_jobs("b", 10, 30, now + 1)] == ["ja"]
    assert await store.lease_inbound("d", 10, 30, now + 2) == [], "b holds SMa now; SMa-next waits behind it"
    assert await store.lease_jobs("d", 10, 30, now + 2) == []


async def test_the_jobs_of_a_released_owner_wait_for_their_attempts_to_settle(store: Store) -> None:
    """A send cut short by a crash may still be created by the provider for a while: the dead owner's jobs are
    free `job_settle_seconds` after the release, or when their lease ends if that is sooner."""
    now = time.time()
    await store.beat_owner(owner("a"), 6.0, now)
    await store.enqueue_job(Job("long", "send", {}, run_at=0.0))
    await store.enqueue_job(Job("short", "send", {}, run_at=0.0))
    assert [j.job_id for j in await store.lease_jobs("a", 1, 60, now)] == ["long"]
    assert [j.job_id for j in await store.lease_jobs("a", 1, 5, now)] == ["short"]
    await store.end_owner("a")
    assert await store.release_owners(["a"], now, job_settle_seconds=10.0) == ["a"]
    assert await store.lease_jobs("b", 10, 30, now + 1) == []
    assert [j.job_id for j in await store.lease_jobs("b", 10, 30, now + 5)] == ["short"]
    assert await store.lease_jobs("b", 10, 30, now + 9) == []
    assert [j.job_id for j in await store.lease_jobs("b", 10, 30, now + 10)] == ["long"]


async def test_a_released_owners_send_that_had_not_begun_is_free_at_once_one_that_had_waits(store: Store) -> None:
    """Only an attempt whose request may have left can still take effect at the provider: a send killed before
    that (waiting for its slot, or not yet at it) runs again at once; one whose request had left, whether at
    once with its slot or after a wait, and a job of a kind that does not say (a relay), wait to settle."""
    now = time.time()
    await store.beat_owner(owner("a"), 6.0, now)
    for job_id in ("at-once", "waiting", "after-wait", "not-yet"):
        await store.enqueue_job(Job(job_id, "send", {}, run_at=0.0, begun_attempt=0))
    await store.enqueue_job(Job("relay", "pipe_relay", {}, run_at=0.0))
    held = {j.job_id: j for j in await store.lease_jobs("a", 10, 60, now)}
    assert len(held) == 5
    cap = SenderRate(1.0, 1)

    def record(job_id: str) -> OutboundRecord:
        return OutboundRecord(job_id, "+1500", "+1555", None, None, None, now)

    assert await store.begin_send("send:+1500", cap, now, record("at-once"), 2.0, job=held["at-once"]) == 0.0
    assert await store.begin_send("send:+1500", cap, now, record("after-wait"), 2.0, job=held["after-wait"]) == 1.0
    await store.begin_job(held["after-wait"])  # its wait is over: the request leaves
    assert await store.begin_send("send:+1500", cap, now, record("waiting"), 2.0, job=held["waiting"]) == 2.0
    await store.end_owner("a")
    assert await store.release_owners(["a"], now, job_settle_seconds=10.0) == ["a"]

    free = await store.lease_jobs("b", 10, 30, now)
    assert sorted(j.job_id for j in free) == ["not-yet", "waiting"]
    assert [(j.attempts, j.begun_attempt, j.begun()) for j in free] == [(2, 0, False)] * 2, (
        "no attempt of theirs has begun: nothing to look up at the provider"
    )
    assert await store.lease_jobs("b", 10, 30, now + 9) == []
    settled = await store.lease_jobs("b", 10, 30, now + 10)
    assert sorted(j.job_id for j in settled) == ["after-wait", "at-once", "relay"]
    assert {j.job_id: j.begun_attempt for j in settled} == {"after-wait": 1, "at-once": 1, "relay": None}


async def test_the_begun_mark_is_the_current_attempts(store: Store) -> None:
    """An attempt that began and failed does not make the next one look begun, nor does a deferred one (it was
    not made); a replayed dead letter starts again from none; a job that does not say is never marked."""
    now = time.time()

    async def released_and_free(job_id: str, holder: str) -> bool:
        """Kill `holder` (which leased the job): is the job free at once?"""
        await store.end_owner(holder)
        assert await store.release_owners([holder], now, job_settle_seconds=10.0) == [holder]
        return [j.job_id for j in await store.lease_jobs("probe", 10, 30, now)] == [job_id]

    await store.enqueue_job(Job("j", "send", {}, run_at=0.0, begun_attempt=0))
    await store.enqueue_job(Job("unsaid", "pipe_relay", {}, run_at=now + 1000))
    await store.beat_owner(owner("a"), 6.0, now)
    [first] = await store.lease_jobs("a", 10, 60, now)
    assert first.job_id == "j"
    await store.begin_job(first)
    await store.retry_job("j", now, "timeout: the provider did not answer")  # began, then failed
    with pytest.raises(LeaseLost):
        await store.begin_job(first)  # not leased any more: refused
    await store.beat_owner(owner("b"), 6.0, now)
    [second] = await store.lease_jobs("b", 10, 60, now)
    assert (second.attempts, second.begun_attempt, second.begun()) == (2, 1, False)
    assert await released_and_free("j", "b"), "attempt 2 had not begun: attempt 1's mark is not its"

    await store.defer_job("j", now)  # the probe's attempt 3: throttled, as though not made
    await store.beat_owner(owner("c"), 6.0, now)
    [third] = await store.lease_jobs("c", 10, 60, now)
    assert (third.attempts, third.begun_attempt) == (3, 1)
    await store.begin_job(third)
    await store.defer_job("j", now)  # began, then the provider throttled it: not made either
    await store.beat_owner(owner("c"), 6.0, now)
    [again] = await store.lease_jobs("c", 10, 60, now)
    assert (again.attempts, again.begun_attempt, again.begun()) == (3, 2, False)
    assert await released_and_free("j", "c")

    await store.dead_letter_job("j", "given up", now)
    assert await store.replay_dead_letter("j", now)
    [replayed] = await store.lease_jobs("d", 10, 60, now)
    assert (replayed.attempts, replayed.begun_attempt) == (1, 0)
    await store.complete_job("j")

    await store.beat_owner(owner("e"), 6.0, now)
    [unsaid] = await store.lease_jobs("e", 10, 60, now + 1000)
    await store.begin_job(unsaid)
    assert unsaid.begun_attempt is None and unsaid.begun()
    await store.end_owner("e")
    assert await store.release_owners(["e"], now + 1000, job_settle_seconds=10.0) == ["e"]
    assert await store.lease_jobs("probe", 10, 30, now + 1000) == [], "a job that does not say waits"
    [taken] = await store.lease_jobs("probe", 10, 30, now + 1010)
    assert taken.begun_attempt is None


async def test_a_stalled_owner_cannot_begin_an_attempt_of_a_job_another_took_over(store: Store) -> None:
    """Fencing: a process taken for dead (its heartbeat ran out in a GC pause, a partition, a suspended VM) whose
    jobs were freed and leased by another cannot begin their attempts when it resumes: its `begin_send` and
    `begin_job` are refused, writing nothing (no record, no send slot), and the new owner's go through."""
    now = time.time()
    cap = SenderRate(1.0, 1)

    def record(job_id: str) -> OutboundRecord:
        return OutboundRecord(job_id, "+1500", "+1555", None, None, None, now)

    await store.beat_owner(owner("a"), 6.0, now)
    for job_id in ("kept", "taken", "waited"):
        await store.enqueue_job(Job(job_id, "send", {}, order_key=job_id, run_at=0.0, begun_attempt=0))
    held_by_a = {j.job_id: j for j in await store.lease_jobs("a", 10, 60, now)}
    assert {j.owner for j in held_by_a.values()} == {"a"}
    assert await store.begin_send("send:+1500", cap, now, record("kept"), 2.0, job=held_by_a["kept"]) == 0.0, (
        "still leased by a: its send begins"
    )
    assert await store.begin_send("send:+1500", cap, now, record("waited"), 2.0, job=held_by_a["waited"]) == 1.0

    await store.end_owner("a")  # a stalls past its heartbeat; b sees it gone and takes its unbegun jobs
    assert await store.release_owners(["a"], now, job_settle_seconds=10.0) == ["a"]
    await store.beat_owner(owner("b"), 6.0, now)
    held_by_b = {j.job_id: j for j in await store.lease_jobs("b", 10, 60, now)}
    assert sorted(held_by_b) == ["taken", "waited"]

    with pytest.raises(LeaseLost):  # a resumes
        await store.begin_send("send:+1600", cap, now, record("taken"), 2.0, job=held_by_a["taken"])
    with pytest.raises(LeaseLost):
        await store.begin_job(held_by_a["waited"])  # its wait for the slot is over
    assert await store.find_outbound("taken") is None, "a refused send writes no record"

    assert await store.begin_send("send:+1600", cap, now, record("taken"), 2.0, job=held_by_b["taken"]) == 0.0, (
        "the slot a was refused was not reserved"
    )
    assert await store.find_outbound("taken") == record("taken")
    await store.begin_job(held_by_b["waited"])
    await store.end_owner("b")
    assert await store.release_owners(["b"], now, job_settle_seconds=10.0) == ["b"]
    assert await store.lease_jobs("c", 10, 60, now) == [], "b's attempts began: they wait to settle"
    assert sorted(j.job_id for j in await store.lease_jobs("c", 10, 60, now + 10)) == ["kept", "taken", "waited"]


async def test_an_owner_taken_for_dead_renews_what_nobody_took_yet(store: Store) -> None:
    """A process that stalled past its heartbeat keeps the work nobody has taken meanwhile: its renewals still
    count (the leases keep their owner), and once another took a message, its renewals no longer do."""
    now = time.time()
    await store.beat_owner(owner("a"), 6.0, now)
    await store.accept_inbound(message("SMx", user="+15550000001"))
    await store.accept_inbound(message("SMy", user="+15550000002"))
    [x, y] = await store.lease_inbound("a", 10, 30, now)
    await store.end_owner("a")
    assert await store.release_owners(["a"], now) == ["a"]
    await store.extend_inbound_leases("a", [x.key], now + 30)  # a's lease heartbeat, before anyone leased
    assert [r.key for r in await store.lease_inbound("b", 10, 30, now + 1)] == [y.key]
    await store.extend_inbound_leases("a", [y.key], now + 30)
    assert await store.lease_inbound("c", 10, 30, now + 2) == [], "x is a's again, y is b's"


@pytest.fixture(params=["sqlite", "memory"])
async def pruning_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The stores that prune themselves (Redis expires the same keys with TTLs, see test_store_redis)."""
    s = create_store(f"sqlite:///{tmp_path / 'gw.db'}" if request.param == "sqlite" else "memory://")
    await s.open()
    yield s
    await s.close()


async def test_finished_work_is_forgotten_after_retention_and_nothing_else(pruning_store: Store) -> None:
    store = pruning_store
    now = time.time()
    old = now - 10 * 86400
    week_ago = now - 7 * 86400
    await store.accept_inbound(dataclasses.replace(message("SMold-done"), received_at=old))
    await store.accept_inbound(dataclasses.replace(message("SMold-waiting", user="+15550000009"), received_at=old))
    await store.accept_inbound(dataclasses.replace(message("SMold-done-2", user="+15550000008"), received_at=old))
    await store.accept_inbound(message("SMnew", user="+15550000007"))
    for record in await store.lease_inbound("w", 10, 30, now):
        if record.message.message_id != "SMold-waiting":
            await store.complete_inbound(record.key)
    for job in (
        Job("j-old-done", "send", {}, run_at=old),
        Job("j-old-dead", "send", {}, run_at=old),
        Job("j-old-queued", "send", {}, "k", run_at=old),
        Job("j-new-done", "send", {}, run_at=now),
    ):
        await store.enqueue_job(job)
    await store.lease_jobs("w", 10, 30, now)
    await store.complete_job("j-old-done")
    await store.complete_job("j-new-done")
    await store.dead_letter_job("j-old-dead", "gave up", old)
    await store.retry_job("j-old-queued", old, "later")
    await store.record_outbound(OutboundRecord("m-old", "+15005550006", "+15551230000", None, "SM1", None, old))
    await store.record_outbound(OutboundRecord("m-new", "+15005550006", "+15551230000", None, "SM2", None, now))
    await store.claim_status("SM2", "delivered")

    assert await store.prune_finished(week_ago, 1000) == 4
    assert await store.prune_finished(week_ago, 1000) == 0
    # Forgotten: the finished old ones.
    assert await store.accept_inbound(dataclasses.replace(message("SMold-done"), received_at=old)) is True
    assert await store.enqueue_job(Job("j-old-done", "send", {}, run_at=now + 3600)) is True
    assert await store.find_outbound("m-old") is None
    # Kept: unfinished work whatever its age, dead letters for the operator, everything recent.
    assert await store.accept_inbound(message("SMnew", user="+15550000007")) is False
    assert await store.accept_inbound(message("SMold-waiting", user="+15550000009")) is False
    assert [j.job_id for j in await store.dead_letters(10)] == ["j-old-dead"]
    assert await store.enqueue_job(Job("j-new-done", "send", {})) is False
    assert [j.job_id for j in await store.lease_jobs("w", 10, 30, now)] == ["j-old-queued"]
    assert await store.find_outbound("m-new") is not None
    assert await store.claim_status("SM2", "delivered") is False
    # Status claims go too, once old enough.
    assert await store.prune_finished(time.time() + 1, 1000) >= 1
    assert await store.claim_status("SM2", "delivered") is True


async def test_pruning_forgets_expired_claims_and_keeps_live_ones(pruning_store: Store) -> None:
    store = pruning_store
    week_ago = time.time() - 7 * 86400
    short_until = time.time() + 0.3
    for key in ("nonce-expired-1", "nonce-expired-2", "nonce-expired-3", "nonce-renewed"):
        assert await store.claim_once(key, short_until) is True
    assert await store.claim_once("nonce-live", time.time() + 3600) is True
    await wait_past(short_until)
    assert await store.claim_once("nonce-renewed", time.time() + 3600) is True, "claimed again once expired"

    # Expired claims go as soon as they expire, not a retention window later; batches bound each prune.
    assert await store.prune_finished(week_ago, 2) == 2
    assert await store.prune_finished(week_ago, 2) == 1
    assert await store.prune_finished(week_ago, 2) == 0
    assert await store.claim_once("nonce-live", time.time() + 3600) is False, "a live claim is kept"
    assert await store.claim_once("nonce-renewed", time.time() + 3600) is False, "renewed: kept at its new until"
    assert await store.prune_finished(time.time() + 30 * 86400, 1000) == 0, "live claims never go early"
    assert await store.claim_once("nonce-live", time.time() + 3600) is False
    assert await store.claim_once("nonce-expired-1", time.time() + 3600) is True


async def test_pruning_goes_in_batches_oldest_first(pruning_store: Store) -> None:
    old = time.time() - 30 * 86400
    for i in range(25):
        await store_done(
            pruning_store, dataclasses.replace(message(f"SM{i:02d}", user=f"+1555000{i:04d}"), received_at=old + i)
        )
    assert await pruning_store.prune_finished(old + 100, 10) == 10
    assert await pruning_store.accept_inbound(dataclasses.replace(message("SM00", user="+15550000000"))) is True
    assert await pruning_store.accept_inbound(dataclasses.replace(message("SM10", user="+15550000010"))) is False
    assert await pruning_store.prune_finished(old + 100, 10) == 10
    assert await pruning_store.prune_finished(old + 100, 10) == 5


async def store_done(store: Store, queued: InboundMessage) -> None:
    await store.accept_inbound(queued)
    for record in await store.lease_inbound("w", 100, 30, time.time()):
        await store.complete_inbound(record.key)


async def test_retention_sweeper_prunes_everything_due_in_short_batches(pruning_store: Store) -> None:
    old = time.time() - 30 * 86400
    for i in range(25):
        await store_done(
            pruning_store, dataclasses.replace(message(f"SM{i:02d}", user=f"+1555000{i:04d}"), received_at=old)
        )
    await store_done(pruning_store, message("SMrecent"))
    sweeper = RetentionSweeper(pruning_store, retention_seconds=7 * 86400, batch=10)
    assert await sweeper.sweep() == 25
    assert await sweeper.sweep() == 0
    assert await pruning_store.accept_inbound(message("SMrecent")) is False


async def test_sqlite_checkpoints_in_the_background_so_the_database_file_stays_current(tmp_path: Path) -> None:
    """The WAL is copied into the database file off the commit path: the file alone (without its WAL) soon
    holds what was committed, although the writer's own automatic checkpoint would wait for ~40 MB of WAL."""
    store = SQLiteStore(f"sqlite:///{tmp_path / 'gw.db'}")
    await store.open()
    try:
        await asyncio.gather(*(store.accept_inbound(message(f"SM{i}", user=f"+1555{i:07d}")) for i in range(300)))
        await asyncio.sleep(0.6)
        copy = tmp_path / "copy"
        copy.mkdir()
        (copy / "gw.db").write_bytes((tmp_path / "gw.db").read_bytes())
        alone = sqlite3.connect(copy / "gw.db")
        try:
            assert alone.execute("SELECT COUNT(*) FROM inbound").fetchone()[0] == 300
        finally:
            alone.close()
    finally:
        await store.close()
