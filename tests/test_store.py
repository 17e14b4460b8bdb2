"""The store contract, run against every back end (a real SQLite file, memory)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sms_gateway.model import InboundMessage, Media, Session
from sms_gateway.store.base import OutboundRecord, Store, StoreUnavailable
from sms_gateway.store.factory import create_store
from sms_gateway.store.sqlite import SQLiteStore, sqlite_path


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
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
        await store.accept_inbound(message(f"SM{i}"))
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
    assert await store.claim_status("SM9", "sent") is True
    assert await store.claim_status("SM9", "sent") is False
    assert await store.claim_status("SM9", "delivered") is True


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
