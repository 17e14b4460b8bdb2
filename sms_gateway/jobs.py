"""The durable job runner: sends and relays are jobs in the store, retried with backoff, then dead-lettered.

A job is leased (so a crashed process's jobs are picked up again when the process is seen gone, see
`sms_gateway.owners`: at once if their attempt had not begun to act elsewhere, `Job.begun_attempt`, else once it
has settled; at the latest when the lease runs out), run by the handler of its kind, and then completed,
rescheduled or dead-lettered according to the handler's outcome. A handler whose lease turns out to be lost
(`LeaseLost`: this process was taken for dead, stalled rather than gone, and the job freed for another) leaves
the job alone: its attempt and the job are another process's now.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import structlog

from sms_gateway.metrics import Metrics
from sms_gateway.owners import this_process
from sms_gateway.store.base import Job, LeaseLost, OutboundRecord, Store, StoreUnavailable

log = structlog.get_logger("sms_gateway.jobs")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler says about one attempt."""

    state: str  # "done" | "retry" | "defer" | "failed"
    error: str | None = None
    retry_after: float | None = None
    sent: OutboundRecord | None = None  # a send's record, written with the job's completion in one go

    @classmethod
    def done(cls, sent: OutboundRecord | None = None) -> Outcome:
        return cls("done", sent=sent)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> Outcome:
        return cls("retry", error, retry_after)

    @classmethod
    def defer(cls, reason: str, run_in: float) -> Outcome:
        """Run the job again in `run_in` seconds, as though this attempt had not been made: nothing was done (a
        send waiting for its sender's pace), so it counts toward no retry limit."""
        return cls("defer", reason, run_in)

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls("failed", error)


# Work cut short by the store runs again this long after the store answers again, not at once: a store that
# fails some writes and not others must not make the engine or a provider repeat the same work in a tight loop.
CUT_SHORT_PAUSE_SECONDS = 2.0

