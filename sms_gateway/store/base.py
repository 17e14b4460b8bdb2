"""The store interface: every piece of state the gateway keeps lives behind it.

One interface, several back ends chosen by `STORE_URL` alone (`memory://`, `sqlite:///file.db`).
Every abstract method is atomic on its own; callers never check-then-mark. The combined operations of a turn
and a send (`begin_turn`, `end_turn`, `complete_send`) are atomic where a back end overrides them; `begin_send`
always is (it checks the send's lease before writing anything).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sms_gateway.config.model import normalise_number
from sms_gateway.model import JSON, InboundMessage, Session
from sms_gateway.ratelimit import Pace, SenderRate


class LeaseLost(Exception):
    """The job is no longer leased by the caller in the caller's attempt: its owner was taken for dead (a
    process that stalled past its heartbeat) and the job freed, perhaps taken over by another process. The
    caller leaves the job alone: its attempt, and the job, are someone else's now."""


class StoreUnavailable(Exception):
    """The store cannot be reached or written (locked, disk full, server down): answer 503."""


@dataclass(frozen=True, slots=True)
class InboundRecord:
    key: str
    message: InboundMessage
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    message_id: str
    tenant_number: str
    user_number: str
    session_id: str | None
    provider_message_id: str | None
    pipe: JSON | None = None  # for a send through a Voice Gateway pipe: what its failure event needs
    first_attempt_at: float | None = None  # when the gateway first asked the provider to send it


@dataclass(frozen=True, slots=True)
class Pipe:
    """A Voice Gateway SMS pipe: while it lives, the user's inbound messages go to `callback_url`."""

    pipe_id: str
    tenant_number: str
    user_number: str
    callback_url: str
    created_at: float
    expires_at: float

    def to_json(self) -> JSON:
        return {
            "pipeId": self.pipe_id,
            "tenantNumber": self.tenant_number,
            "userNumber": self.user_number,
            "callbackURL": self.callback_url,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
        }

    @classmethod
    def from_json(cls, data: JSON) -> Pipe:
        return cls(
            pipe_id=data["pipeId"],
            tenant_number=data["tenantNumber"],
            user_number=data["userNumber"],
            callback_url=data["callbackURL"],
            created_at=float(data["createdAt"]),
            expires_at=float(data["expiresAt"]),
        )


@dataclass(frozen=True, slots=True)
class TurnStart:
    """What a conversation turn reads before it runs: the pair's live pipe or, when it has none, its session and
    the smsErrors that waited for its next turn (taken out of the store: they are this turn's now)."""

    pipe: Pipe | None
    session: Session | None
    errors: list[JSON]


@dataclass(frozen=True, slots=True)
class Job:
    """Durable background work (a send, a relay to Voice Gateway), retried with backoff, then dead-lettered.

    Jobs with the same `order_key` run one at a time in the order they were enqueued: a later job waits
    while an earlier one is queued or leased (not while it is dead-lettered).

    `begun_attempt`: for a job whose attempts say when they begin to act outside the gateway (a send: its
    request is about to leave, `Store.begin_job`), the last attempt that did, 0 while none has; None for a job
    whose attempts do not say (any of them may have). When the owner of a leased job is found dead, an attempt
    that had not begun is free to run again at once, one that had (or may have) only once it has settled
    (`Store.release_owners`).

    `owner`: in a job `Store.lease_jobs` returned, the owner that leased it; with `attempts`, the lease that
    `Store.begin_job` checks is still the job's.
    """

    job_id: str
    kind: str
    payload: JSON
    order_key: str | None = None
    run_at: float = 0.0
    attempts: int = 0
    last_error: str | None = None
    begun_attempt: int | None = None
    owner: str | None = None

    def begun(self) -> bool:
        """Whether the current attempt has (or may have) begun to act outside the gateway."""
        return self.begun_attempt is None or self.begun_attempt >= self.attempts


@dataclass(frozen=True, slots=True)
class Owner:
    """A gateway process as the holder of leases, registered in the store with a heartbeat. Where it runs is
    kept too, so that a process on the same machine can tell at once that it is gone (`sms_gateway.owners`)."""

    owner_id: str
    machine: str  # processes with the same value see each other's pids (host, boot and pid namespace)
    pid: int
    started: str = ""  # when the kernel started the process ("" where unknown): a reused pid has another

    def to_json(self) -> JSON:
        return {"id": self.owner_id, "machine": self.machine, "pid": self.pid, "started": self.started}

    @classmethod
    def from_json(cls, data: JSON) -> Owner:
        return cls(str(data["id"]), str(data["machine"]), int(data["pid"]), str(data.get("started") or ""))


