"""What an acknowledgement guarantees on Redis: read from the server's settings at start, logged once
(`store_durability`), and kept: with WAITAOF (Redis >= 7.2) the gateway waits for the fsync before it answers.

The crash itself (kill -9 of redis-server after a burst of acknowledged webhooks) is in test_faults_redis.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import structlog

from sms_gateway.model import InboundMessage
from sms_gateway.store.base import StoreUnavailable
from sms_gateway.store.redis import RedisStore
from sms_gateway.store.redis_durability import Durability, classify, has_waitaof
from tests.harness import V1, inbound_form, running_gateway
from tests.procs import reply_for
from tests.redis_server import RedisServer, redis_available
from tests.redis_waitaof_shim import WaitaofCall, WaitaofShim, waitaof_shim


def message(sid: str) -> InboundMessage:
    return InboundMessage("twilio", sid, "+15005550006", "+15551230000", f"text {sid}", received_at=1000.5)


# The settings, classified -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("appendonly", "appendfsync", "version", "mode"),
    [
        ("yes", "always", "7.0.15", Durability.FSYNC_ALWAYS),
        ("yes", "always", "7.2.4", Durability.FSYNC_ALWAYS),  # nothing to wait for
        ("yes", "everysec", "7.2.4", Durability.WAITAOF),
        ("yes", "everysec", "7.4.1", Durability.WAITAOF),
        ("yes", "everysec", "8.0.0", Durability.WAITAOF),
        ("yes", "everysec", "7.0.15", Durability.NOT_DURABLE),  # no WAITAOF before 7.2
        ("yes", "everysec", "6.2.14", Durability.NOT_DURABLE),
        ("yes", "everysec", None, Durability.NOT_DURABLE),  # INFO refused: never assume WAITAOF
        ("yes", "no", "7.2.4", Durability.NOT_DURABLE),
        ("no", "always", "7.2.4", Durability.NOT_DURABLE),
        ("no", "everysec", "7.0.15", Durability.NOT_DURABLE),
        (None, None, "7.0.15", Durability.UNVERIFIED),  # CONFIG refused
        ("yes", None, "7.2.4", Durability.UNVERIFIED),
    ],
)
def test_the_settings_decide_what_an_acknowledgement_guarantees(
    appendonly: str | None, appendfsync: str | None, version: str | None, mode: Durability
) -> None:
    assert classify(appendonly, appendfsync, version).mode is mode


def test_waitaof_only_from_redis_7_2() -> None:
    assert [
        v for v in ("6.2.14", "7.0.15", "7.1.0", "7.2.0", "7.2.4", "7.10.1", "8.0.0", "", "x", None) if has_waitaof(v)
    ] == ["7.2.0", "7.2.4", "7.10.1", "8.0.0"]


def test_the_words_say_what_is_and_is_not_guaranteed() -> None:
    everysec = classify("yes", "everysec", "7.0.15").guarantee
    assert "survives a gateway crash" in everysec and "up to about 1 s" in everysec
    assert "appendfsync always" in everysec  # what to change
    off = classify("no", "everysec", "7.0.15").guarantee
    assert "appendonly is off" in off and "last RDB snapshot" in off
    assert "could not be read" in classify(None, None, None).guarantee


# The startup log on a real Redis ---------------------------------------------------------------------------
@pytest.fixture
def redis_dir(tmp_path: Path) -> Iterator[Path]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    yield tmp_path / "redis"


async def opened_log(server: RedisServer | WaitaofShim) -> tuple[RedisStore, list[dict[str, Any]]]:
    store = RedisStore(server.url)
    with structlog.testing.capture_logs() as logs:
        await store.open()
    return store, [e for e in logs if e["event"] == "store_durability"]


@pytest.mark.parametrize(
    ("appendonly", "appendfsync", "mode", "level", "words"),
    [
        (True, "always", Durability.FSYNC_ALWAYS, "info", "on disk before it is acknowledged"),
        (True, "everysec", Durability.NOT_DURABLE, "warning", "about 1 s of acknowledged messages"),
        (False, "everysec", Durability.NOT_DURABLE, "warning", "appendonly is off"),
    ],
)
async def test_the_store_says_once_at_start_what_an_acknowledgement_guarantees(
    redis_dir: Path, appendonly: bool, appendfsync: str, mode: Durability, level: str, words: str
) -> None:
    with RedisServer(redis_dir, appendonly=appendonly, appendfsync=appendfsync) as server:
        store, lines = await opened_log(server)
        try:
            assert len(lines) == 1, lines
            assert lines[0]["mode"] == mode.value and lines[0]["log_level"] == level
            assert words in lines[0]["guarantee"]
            assert lines[0]["appendfsync"] == appendfsync and lines[0]["redis_version"]
            assert store.durability is not None and store.durability.mode is mode
        finally:
            await store.close()


async def test_a_redis_that_refuses_config_is_reported_unverified(redis_dir: Path) -> None:
    with RedisServer(redis_dir, appendonly=True, extra_args=["--rename-command", "CONFIG", ""]) as server:
        store, lines = await opened_log(server)
        try:
            assert [(e["mode"], e["log_level"]) for e in lines] == [("unverified", "warning")]
            assert "could not be read" in lines[0]["guarantee"]
            assert await store.accept_inbound(message("SM1")) is True  # and it works all the same
            await store.wait_durable()
        finally:
            await store.close()


async def test_a_redis_7_0_never_gets_waitaof(redis_dir: Path) -> None:
    """everysec on 7.0: no WAITAOF to wait with; the store must not send it (an unknown command: an error reply)."""
    with RedisServer(redis_dir, appendonly=True, appendfsync="everysec") as server:
        stats = redis_sync.Redis(port=server.port, decode_responses=True)
        store, _ = await opened_log(server)
        try:
            assert store.durability is not None
            assert store.durability.version == stats.info("server")["redis_version"]
            assert await store.accept_inbound(message("SM0")) is True  # its script loaded (one NOSCRIPT error)
            errors = stats.info("stats")["total_error_replies"]
            for i in range(1, 6):
                assert await store.accept_inbound(message(f"SM{i}")) is True
                await store.wait_durable()
            assert stats.info("stats")["total_error_replies"] == errors
            assert "cmdstat_waitaof" not in stats.info("commandstats")
        finally:
            await store.close()
            stats.close()


# WAITAOF (Redis >= 7.2), through a shim in front of the Redis here --------------------------------------------
@pytest.fixture
async def shim(redis_dir: Path) -> AsyncIterator[WaitaofShim]:
    with RedisServer(redis_dir, appendonly=True, appendfsync="everysec") as server:
        async with waitaof_shim(server.port) as s:
            yield s


async def test_on_redis_7_2_with_everysec_the_store_waits_for_waitaof(shim: WaitaofShim) -> None:
    store, lines = await opened_log(shim)
    try:
        assert [(e["mode"], e["log_level"], e["redis_version"]) for e in lines] == [("waitaof", "info", "7.2.4")]
        assert await store.accept_inbound(message("SM1")) is True
        await store.wait_durable()
        # One local fsync, no replica, within 3/4 of the operation timeout; after a write of its own connection.
        assert shim.calls == [WaitaofCall("SET", ("1", "0", "1500"))]
        shim.local_fsyncs = 0
        with pytest.raises(StoreUnavailable, match="not confirmed on disk"):
            await store.wait_durable()
    finally:
        await store.close()


async def test_a_webhook_not_confirmed_on_disk_gets_503_and_its_retry_is_processed_once(
    shim: WaitaofShim, tmp_path: Path
) -> None:
    async with running_gateway(tmp_path, store_url=shim.url, allow_anonymous_control=True) as gw:
        status, _, _ = await gw.post_form(inbound_form("confirmed", user="+15551110001"))
        assert status == 200 and len(shim.calls) == 1

        shim.local_fsyncs = 0  # the fsync does not come in time: the provider must not hear 200
        form = inbound_form("not yet on disk", user="+15551110002")
        status, _, _ = await gw.post_form(form)
        assert status == 503
        async with gw.http.post(
            f"{gw.url}/sms.gateway/messages",
            json={"tenantPhoneNumber": V1, "userPhoneNumber": "+15551110003", "smsMessage": "from the API"},
        ) as answer:
            assert answer.status == 503  # a REST send is not 202 either

        shim.local_fsyncs = 1
        status, _, _ = await gw.post_form(form)  # the provider's retry: a duplicate of what is stored, now on disk
        assert status == 200
        await gw.settle()
        bodies = Counter((m.to, m.body) for m in gw.twilio.messages)
        assert bodies[("+15551110002", reply_for("not yet on disk"))] == 1
        assert bodies[("+15551110001", reply_for("confirmed"))] == 1