Handler = Callable[[Job], Awaitable[Outcome]]
DeadHandler = Callable[[Job, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 60.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return float(min(max(retry_after, 0.0), self.backoff_cap))
        exponential: float = min(self.backoff_cap, self.backoff_base * 2.0 ** max(attempts - 1, 0))
        return exponential * (0.5 + random.random() / 2)  # jitter, so retries of a burst spread out


@dataclass(frozen=True, slots=True)
class JobKind:
    handler: Handler
    policy: RetryPolicy
    on_dead: DeadHandler | None = None


async def wait_without_cancelling(tasks: Collection[asyncio.Task[None]], grace: float | None) -> bool:
    """Wait until `tasks` (a live set that may grow) is empty, for at most `grace` seconds; False if time ran out.

    Unlike asyncio.wait_for, running out of time cancels nothing: the caller decides what happens to the work.
    """
    loop = asyncio.get_running_loop()
    deadline = None if grace is None else loop.time() + grace
    while tasks:
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return False
        await asyncio.wait(list(tasks), timeout=remaining)
    return True


async def lease_loop(
    name: str,
    lease: Callable[[], Awaitable[bool]],
    wakeup: asyncio.Event,
    poll_interval: float,
    heartbeat: LeaseHeartbeat,
) -> None:
    """Lease and start work until cancelled: again at once while a lease may have left work behind (`lease`
    returns True when it took all it had room for), else when woken or polled (another process may have queued
    work), keeping the leases of work in flight alive meanwhile."""
    beating = asyncio.create_task(heartbeat.run())
    try:
        while True:
            wakeup.clear()  # set from here on, it is for work this lease may not see
            try:
                more = await lease()
            except StoreUnavailable as exc:
                log.error("store_unavailable", where=name, error=str(exc))
                more = False
            if not more:
                try:
                    async with asyncio.timeout(poll_interval):
                        await wakeup.wait()
                except TimeoutError:
                    pass
    finally:
        beating.cancel()


async def sweep_forever(where: str, sweep: Callable[[], Awaitable[object]], interval: float) -> None:
    """Run `sweep` every `interval` seconds until cancelled; an unavailable store is logged and tried again."""
    while True:
        try:
            await sweep()
        except StoreUnavailable as exc:
            log.error("store_unavailable", where=where, error=str(exc))
        await asyncio.sleep(interval)


class LeaseHeartbeat:
    """Keeps the leases of work in flight alive (so a short lease still covers a long turn) and hands them
    back on shutdown (so another process takes the work at once instead of after the lease), and those of work
    cut short by the store (so it runs again as soon as the store answers, not when its lease runs out)."""

    def __init__(
        self,
        name: str,
        held: Callable[[], Collection[str]],
        extend: Callable[[list[str], float], Awaitable[None]],
        lease_seconds: float,
    ) -> None:
        self.name = name
        self.held = held
        self.extend = extend
        self.lease_seconds = lease_seconds
        self._cut_short: list[str] = []

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            ids = list(self.held())
            if ids:
                try:
                    await self.extend(ids, time.time() + self.lease_seconds)
                except StoreUnavailable as exc:
                    log.error("store_unavailable", where=f"{self.name}_lease_heartbeat", error=str(exc))

    def cut_short(self, work_id: str) -> None:
        """Work that failed on an unavailable store (its changes, if any, are not there): to be handed back."""
        self._cut_short.append(work_id)

    async def hand_back_cut_short(self) -> None:
        """Hand back the work cut short, if any (no store call otherwise), free `CUT_SHORT_PAUSE_SECONDS` from
        now: raises StoreUnavailable, keeping it to hand back later, while the store does not answer. Work
        finished meanwhile (a write that went through although its answer was lost) is not touched: the store
        only moves leases of unfinished work."""
        if self._cut_short:
            ids, self._cut_short = self._cut_short, []
            try:
                await self.extend(ids, time.time() + CUT_SHORT_PAUSE_SECONDS)
            except StoreUnavailable:
                self._cut_short = ids + self._cut_short
                raise

    async def hand_back(self, ids: list[str]) -> None:
        """Call with the ids held before the work was cancelled (cancelling forgets them)."""
        if ids:
            try:
                await self.extend(ids, time.time())
                log.info("leases_handed_back", queue=self.name, count=len(ids))
            except StoreUnavailable as exc:
                log.error("store_unavailable", where=f"{self.name}_hand_back", error=str(exc))


class JobWorker:
    def __init__(
        self,
        store: Store,
        kinds: Mapping[str, JobKind],
        metrics: Metrics,
        *,
        concurrency: int = 64,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        """`owner`: the id this process leases under (`sms_gateway.owners`); by default one of its own."""
        self.store = store
        self.kinds = dict(kinds)
        self.metrics = metrics
        self.owner = owner or this_process().owner_id
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()
        self._held: dict[asyncio.Task[None], str] = {}
        self._wakeup = asyncio.Event()
        self.heartbeat = LeaseHeartbeat(
            "jobs",
            lambda: self._held.values(),
            lambda ids, until: self.store.extend_job_leases(self.owner, ids, until),
            lease_seconds,
        )

    def notify(self) -> None:
        self._wakeup.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def run(self) -> None:
        await lease_loop("job_worker", self._lease_and_start, self._wakeup, self.poll_interval, self.heartbeat)

    async def _lease_and_start(self) -> bool:
        await self.heartbeat.hand_back_cut_short()
        room = self._concurrency - len(self._running)
        if room <= 0:
            return False  # a job's end wakes the leasing
        jobs = await self.store.lease_jobs(self.owner, room, self.lease_seconds, self.clock())
        for job in jobs:
            task = asyncio.create_task(self._run_job(job))
            self._running.add(task)
            self._held[task] = job.job_id
            task.add_done_callback(self._finished)
        return len(jobs) == room

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._held.pop(task, None)
        self._wakeup.set()  # a finished job may unblock the next one of its order key

    async def _run_job(self, job: Job) -> None:
        kind = self.kinds.get(job.kind)
        try:
            async with self._slots:
                if kind is None:
                    await self.store.dead_letter_job(job.job_id, f"no handler for job kind {job.kind!r}", self.clock())
                    return
                try:
                    outcome = await kind.handler(job)
                except LeaseLost:
                    log.warning("job_fenced", job_id=job.job_id, kind=job.kind, attempt=job.attempts)
                    self.metrics.jobs.labels(job.kind, "fenced").inc()
                    return
                except (asyncio.CancelledError, StoreUnavailable):
                    raise
                except Exception as exc:
                    log.exception("job_crashed", job_id=job.job_id, kind=job.kind)
                    outcome = Outcome.retry(f"crashed: {type(exc).__name__}")
                await self._settle(job, kind, outcome)
        except StoreUnavailable as exc:
            # Handed back once the store answers again, and leased anew.
            log.error("store_unavailable", where="job", job_id=job.job_id, error=str(exc))
            self.heartbeat.cut_short(job.job_id)

    async def _settle(self, job: Job, kind: JobKind, outcome: Outcome) -> None:
        self.metrics.jobs.labels(job.kind, outcome.state).inc()
        if outcome.state == "done":
            if outcome.sent is not None:
                await self.store.complete_send(job.job_id, outcome.sent)
            else:
                await self.store.complete_job(job.job_id)
            return
        if outcome.state == "defer":
            delay = outcome.retry_after or 0.0
            log.debug("job_deferred", job_id=job.job_id, kind=job.kind, delay_s=round(delay, 2), reason=outcome.error)
            await self.store.defer_job(job.job_id, self.clock() + delay)
            return
        error = outcome.error or "failed"
        if outcome.state == "retry" and job.attempts < kind.policy.max_attempts:
            delay = kind.policy.delay(job.attempts, outcome.retry_after)
            log.warning(
                "job_retry",
                job_id=job.job_id,
                kind=job.kind,
                attempt=job.attempts,
                delay_s=round(delay, 2),
                error=error,
            )
            await self.store.retry_job(job.job_id, self.clock() + delay, error)
            return
        log.error("job_dead_lettered", job_id=job.job_id, kind=job.kind, attempts=job.attempts, error=error)
        self.metrics.dead_letters.labels(job.kind).inc()
        await self.store.dead_letter_job(job.job_id, error, self.clock())
        if kind.on_dead is not None:
            await kind.on_dead(job, error)

    async def drain(self, grace: float | None = None) -> bool:
        return await wait_without_cancelling(self._running, grace)

    async def stop(self) -> None:
        held = list(self._held.values())
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*list(self._running), return_exceptions=True)
        await self.heartbeat.hand_back(held)