@dataclass(frozen=True, slots=True)
class OwnerState:
    owner: Owner
    alive: bool  # its heartbeat has not run out


def inbound_key(message: InboundMessage) -> str:
    return f"{message.provider}:{message.message_id}"


def conversation_key(message: InboundMessage) -> str:
    """Messages of one conversation are processed one at a time, in order, by whichever process leases them."""
    return f"{normalise_number(message.tenant_number)}:{message.user_number}"


# How long finished work is remembered: a processed message's claim (so a provider's late retry is still a
# duplicate), a finished job, an outbound record (for late status callbacks) and a status claim.
RETENTION_SECONDS = 7 * 24 * 3600


class Store(abc.ABC):
    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve requests."""

    async def wait_durable(self) -> None:  # noqa: B027 - optional hook
        """Return once the writes answered so far would survive a crash of the store's server; called before an
        answer that promises them (a webhook's 200, a REST call's 2xx). StoreUnavailable when that cannot be
        confirmed in time. A store whose writes are durable when they return has nothing to wait for."""

    # Inbound queue with dedupe ---------------------------------------------------------------
    @abc.abstractmethod
    async def accept_inbound(self, message: InboundMessage) -> bool:
        """Durably claim the provider's message id and queue the message; False if already claimed."""

    @abc.abstractmethod
    async def lease_inbound(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[InboundRecord]:
        """Take up to `limit` queued messages (oldest first) whose lease is free or expired.

        Only the oldest unfinished message of each conversation (`conversation_key`) can be leased, so two
        processes never run turns of one session at once or out of order.
        """

    @abc.abstractmethod
    async def extend_inbound_leases(self, owner: str, keys: Sequence[str], until: float) -> None:
        """Move the lease end of messages `owner` still holds: a heartbeat, or `until=now` to hand them back."""

    @abc.abstractmethod
    async def complete_inbound(self, key: str) -> None:
        """The message was processed; it stays claimed (a replay is still a duplicate)."""

    @abc.abstractmethod
    async def pending_inbound_count(self) -> int: ...

    # Sessions --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def load_session(self, tenant_number: str, user_number: str) -> Session | None: ...

    @abc.abstractmethod
    async def save_session(self, session: Session) -> None: ...

    @abc.abstractmethod
    async def insert_session(self, session: Session) -> Session | None:
        """Store a new session unless the pair has one already; returns that existing session (or None)."""

    @abc.abstractmethod
    async def delete_session(self, tenant_number: str, user_number: str, session_id: str) -> bool:
        """Delete the pair's session if it is still the one with `session_id`."""

    @abc.abstractmethod
    async def find_session(self, session_id: str) -> Session | None: ...

    @abc.abstractmethod
    async def expired_sessions(self, now: float, limit: int) -> list[Session]: ...

    # smsError waiting for the session's next turn --------------------------------------------
    @abc.abstractmethod
    async def push_sms_error(self, tenant_number: str, user_number: str, error: JSON) -> None: ...

    @abc.abstractmethod
    async def pop_sms_errors(self, tenant_number: str, user_number: str) -> list[JSON]: ...

    # Outbound messages and their delivery statuses -------------------------------------------
    @abc.abstractmethod
    async def record_outbound(self, record: OutboundRecord) -> None: ...

    @abc.abstractmethod
    async def find_outbound(self, message_id: str) -> OutboundRecord | None: ...

    @abc.abstractmethod
    async def claim_status(self, provider_message_id: str, status: str) -> bool:
        """True the first time this (message, status) pair is seen."""

    # Claims that last until a time ------------------------------------------------------------
    @abc.abstractmethod
    async def claim_once(self, key: str, until: float) -> bool:
        """True the first time `key` is claimed; False while an earlier claim of it lasts (until its `until`, a
        time.time() value). Used to refuse a webhook whose signature nonce was already used.

        Judged by the clock of whoever keeps the claims (this process; for Redis, the Redis server). A claim
        whose `until` has already passed lasts no time: True unless a live claim holds the key, and it holds
        nothing afterwards.
        """

    # Voice Gateway pipes ------------------------------------------------------------------------
    @abc.abstractmethod
    async def save_pipe(self, pipe: Pipe) -> None:
        """Store the pipe; it replaces any other pipe of the same (tenant, user)."""

    @abc.abstractmethod
    async def get_pipe(self, pipe_id: str) -> Pipe | None: ...

    @abc.abstractmethod
    async def pipe_for(self, tenant_number: str, user_number: str, now: float) -> Pipe | None:
        """The pair's pipe if it has not expired."""

    @abc.abstractmethod
    async def delete_pipe(self, pipe_id: str) -> bool: ...

    # Jobs, retries, dead letters ----------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue_job(self, job: Job) -> bool:
        """Queue the job; False (and nothing changed) if a job with this id exists: ids are idempotency keys."""

    @abc.abstractmethod
    async def lease_jobs(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[Job]:
        """Jobs due at `now`, oldest first, at most one per order key and none behind an unfinished earlier one."""

    @abc.abstractmethod
    async def extend_job_leases(self, owner: str, job_ids: Sequence[str], until: float) -> None:
        """Move the lease end of jobs `owner` still holds: a heartbeat, or `until=now` to hand them back."""

    @abc.abstractmethod
    async def complete_job(self, job_id: str) -> None: ...

    @abc.abstractmethod
    async def pending_job_count(self) -> int:
        """Jobs queued or leased (not done, not dead)."""

    @abc.abstractmethod
    async def retry_job(self, job_id: str, run_at: float, error: str) -> None:
        """Release the lease and run the job again at `run_at`."""

    @abc.abstractmethod
    async def defer_job(self, job_id: str, run_at: float) -> None:
        """Release the lease and run the job again at `run_at` as though this attempt had not been made: its
        attempts and last error stay what they were before it (a send the provider throttled was not made), and
        it has not begun (`begun_attempt` at most its attempts)."""

    @abc.abstractmethod
    async def begin_job(self, job: Job) -> None:
        """The leased job's current attempt begins to act outside the gateway (`Job.begun_attempt` becomes its
        attempts): if its owner is found dead from now on, the job waits for the attempt to settle. Nothing is
        marked for a job whose attempts do not say (`begun_attempt` None).

        `job` is the job as `lease_jobs` returned it: raises LeaseLost, changing nothing, unless it is still
        leased by its `owner` in the same attempt (the same check in the same atomic step as the mark, so a
        process taken for dead whose job was freed cannot begin an attempt that is now another's)."""

    @abc.abstractmethod
    async def dead_letter_job(self, job_id: str, error: str, now: float) -> None:
        """Give up on the job: kept with `error` (the cause an operator reads) and `now` as its `run_at`."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int) -> list[Job]:
        """The oldest `limit` dead letters, each with its cause (`last_error`) and when it was given up on
        (`run_at`)."""

    @abc.abstractmethod
    async def replay_dead_letter(self, job_id: str, now: float) -> bool:
        """Queue a dead-lettered job again with its attempts (and a `begun_attempt`) reset; False if there is no
        such dead letter."""

    # Lease owners: each process's heartbeat --------------------------------------------------------
    # Leases of a live owner last until they run out (renewed while the work runs); those of an owner whose
    # heartbeat ended are freed at once by `release_owners`, called by whichever process sees it first.
    @abc.abstractmethod
    async def beat_owner(self, owner: Owner, ttl_seconds: float, now: float) -> bool:
        """Record that `owner` is alive for `ttl_seconds` more (registering it the first time). False when it was
        not alive until now: new, or its heartbeat had run out (and its leases may have been taken since).

        Judged by the clock of whoever keeps the heartbeats (the callers'; for Redis, the Redis server's)."""

    @abc.abstractmethod
    async def owners(self, now: float) -> list[OwnerState]:
        """Every registered owner, and whether its heartbeat still runs."""

    @abc.abstractmethod
    async def end_owner(self, owner_id: str) -> None:
        """The owner's heartbeat ends now: it is stopping, or it was seen gone."""

    @abc.abstractmethod
    async def release_owners(self, owner_ids: Sequence[str], now: float, job_settle_seconds: float = 0.0) -> list[str]:
        """Of `owner_ids`, those whose heartbeat has ended (checked again, in the same atomic step: one that beat
        since keeps its leases) are forgotten, and the leases they held end: their messages' at once, and their
        jobs' at once too unless the job's current attempt has begun (`Job.begun`). Those end
        `job_settle_seconds` from `now` (or when they would have anyway, if sooner), as an attempt cut short may
        still take effect elsewhere for a while (a provider still creating a message). Returns their ids."""

    # A turn's and a send's reads and writes, combined. The defaults run the single operations one after another,
    # in an order that leaves a crash between them safe (the work runs again and finds its own traces); a back
    # end overrides them to run as one atomic operation in one round trip (SQLite and Redis all of them).
    # `begin_send` has no default: its lease check must come first, in the same atomic step as its writes.
    async def begin_turn(self, tenant_number: str, user_number: str, now: float) -> TurnStart:
        """`pipe_for`; without a pipe, `load_session` and `pop_sms_errors` too."""
        pipe = await self.pipe_for(tenant_number, user_number, now)
        if pipe is not None:
            return TurnStart(pipe, None, [])
        session = await self.load_session(tenant_number, user_number)
        return TurnStart(None, session, await self.pop_sms_errors(tenant_number, user_number))

    async def end_turn(
        self, session: Session, *, ended: bool, inbound_key: str | None, jobs: Sequence[Job] = ()
    ) -> int:
        """Queue the turn's `jobs` (its sends, `enqueue_job` each), save the session, or delete it (if it is
        still this one) when the turn `ended` it, and with `inbound_key` mark the message whose turn it was
        processed (`complete_inbound`), in this order: a crash in between runs the turn again, whose replies
        keep their ids, rather than losing any of it. Returns how many of the jobs were new."""
        queued = 0
        for job in jobs:
            queued += await self.enqueue_job(job)
        if ended:
            await self.delete_session(session.tenant_number, session.user_number, session.session_id)
        else:
            await self.save_session(session)
        if inbound_key is not None:
            await self.complete_inbound(inbound_key)
        return queued

    @abc.abstractmethod
    async def begin_send(
        self,
        slot_key: str,
        cap: SenderRate | None,
        now: float,
        record: OutboundRecord,
        max_wait: float = math.inf,
        job: Job | None = None,
    ) -> float:
        """`reserve_send_slot`, `record_outbound` of the message about to be sent (without a provider id), and
        `begin_job` of its leased `job` if the request leaves at once (no wait), in one atomic step. A send that
        waits for its slot calls `begin_job` when the wait is over: killed while it waits, its job is free at
        once. Raises LeaseLost, changing nothing (no slot, no record), unless `job` is still leased as it was
        (`begin_job`)."""

    async def complete_send(self, job_id: str, record: OutboundRecord) -> None:
        """`record_outbound` (the provider's id of a message just sent), then `complete_job` of its send job."""
        await self.record_outbound(record)
        await self.complete_job(job_id)

    # Retention ----------------------------------------------------------------------------------
    async def prune_finished(self, before: float, limit: int) -> int:
        """Forget up to `limit` rows of each kind of finished work older than `before`: processed messages
        (their claims with them), done jobs (never dead letters), outbound records, status claims, pipes
        that expired, and `claim_once` claims whose `until` has passed (by the clock, whatever `before`: an
        expired claim refuses nothing, and a live one forgotten early would let its nonce be replayed).
        Returns how many went; a store whose keys expire by themselves (Redis) has nothing to do.

        Times are the ones the rows carry (received, first attempt, scheduled), so a row is forgotten
        roughly, not exactly, `before`: retention is a window of days, not a deadline.
        """
        return 0

    # Sending pace -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def reserve_send_slot(
        self, key: str, cap: SenderRate | None, now: float, max_wait: float = math.inf
    ) -> float:
        """Reserve the sender's next send slot (`ratelimit.reserve`: the slower of the configured `cap` and the
        sender's pace), shared by every process.

        Returns how many seconds the caller must wait before sending; every call gets its own slot, so bursts
        queue instead of being rejected, but a wait longer than `max_wait` reserves nothing. Without a cap and a
        live pace there is nothing to wait for, and nothing is written.
        """

    @abc.abstractmethod
    async def slow_sender(
        self, key: str, now: float, paced_at: float, retry_after: float | None, start_rate: float
    ) -> Pace:
        """The provider throttled a send of this sender whose slot was taken at `paced_at`: store (and return)
        the sender's pace `ratelimit.slowed`, atomically against every process's calls."""
