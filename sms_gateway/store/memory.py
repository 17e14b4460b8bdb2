"""`memory://`: everything in this process's memory, for tests and throw-away runs."""

from __future__ import annotations

import heapq
import itertools
import json
import math
import struct
import time
import zlib
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sms_gateway.model import JSON, InboundMessage, Session
from sms_gateway.ratelimit import Pace, SenderRate, reserve, slowed
from sms_gateway.store.base import (
    InboundRecord,
    Job,
    LeaseLost,
    OutboundRecord,
    Owner,
    OwnerState,
    Pipe,
    Store,
    conversation_key,
    inbound_key,
)


@dataclass(slots=True)
class _JobState:
    job: Job
    seq: int
    state: str = "queued"  # queued | leased | dead
    lease_until: float = 0.0
    owner: str | None = None


class _Deflater:
    """JSON, then raw deflate with a 4 KiB window and a preset dictionary of what every stored value of one kind
    repeats (field names, IBM's state variables): a session's ~1.1 KB shrinks to a
    quarter in ~10 us (back in ~3 us), a send job's ~310 bytes to half. Kept values are read rarely (a session
    once per turn, a finished job almost never), and their size is what 100,000 of them cost."""

    _WBITS = -12

    def __init__(self, zdict: bytes) -> None:
        self._zdict = zdict

    def pack(self, value: object) -> bytes:
        packer = zlib.compressobj(1, zlib.DEFLATED, self._WBITS, 4, zdict=self._zdict)
        return packer.compress(json.dumps(value, separators=(",", ":")).encode()) + packer.flush()

    def unpack(self, data: bytes) -> Any:
        return json.loads(zlib.decompressobj(self._WBITS, zdict=self._zdict).decompress(data))


_SESSIONS = _Deflater(
    b'"sessionId":"","tenantNumber":"+1","userNumber":"+1","createdAt":1,"lastActivity":1,"timeoutSeconds":3600,'
    b'"engineState":{"context":{"smsTenantPhoneNumber":"+1","smsUserPhoneNumber":"+1","smsSessionID":"",'
    b'"smsMedia":[],"smsMedia":[{"mediaURL":"https://","mediaContentType":'
    b'"image/jpeg"},"smsError":null,"smsUserData":"smsSessionTimeoutCount":"conversation_id":"system":'
    b'{"initialized":true,"dialog_stack":[{"dialog_node":"root"}],"dialog_turn_counter":1,"dialog_request_counter":1,'
    b'"_node_output_map":{"branch_exited":true,"branch_exited_reason":"completed"}}},"sessionID":"skillState":'
    b'"userData":null,"restTimeout":null,"pendingError":null,"conversationOverride":null,"optionsPrefix":null,'
    b'"disambiguationPrefix":null,"pendingOptions":null}'
)
_RUN_AT = struct.Struct("<d")
# A finished job as [seq, kind, payload, order key, attempts, last error, begun attempt]; most are sends
# (outbox.send_job).
_FINISHED_JOBS = _Deflater(
    b'"relay",{"smsPipeID":"","callbackURL":"http://","event":"smsFailed","message":'
    b'"send",{"messageId":"mg","tenantNumber":"+1","userNumber":"+1","text":"","mediaUrls":[],'
    b'"mediaUrls":["https://","https://"],"sessionId":"","errorTo":null,'
    b'"errorTo":["+1","+1"]},"+1:+1",1,null,1]'
)


@dataclass(frozen=True, slots=True)
class _StoredSession:
    """A session kept as its deflated JSON text: a few percent of the memory of the parsed objects, and every
    load hands out a fresh copy, as the other stores do."""

    session_id: str
    expires_at: float
    data: bytes

    @classmethod
    def of(cls, session: Session) -> _StoredSession:
        return cls(session.session_id, session.expires_at(), _SESSIONS.pack(session.to_json()))

    def load(self) -> Session:
        return Session.from_json(_SESSIONS.unpack(self.data))


