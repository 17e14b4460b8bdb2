"""Background work: the inbound queue consumer and the session-timeout sweeper.

Turns of one session run in order, one at a time; different sessions run concurrently (bounded).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

import structlog

from sms_gateway.config.model import normalise_number
from sms_gateway.conversation import Conversations
from sms_gateway.engines.base import EngineError
from sms_gateway.jobs import (
    JobKind,
    LeaseHeartbeat,
    Outcome,
    RetryPolicy,
    lease_loop,
    sweep_forever,
    wait_without_cancelling,
)
from sms_gateway.metrics import Metrics
from sms_gateway.model import InboundMessage
from sms_gateway.owners import this_process
from sms_gateway.store.base import InboundRecord, Job, Store, StoreUnavailable

log = structlog.get_logger("sms_gateway.worker")

SessionTask = Callable[[], Awaitable[None]]
TURN = "turn"
NEVER = 1e18


class KeyedRunner:
    """Runs jobs sequentially per key and concurrently across keys, at most `concurrency` at once."""

    def __init__(self, concurrency: int) -> None:
        self._queues: dict[Hashable, deque[SessionTask]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)

    def submit(self, key: Hashable, job: SessionTask) -> None:
        queue = self._queues.get(key)
        if queue is not None:
            queue.append(job)
            return
        self._queues[key] = deque([job])
        task = asyncio.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def busy_keys(self) -> int:
        return len(self._queues)

    async def _drain(self, key: Hashable) -> None:
        queue = self._queues[key]
        while queue:
            job = queue[0]
            async with self._slots:
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("job_crashed", key=str(hash(key)))
            queue.popleft()
        del self._queues[key]

    async def join(self, grace: float | None = None) -> bool:
        return await wait_without_cancelling(self._tasks, grace)

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class InboundWorker:
    """Leases stored inbound messages and runs their turns; completes each when its turn is done."""

    def __init__(
        self,
        store: Store,
        conversations: Conversations,
        metrics: Metrics,
        *,
        concurrency: int = 64,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        owner: str | None = None,
    ) -> None:
        """`owner`: the id this process leases under (`sms_gateway.owners`); by default one of its own."""
        self.store = store
        self.conversations = conversations
        self.metrics = metrics
        self.owner = owner or this_process().owner_id
        self.runner = KeyedRunner(concurrency)
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._in_flight: set[str] = set()
        # Conversations with a turn leased here and not finished -> how many (a lease lost and taken again
        # can make two).
        self._conversations_in_flight: dict[tuple[str, str], int] = {}
        self.heartbeat = LeaseHeartbeat(
            "inbound",
            lambda: self._in_flight,
            lambda keys, until: self.store.extend_inbound_leases(self.owner, keys, until),
            lease_seconds,
        )

    def notify(self, accepted: InboundMessage | None = None) -> None:
        """Work may be waiting: lease now. Not for a message just accepted whose conversation has a turn running
        here: that turn's message is its conversation's head until it ends, and its end wakes the leasing, so
        waking now would only cost a lease that finds nothing (once per message a busy user sends)."""
        if (
            accepted is None
            or session_key(accepted.tenant_number, accepted.user_number) not in self._conversations_in_flight
        ):
            self._wakeup.set()

    async def run(self) -> None:
        await lease_loop("inbound_worker", self._lease, self._wakeup, self.poll_interval, self.heartbeat)

    async def _lease(self) -> bool:
        await self.heartbeat.hand_back_cut_short()
        room = self.concurrency * 4 - len(self._in_flight)
        if room <= 0:
            return False  # a turn's end wakes the leasing
        records = await self.store.lease_inbound(self.owner, room, self.lease_seconds, time.time())
        fresh = [r for r in records if r.key not in self._in_flight]
        for record in fresh:
            self._in_flight.add(record.key)
            self.metrics.inbound_in_flight.inc()
            conversation = session_key(record.message.tenant_number, record.message.user_number)
            self._conversations_in_flight[conversation] = self._conversations_in_flight.get(conversation, 0) + 1
            self.runner.submit(conversation, self._job(record, conversation))
        return len(records) == room

    def _job(self, record: InboundRecord, conversation: tuple[str, str]) -> SessionTask:
        async def job() -> None:
            try:
                tokens = structlog.contextvars.bind_contextvars(message_id=record.message.message_id)
                try:
                    failure = await self.conversations.handle_inbound(record.message, inbound_key=record.key)
                finally:  # bound_contextvars() does the same at twice the cost: this runs on every turn
                    structlog.contextvars.reset_contextvars(**tokens)
                if failure is not None:  # (an answered message was marked processed by its turn)
                    await self._dead_letter_turn(record, failure)
                    await self.store.complete_inbound(record.key)
            except StoreUnavailable as exc:
                # Handed back once the store answers again, and leased anew: the turn runs again.
                log.error("store_unavailable", where="turn", error=str(exc), message_id=record.message.message_id)
                self.heartbeat.cut_short(record.key)
            finally:
                self._in_flight.discard(record.key)
                left = self._conversations_in_flight.pop(conversation, 1) - 1
                if left > 0:
                    self._conversations_in_flight[conversation] = left
                self.metrics.inbound_in_flight.dec()
                self._wakeup.set()  # the conversation's next message can be leased now

        return job

    async def _dead_letter_turn(self, record: InboundRecord, failure: EngineError) -> None:
        """Keep a message the engine could not answer where an operator can list and replay it, with the
        engine's error (its HTTP status and message, or why it could not be reached)."""
        # Queued to run never, then dead-lettered: no worker can pick it up in between.
        # begun_attempt=0: a replay cut short by a crash runs again at once, as any turn (its replies keep their
        # ids, so none is sent twice).
        job = Job(f"turn:{record.key}", TURN, record.message.to_json(), run_at=NEVER, begun_attempt=0)
        await self.store.enqueue_job(job)
        await self.store.dead_letter_job(job.job_id, str(failure), time.time())
        self.metrics.dead_letters.labels(TURN).inc()

    def turn_job_kind(self) -> JobKind:
        """Replaying a dead-lettered turn runs it again; if the engine fails again it goes back to the dead letters."""

        async def replay(job: Job) -> Outcome:
            message = InboundMessage.from_json(job.payload)
            answered: asyncio.Future[EngineError | None] = asyncio.get_running_loop().create_future()

            async def turn() -> None:
                try:
                    with structlog.contextvars.bound_contextvars(message_id=message.message_id):
                        answered.set_result(await self.conversations.handle_inbound(message))
                except BaseException as exc:
                    answered.set_exception(exc)
                    raise

            # Through the session's queue, so the replayed turn never overlaps a live one.
            self.runner.submit(session_key(message.tenant_number, message.user_number), turn)
            failure = await answered
            return Outcome.done() if failure is None else Outcome.failed(str(failure))

        return JobKind(replay, RetryPolicy(max_attempts=1))

    async def drain(self, grace: float | None = None) -> bool:
        return await self.runner.join(grace)

    async def stop(self) -> None:
        held = list(self._in_flight)
        await self.runner.cancel()
        await self.heartbeat.hand_back(held)


class SessionSweeper:
    """Ends sessions whose inactivity timeout has passed (with the smsResponseTimeout turn when asked)."""

    def __init__(self, store: Store, conversations: Conversations, runner: KeyedRunner, interval: float = 1.0) -> None:
        self.store = store
        self.conversations = conversations
        self.runner = runner
        self.interval = interval
        self._queued: set[str] = set()  # session ids whose expiry job has not run yet

    async def run(self) -> None:
        await sweep_forever("session_sweeper", self.sweep, self.interval)

    async def sweep(self) -> int:
        expired = await self.store.expired_sessions(time.time(), limit=500)
        for session in expired:
            if session.session_id in self._queued:
                continue
            self._queued.add(session.session_id)
            tenant, user, sid = session.tenant_number, session.user_number, session.session_id

            async def job(tenant: str = tenant, user: str = user, sid: str = sid) -> None:
                try:
                    await self.conversations.expire_session(tenant, user, sid)
                finally:
                    self._queued.discard(sid)

            self.runner.submit(session_key(tenant, user), job)
        return len(expired)


def session_key(tenant_number: str, user_number: str) -> tuple[str, str]:
    """The serialisation key of a session's turns; tenant numbers compare by digits, as in the config."""
    return normalise_number(tenant_number), user_number
