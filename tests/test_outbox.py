"""The outbox and the job runner over a real SQLite file and a fake provider on a real port."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from sms_gateway.config.model import normalise_number
from sms_gateway.jobs import JobWorker
from sms_gateway.metrics import Metrics
from sms_gateway.model import OutboundMessage
from sms_gateway.outbox import SEND, Outbox, send_job
from sms_gateway.providers.twilio import TwilioSender
from sms_gateway.store.base import Owner, Store
from sms_gateway.store.sqlite import SQLiteStore
from tests.fakes.twilio import FakeTwilio, serve_fake_twilio
from tests.waiting import until

TENANT = "+15005550001"
USER = "+15005550006"


class _StallsBeforeItsSend(SQLiteStore):
    """A process's store that stalls (a GC pause, a suspended VM) just before its send begins, until resumed."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.stalled = asyncio.Event()
        self.resume = asyncio.Event()

    async def begin_send(self, *args: Any, **kwargs: Any) -> float:
        self.stalled.set()
        await self.resume.wait()
        return await super().begin_send(*args, **kwargs)


def _worker(store: Store, owner: str, fake: FakeTwilio, http: aiohttp.ClientSession, metrics: Metrics) -> JobWorker:
    sender = TwilioSender(fake.provider_config(), http)
    outbox = Outbox(store, {normalise_number(TENANT): sender}, metrics, lambda: None)
    return JobWorker(store, {SEND: outbox.job_kind()}, metrics, owner=owner, poll_interval=0.05)


def _fenced(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("smsgw_jobs_total", {"kind": SEND, "outcome": "fenced"}) or 0.0


async def test_a_send_taken_over_while_its_owner_stalled_goes_once_from_the_new_owner(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Process a leases a reply and stalls before its request leaves, past its heartbeat: b sees it gone and
    takes the reply over (its attempt had not begun) and sends it. When a resumes, its attempt is refused: it
    sends nothing and leaves the job, done by b, as it is."""
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store_a, store_b = _StallsBeforeItsSend(url), SQLiteStore(url)
    await store_a.open()
    await store_b.open()
    running: list[asyncio.Task[None]] = []
    workers: list[JobWorker] = []
    metrics_a = Metrics()
    try:
        async with serve_fake_twilio() as fake:
            await store_a.beat_owner(Owner("a", "host-a", 1), 6.0, time.time())
            message = OutboundMessage("mg-stalled", TENANT, USER, "Your table is booked", (), "sess-1")
            assert await store_a.enqueue_job(send_job(message, None))
            workers.append(_worker(store_a, "a", fake, http, metrics_a))
            running.append(asyncio.create_task(workers[-1].run()))
            await asyncio.wait_for(store_a.stalled.wait(), 10.0)

            await store_b.end_owner("a")  # a's heartbeat ran out
            assert await store_b.release_owners(["a"], time.time()) == ["a"]
            workers.append(_worker(store_b, "b", fake, http, Metrics()))
            running.append(asyncio.create_task(workers[-1].run()))
            await until(lambda: len(fake.messages) == 1, 10.0, "b's send")

            with structlog.testing.capture_logs() as logs:
                store_a.resume.set()
                await until(lambda: _fenced(metrics_a) == 1, 10.0, "a's attempt refused")
            await asyncio.sleep(0.5)  # room for a (wrong) second request
            assert [m.body for m in fake.messages] == ["Your table is booked"], "sent once, by b"
            assert [e["event"] for e in logs if e["event"] == "job_fenced"] == ["job_fenced"]
            assert USER not in repr(logs)
            sent = await store_b.find_outbound("mg-stalled")
            assert sent is not None and sent.provider_message_id == fake.messages[0].sid, "b's record stands"
            assert await store_b.pending_job_count() == 0, "done by b, and a left it done"
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for worker in workers:
            await worker.stop()
        await store_a.close()
        await store_b.close()