@dataclass(slots=True)
class _Queued:
    """A message accepted and not yet processed. Kept as its JSON text: one block of ~0.7 KB in the C heap
    instead of a dozen objects (the message, its media, their strings: ~1.4 KB), so a backlog of thousands
    costs half the memory, and gives it back to the system once it has drained (`sms_gateway.heap`)."""

    seq: int
    payload: str
    conv: str
    owner: str | None = None
    lease_until: float = 0.0
    attempts: int = 0


class MemoryStore(Store):
    def __init__(self) -> None:
        self._seq = itertools.count()
        self._claims: dict[str, float] = {}  # every message accepted and not yet pruned -> when received
        # Unfinished messages and jobs, in seq order (dicts keep insertion order and seq only grows), so
        # leasing reads only what is still to do, not the whole history.
        self._inbound_pending: dict[str, _Queued] = {}
        # conversation -> its unfinished keys, oldest first: a list, as it is almost always one key long (a deque
        # is ten times the size, which a backlog of new users' first messages would pay each)
        self._conversations: dict[str, list[str]] = {}
        # Their first messages (the only ones that may be leased): free ones in a heap by seq (entries of
        # messages since finished or leased are skipped when popped), leased ones apart.
        self._ready: list[tuple[int, str]] = []
        self._leased: dict[str, _Queued] = {}
        self._sessions: dict[tuple[str, str], _StoredSession] = {}
        self._errors: dict[tuple[str, str], list[JSON]] = {}
        # message id -> its record as JSON text (one block instead of an object and its strings)
        self._outbound: dict[str, str] = {}
        self._statuses: dict[tuple[str, str], float] = {}  # -> when claimed
        self._once_claims: dict[str, float] = {}  # claim_once: key -> until
        # (until, key) per successful claim, so pruning reads only expired claims; an entry whose key has been
        # claimed again since (its until differs from the dict's) is dropped when it comes due.
        self._once_claim_expiries: list[tuple[float, str]] = []
        self._pipes: dict[str, Pipe] = {}
        # Jobs by state. A finished job is kept for 7 days, and only read again if a late retry or dead-letter
        # brings it back: packed as its run_at (8 bytes) and its deflated JSON (~150 bytes for a send).
        self._active_jobs: dict[str, _JobState] = {}  # queued and leased, in seq order
        self._dead_jobs: dict[str, _JobState] = {}
        self._done_jobs: dict[str, bytes] = {}  # in the order they finished
        self._session_ids: dict[str, tuple[str, str]] = {}
        # (expires at, pair, session id): one entry per session, pushed when it is first saved; when it comes
        # due, a session saved since is pushed again at its new expiry, and one deleted or replaced is
        # dropped, so the sweeper reads only what is due, not every session, and saves push nothing.
        self._expiries: list[tuple[float, tuple[str, str], str]] = []
        self._slots: dict[str, float] = {}
        self._owners: dict[str, tuple[Owner, float]] = {}  # owner id -> (owner, alive until)
        self._paces: dict[str, Pace] = {}

    async def ping(self) -> None:
        return None

    async def accept_inbound(self, message: InboundMessage) -> bool:
        key = inbound_key(message)
        if key in self._claims:
            return False
        conv = conversation_key(message)
        item = _Queued(seq=next(self._seq), payload=json.dumps(message.to_json(), separators=(",", ":")), conv=conv)
        self._claims[key] = message.received_at
        self._inbound_pending[key] = item
        waiting = self._conversations.setdefault(conv, [])
        waiting.append(key)
        if len(waiting) == 1:
            heapq.heappush(self._ready, (item.seq, key))
        return True

    async def lease_inbound(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[InboundRecord]:
        for key, item in list(self._leased.items()):
            if item.lease_until <= now:
                del self._leased[key]
                heapq.heappush(self._ready, (item.seq, key))
        leased: list[InboundRecord] = []
        while self._ready and len(leased) < limit:
            seq, key = heapq.heappop(self._ready)
            found = self._inbound_pending.get(key)
            if found is None or found.seq != seq or key in self._leased or self._conversations[found.conv][0] != key:
                continue
            item = self._leased[key] = found
            if item.owner is not None and item.lease_until > now:  # a caller whose clock is behind
                continue
            item.owner = owner
            item.lease_until = now + lease_seconds
            item.attempts += 1
            message = InboundMessage.from_json(json.loads(item.payload))
            leased.append(InboundRecord(key=key, message=message, attempts=item.attempts))
        return leased

    async def extend_inbound_leases(self, owner: str, keys: Sequence[str], until: float) -> None:
        for key in keys:
            item = self._inbound_pending.get(key)
            if item is not None and item.owner == owner:
                item.lease_until = until

    async def complete_inbound(self, key: str) -> None:
        item = self._inbound_pending.pop(key, None)
        if item is None:
            return
        item.owner = None
        self._leased.pop(key, None)
        waiting = self._conversations[item.conv]
        was_head = waiting[0] == key
        waiting.remove(key)
        if not waiting:
            del self._conversations[item.conv]
        elif was_head:
            heapq.heappush(self._ready, (self._inbound_pending[waiting[0]].seq, waiting[0]))

    async def pending_inbound_count(self) -> int:
        return len(self._inbound_pending)

    async def load_session(self, tenant_number: str, user_number: str) -> Session | None:
        stored = self._sessions.get((tenant_number, user_number))
        return None if stored is None else stored.load()

    async def save_session(self, session: Session) -> None:
        pair = (session.tenant_number, session.user_number)
        previous = self._sessions.get(pair)
        stored = _StoredSession.of(session)
        if previous is not None and previous.session_id == session.session_id:
            # The same session again: its id is indexed already, and its expiry entry still stands unless
            # this save brought the expiry forward (a later expiry is found when the entry comes due).
            self._sessions[pair] = stored
            if stored.expires_at < previous.expires_at:
                heapq.heappush(self._expiries, (stored.expires_at, pair, session.session_id))
            return
        if previous is not None:
            self._session_ids.pop(previous.session_id, None)
        self._sessions[pair] = stored
        self._session_ids[session.session_id] = pair
        heapq.heappush(self._expiries, (stored.expires_at, pair, session.session_id))

    async def insert_session(self, session: Session) -> Session | None:
        existing = self._sessions.get((session.tenant_number, session.user_number))
        if existing is not None:
            return existing.load()
        await self.save_session(session)
        return None

    async def delete_session(self, tenant_number: str, user_number: str, session_id: str) -> bool:
        current = self._sessions.get((tenant_number, user_number))
        if current is None or current.session_id != session_id:
            return False
        del self._sessions[(tenant_number, user_number)]
        self._session_ids.pop(session_id, None)
        return True

    async def find_session(self, session_id: str) -> Session | None:
        pair = self._session_ids.get(session_id)
        stored = None if pair is None else self._sessions.get(pair)
        return None if stored is None else stored.load()

    async def expired_sessions(self, now: float, limit: int) -> list[Session]:
        due: list[tuple[float, tuple[str, str], str]] = []
        due_pairs: set[tuple[str, str]] = set()  # an expiry brought forward leaves two entries
        while self._expiries and self._expiries[0][0] <= now and len(due) < limit:
            entry = heapq.heappop(self._expiries)
            _, pair, session_id = entry
            stored = self._sessions.get(pair)
            if stored is None or stored.session_id != session_id:
                continue  # deleted, or replaced by another session (which has its own entry)
            if stored.expires_at > now:  # saved since: due later
                heapq.heappush(self._expiries, (stored.expires_at, pair, session_id))
            elif pair not in due_pairs:
                due_pairs.add(pair)
                due.append((stored.expires_at, pair, session_id))
        for entry in due:  # still there until the session is deleted or saved again
            heapq.heappush(self._expiries, entry)
        return [self._sessions[pair].load() for _, pair, _ in due]

    async def push_sms_error(self, tenant_number: str, user_number: str, error: JSON) -> None:
        self._errors.setdefault((tenant_number, user_number), []).append(error)

    async def pop_sms_errors(self, tenant_number: str, user_number: str) -> list[JSON]:
        return self._errors.pop((tenant_number, user_number), [])

    async def record_outbound(self, record: OutboundRecord) -> None:
        self._outbound[record.message_id] = _pack_outbound(record)

    async def find_outbound(self, message_id: str) -> OutboundRecord | None:
        packed = self._outbound.get(message_id)
        return None if packed is None else _outbound_record(message_id, packed)

    async def claim_status(self, provider_message_id: str, status: str) -> bool:
        pair = (provider_message_id, status)
        if pair in self._statuses:
            return False
        self._statuses[pair] = time.time()
        return True

    async def claim_once(self, key: str, until: float) -> bool:
        held_until = self._once_claims.get(key)
        if held_until is not None and held_until > time.time():
            return False
        # An expired claim is replaced, so claims of one key never pile up between prunes.
        self._once_claims[key] = until
        heapq.heappush(self._once_claim_expiries, (until, key))
        return True

    async def save_pipe(self, pipe: Pipe) -> None:
        pair = (pipe.tenant_number, pipe.user_number)
        for other in [p for p in self._pipes.values() if (p.tenant_number, p.user_number) == pair]:
            del self._pipes[other.pipe_id]
        self._pipes[pipe.pipe_id] = pipe

    async def get_pipe(self, pipe_id: str) -> Pipe | None:
        return self._pipes.get(pipe_id)

    async def pipe_for(self, tenant_number: str, user_number: str, now: float) -> Pipe | None:
        for pipe in self._pipes.values():
            if (pipe.tenant_number, pipe.user_number) == (tenant_number, user_number) and pipe.expires_at > now:
                return pipe
        return None

    async def delete_pipe(self, pipe_id: str) -> bool:
        return self._pipes.pop(pipe_id, None) is not None

    async def enqueue_job(self, job: Job) -> bool:
        job_id = job.job_id
        if job_id in self._active_jobs or job_id in self._done_jobs or job_id in self._dead_jobs:
            return False
        self._active_jobs[job_id] = _JobState(job=job, seq=next(self._seq))
        return True

    async def lease_jobs(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[Job]:
        blocked: set[str] = set()
        leased: list[Job] = []
        for state in self._active_jobs.values():
            key = state.job.order_key
            if key is not None and key in blocked:
                continue
            if key is not None:
                blocked.add(key)
            free = state.state == "queued" or state.lease_until <= now
            if free and state.job.run_at <= now and len(leased) < limit:
                state.state = "leased"
                state.owner = owner
                state.lease_until = now + lease_seconds
                state.job = replace(state.job, attempts=state.job.attempts + 1)
                leased.append(replace(state.job, owner=owner))
        return leased

    async def pending_job_count(self) -> int:
        return len(self._active_jobs)

    async def extend_job_leases(self, owner: str, job_ids: Sequence[str], until: float) -> None:
        for job_id in job_ids:
            state = self._active_jobs.get(job_id)
            if state is not None and state.state == "leased" and state.owner == owner:
                state.lease_until = until

    async def complete_job(self, job_id: str) -> None:
        state = self._active_jobs.pop(job_id, None) or self._dead_jobs.pop(job_id, None)
        if state is not None:
            job = state.job
            self._done_jobs[job_id] = _RUN_AT.pack(job.run_at) + _FINISHED_JOBS.pack(
                [state.seq, job.kind, job.payload, job.order_key, job.attempts, job.last_error, job.begun_attempt]
            )

    def _take_done(self, job_id: str) -> _JobState | None:
        packed = self._done_jobs.pop(job_id, None)
        if packed is None:
            return None
        (run_at,) = _RUN_AT.unpack_from(packed)
        seq, kind, payload, order_key, attempts, last_error, begun = _FINISHED_JOBS.unpack(packed[_RUN_AT.size :])
        return _JobState(Job(job_id, kind, payload, order_key, run_at, attempts, last_error, begun), seq)

    async def retry_job(self, job_id: str, run_at: float, error: str) -> None:
        state = self._active_jobs.get(job_id) or self._dead_jobs.pop(job_id, None) or self._take_done(job_id)
        if state is not None:
            state.state = "queued"
            state.job = replace(state.job, run_at=run_at, last_error=error)
            self._activate(state)

    async def defer_job(self, job_id: str, run_at: float) -> None:
        state = self._active_jobs.get(job_id)
        if state is not None and state.state == "leased":
            state.state = "queued"
            attempts = max(state.job.attempts - 1, 0)
            begun = state.job.begun_attempt
            state.job = replace(
                state.job,
                run_at=run_at,
                attempts=attempts,
                begun_attempt=None if begun is None else min(begun, attempts),
            )

    def _held(self, job: Job) -> _JobState:
        """The job's state if `job` (as leased) is still leased by its owner in its attempt; else LeaseLost."""
        state = self._active_jobs.get(job.job_id)
        if state is None or state.state != "leased" or state.owner != job.owner or state.job.attempts != job.attempts:
            raise LeaseLost(job.job_id)
        return state

    async def begin_job(self, job: Job) -> None:
        state = self._held(job)
        if state.job.begun_attempt is not None:
            state.job = replace(state.job, begun_attempt=state.job.attempts)

    async def dead_letter_job(self, job_id: str, error: str, now: float) -> None:
        state = self._active_jobs.pop(job_id, None) or self._dead_jobs.get(job_id) or self._take_done(job_id)
        if state is not None:
            state.state = "dead"
            state.job = replace(state.job, last_error=error, run_at=now)
            self._dead_jobs[job_id] = state

    async def dead_letters(self, limit: int) -> list[Job]:
        dead = sorted(self._dead_jobs.values(), key=lambda s: s.seq)
        return [s.job for s in dead[:limit]]

    async def replay_dead_letter(self, job_id: str, now: float) -> bool:
        state = self._dead_jobs.pop(job_id, None)
        if state is None:
            return False
        state.state = "queued"
        state.seq = next(self._seq)
        begun = None if state.job.begun_attempt is None else 0
        state.job = replace(state.job, attempts=0, run_at=now, begun_attempt=begun)
        self._activate(state)
        return True

    def _activate(self, state: _JobState) -> None:
        """Put a job (back) among the active ones, keeping them in seq order."""
        job_id = state.job.job_id
        if job_id in self._active_jobs:
            return
        last = next(reversed(self._active_jobs.values()), None)
        self._active_jobs[job_id] = state
        if last is not None and last.seq > state.seq:  # an old job brought back: rare, so a re-sort is fine
            self._active_jobs = dict(sorted(self._active_jobs.items(), key=lambda item: item[1].seq))

    async def prune_finished(self, before: float, limit: int) -> int:
        # Every dict here is in the order its entries were made, which is roughly time order: walk from the
        # oldest and stop at the first entry that is recent enough.
        removed = _prune_oldest(
            self._claims,
            lambda received_at: received_at < before,
            lambda key, _: key not in self._inbound_pending,
            limit,
        )
        removed += _prune_oldest(
            self._done_jobs, lambda packed: _RUN_AT.unpack_from(packed)[0] < before, lambda _, __: True, limit
        )
        removed += _prune_oldest(
            self._outbound,
            lambda packed: (_outbound_record("", packed).first_attempt_at or 0.0) < before,
            lambda _, __: True,
            limit,
        )
        removed += _prune_oldest(self._statuses, lambda at: at < before, lambda _, __: True, limit)
        for pipe_id in [p.pipe_id for p in self._pipes.values() if p.expires_at < before][:limit]:
            del self._pipes[pipe_id]
            removed += 1
        return removed + self._prune_once_claims(time.time(), limit)

    def _prune_once_claims(self, now: float, limit: int) -> int:
        removed = 0
        expiries = self._once_claim_expiries
        while expiries and expiries[0][0] <= now and removed < limit:
            until, key = heapq.heappop(expiries)
            if self._once_claims.get(key) == until:  # else claimed again since: its newer entry stands
                del self._once_claims[key]
                removed += 1
        return removed

    async def beat_owner(self, owner: Owner, ttl_seconds: float, now: float) -> bool:
        previous = self._owners.get(owner.owner_id)
        self._owners[owner.owner_id] = (owner, now + ttl_seconds)
        return previous is not None and previous[1] > now

    async def owners(self, now: float) -> list[OwnerState]:
        return [OwnerState(owner, until > now) for owner, until in self._owners.values()]

    async def end_owner(self, owner_id: str) -> None:
        if owner_id in self._owners:
            self._owners[owner_id] = (self._owners[owner_id][0], 0.0)

    async def release_owners(self, owner_ids: Sequence[str], now: float, job_settle_seconds: float = 0.0) -> list[str]:
        gone = [i for i in owner_ids if i in self._owners and self._owners[i][1] <= now]
        for owner_id in gone:
            del self._owners[owner_id]
        if gone:
            for item in self._leased.values():
                if item.owner in gone:
                    item.lease_until = 0.0
            for state in self._active_jobs.values():
                if state.state == "leased" and state.owner in gone:
                    settled_at = now + job_settle_seconds if state.job.begun() else 0.0
                    state.lease_until = min(state.lease_until, settled_at)
        return gone

    async def begin_send(
        self,
        slot_key: str,
        cap: SenderRate | None,
        now: float,
        record: OutboundRecord,
        max_wait: float = math.inf,
        job: Job | None = None,
    ) -> float:
        if job is not None:
            self._held(job)
        wait = await self.reserve_send_slot(slot_key, cap, now, max_wait)
        await self.record_outbound(record)
        if job is not None and wait <= 0:
            await self.begin_job(job)
        return wait

    async def reserve_send_slot(
        self, key: str, cap: SenderRate | None, now: float, max_wait: float = math.inf
    ) -> float:
        wait, tat = reserve(self._slots.get(key), self._paces.get(key), cap, now, max_wait)
        if tat is not None:
            self._slots[key] = tat
        return wait

    async def slow_sender(
        self, key: str, now: float, paced_at: float, retry_after: float | None, start_rate: float
    ) -> Pace:
        pace = self._paces[key] = slowed(self._paces.get(key), now, paced_at, retry_after, start_rate)
        return pace


def _pack_outbound(record: OutboundRecord) -> str:
    """An outbound record without its message id (the key it is kept under), as JSON text."""
    return json.dumps(
        [
            record.tenant_number,
            record.user_number,
            record.session_id,
            record.provider_message_id,
            record.pipe,
            record.first_attempt_at,
        ],
        separators=(",", ":"),
    )


def _outbound_record(message_id: str, packed: str) -> OutboundRecord:
    tenant_number, user_number, session_id, provider_message_id, pipe, first_attempt_at = json.loads(packed)
    return OutboundRecord(
        message_id, tenant_number, user_number, session_id, provider_message_id, pipe, first_attempt_at
    )


K = TypeVar("K")
V = TypeVar("V")


def _prune_oldest(
    entries: MutableMapping[K, V], old: Callable[[V], bool], finished: Callable[[K, V], bool], limit: int
) -> int:
    doomed: list[K] = []
    for key, value in entries.items():
        if len(doomed) >= limit or not old(value):
            break
        if finished(key, value):
            doomed.append(key)
    for key in doomed:
        del entries[key]
    return len(doomed)
