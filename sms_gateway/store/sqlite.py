"""`sqlite:///path.db`: the embedded default. One file, WAL, no server.

sqlite3 is blocking, so every statement runs on one dedicated thread that owns the connection; the event
loop only awaits. Each public method is one transaction, committed before it returns (synchronous=FULL by
default, so an acknowledged webhook survives a power cut; `?synchronous=normal` trades that for speed).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

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
    StoreUnavailable,
    TurnStart,
    conversation_key,
    inbound_key,
)
from sms_gateway.store.checkpoint import SAFETY_NET_PAGES, BackgroundCheckpointer

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    conv TEXT NOT NULL,
    payload TEXT NOT NULL,
    owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    head INTEGER NOT NULL DEFAULT 0  -- 1: the oldest unfinished message of its conversation (only it is leased)
);
CREATE INDEX IF NOT EXISTS inbound_pending ON inbound (done, seq);
CREATE INDEX IF NOT EXISTS inbound_seq ON inbound (seq);
CREATE INDEX IF NOT EXISTS inbound_conv ON inbound (conv, done, seq);
CREATE TABLE IF NOT EXISTS sessions (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    expires_at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, user)
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS sms_errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sms_errors_pair ON sms_errors (tenant, user);
CREATE TABLE IF NOT EXISTS outbound (
    message_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    session_id TEXT,
    provider_message_id TEXT,
    pipe TEXT,
    first_attempt_at REAL
);
CREATE TABLE IF NOT EXISTS pipes (
    pipe_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    expires_at REAL NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (tenant, user)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    order_key TEXT,
    state TEXT NOT NULL DEFAULT 'queued',
    run_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    owner TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    begun_attempt INTEGER  -- Job.begun_attempt
);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
-- The lease's "nothing earlier of this order key is still queued" check reads only unfinished jobs, however
-- long the order key's history (this replaced jobs_order (order_key, seq), which read all of it).
DROP INDEX IF EXISTS jobs_order;
CREATE INDEX IF NOT EXISTS jobs_order_state ON jobs (order_key, state, seq);
CREATE TABLE IF NOT EXISTS send_slots (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL
);
-- A sender's pace after the provider throttled it (ratelimit.Pace); a sender never throttled has no row.
CREATE TABLE IF NOT EXISTS send_paces (
    key TEXT PRIMARY KEY,
    rate REAL NOT NULL,
    cut_at REAL NOT NULL,
    hold_until REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (
    name TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS statuses (
    provider_message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (provider_message_id, status)
);
-- claim_once (webhook signature nonces): a file made before it gains the table when opened. WITHOUT ROWID: a
-- claim writes one b-tree, not a table and its key's index. No index on until: the table holds only claims
-- within their window (plus those expired since the last prune), so pruning's scan of it is short.
CREATE TABLE IF NOT EXISTS once_claims (
    key TEXT PRIMARY KEY,
    until REAL NOT NULL
) WITHOUT ROWID;
-- Processes that hold leases, with their heartbeat (see Store.beat_owner).
CREATE TABLE IF NOT EXISTS owners (
    owner_id TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    alive_until REAL NOT NULL
);
"""

# After _SCHEMA and _migrate: an index on a column that databases made before it need added first.
_INDEXES_AFTER_MIGRATION = """
-- Leasing reads the conversations' heads, not every waiting message: a conversation with thousands of
-- messages queued behind a long turn costs one row, not thousands, per lease.
CREATE INDEX IF NOT EXISTS inbound_heads ON inbound (seq) WHERE head = 1 AND done = 0;
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database made by an earlier version up to this schema (in one transaction, so two processes
    opening the same file at once do it once)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(inbound)")}
        if "head" not in columns:
            db.execute("ALTER TABLE inbound ADD COLUMN head INTEGER NOT NULL DEFAULT 0")
            db.execute(
                "UPDATE inbound SET head = 1 WHERE done = 0 AND NOT EXISTS (SELECT 1 FROM inbound AS e"
                " WHERE e.conv = inbound.conv AND e.done = 0 AND e.seq < inbound.seq)"
            )
        if "at" not in {row[1] for row in db.execute("PRAGMA table_info(statuses)")}:
            db.execute("ALTER TABLE statuses ADD COLUMN at REAL NOT NULL DEFAULT 0")
        if "begun_attempt" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
            # NULL: the jobs queued before say nothing about their attempts, so a takeover waits for them.
            db.execute("ALTER TABLE jobs ADD COLUMN begun_attempt INTEGER")
        for statement in filter(None, (part.strip() for part in _INDEXES_AFTER_MIGRATION.split(";"))):
            db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _last_before(db: sqlite3.Connection, table: str, order: str, when: str, cutoff: float) -> int | None:
    """The largest `order` value (an indexed column that grows with time: seq, rowid) whose row's `when` is
    before `cutoff`, by binary search: O(log^2 n) instead of reading every row. Rows are assumed to be
    written roughly in time order, which is all retention needs."""
    low, high = db.execute(f"SELECT MIN({order}), MAX({order}) FROM {table}").fetchone()
    if low is None:
        return None
    best = None
    while low <= high:
        middle = (low + high) // 2
        row = db.execute(
            f"SELECT {order}, {when} FROM {table} WHERE {order} >= ? ORDER BY {order} LIMIT 1", (middle,)
        ).fetchone()
        if row is not None and (row[1] or 0.0) < cutoff:
            best = row[0]
            low = row[0] + 1
        else:
            high = middle - 1
    return best


# Statements that more than one operation runs (alone, or as part of a turn's or a send's combined write).
def _complete_inbound(db: sqlite3.Connection, key: str) -> None:
    db.execute("UPDATE inbound SET done = 1, owner = NULL, head = 0 WHERE key = ?", (key,))
    # The conversation's next message, if any, becomes its head.
    db.execute(
        "UPDATE inbound SET head = 1 WHERE key = (SELECT next.key FROM inbound AS done_one"
        " JOIN inbound AS next ON next.conv = done_one.conv AND next.done = 0"
        " WHERE done_one.key = ? ORDER BY next.seq LIMIT 1) AND head = 0",
        (key,),
    )


def _select_session(db: sqlite3.Connection, tenant_number: str, user_number: str) -> Session | None:
    row = db.execute("SELECT data FROM sessions WHERE tenant = ? AND user = ?", (tenant_number, user_number)).fetchone()
    return None if row is None else Session.from_json(json.loads(row[0]))


def _save_session(db: sqlite3.Connection, session: Session, data: str) -> None:
    db.execute(
        "INSERT INTO sessions (tenant, user, session_id, expires_at, data) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, user) DO UPDATE SET session_id = excluded.session_id,"
        " expires_at = excluded.expires_at, data = excluded.data",
        (session.tenant_number, session.user_number, session.session_id, session.expires_at(), data),
    )


def _delete_session(db: sqlite3.Connection, tenant_number: str, user_number: str, session_id: str) -> bool:
    cursor = db.execute(
        "DELETE FROM sessions WHERE tenant = ? AND user = ? AND session_id = ?",
        (tenant_number, user_number, session_id),
    )
    return cursor.rowcount == 1


def _pop_sms_errors(db: sqlite3.Connection, tenant_number: str, user_number: str) -> list[JSON]:
    """Reads, then at most one write (its last statement)."""
    rows = db.execute(
        "SELECT id, error FROM sms_errors WHERE tenant = ? AND user = ? ORDER BY id", (tenant_number, user_number)
    ).fetchall()
    if rows:
        db.execute("DELETE FROM sms_errors WHERE tenant = ? AND user = ?", (tenant_number, user_number))
    return [json.loads(error) for _, error in rows]


def _select_pipe(db: sqlite3.Connection, tenant_number: str, user_number: str, now: float) -> Pipe | None:
    row = db.execute(
        "SELECT data FROM pipes WHERE tenant = ? AND user = ? AND expires_at > ?", (tenant_number, user_number, now)
    ).fetchone()
    return None if row is None else Pipe.from_json(json.loads(row[0]))


def _record_outbound(db: sqlite3.Connection, record: OutboundRecord) -> None:
    db.execute(
        "INSERT OR REPLACE INTO outbound"
        " (message_id, tenant, user, session_id, provider_message_id, pipe, first_attempt_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            record.message_id,
            record.tenant_number,
            record.user_number,
            record.session_id,
            record.provider_message_id,
            None if record.pipe is None else json.dumps(record.pipe),
            record.first_attempt_at,
        ),
    )


def _enqueue_job(db: sqlite3.Connection, job: Job, payload: str) -> bool:
    cursor = db.execute(
        "INSERT OR IGNORE INTO jobs"
        " (job_id, seq, kind, payload, order_key, run_at, attempts, last_error, begun_attempt)"
        " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?, ?, ?, ?, ?, ?, ?)",
        (job.job_id, job.kind, payload, job.order_key, job.run_at, job.attempts, job.last_error, job.begun_attempt),
    )
    return cursor.rowcount == 1


def _reserve_send_slot(db: sqlite3.Connection, key: str, cap: SenderRate | None, now: float, max_wait: float) -> float:
    # One read for both: the pace is looked up on every send, the arrival time is only needed with it or a cap.
    tat, rate, cut_at, hold_until = db.execute(
        "SELECT (SELECT tat FROM send_slots WHERE key = :key), p.rate, p.cut_at, p.hold_until"
        " FROM (SELECT 1) LEFT JOIN send_paces AS p ON p.key = :key",
        {"key": key},
    ).fetchone()
    pace = None if rate is None else Pace(rate, cut_at, hold_until)
    wait, new_tat = reserve(tat, pace, cap, now, max_wait)
    if new_tat is not None:
        db.execute("INSERT OR REPLACE INTO send_slots (key, tat) VALUES (?, ?)", (key, new_tat))
    return wait


def _slow_sender(
    db: sqlite3.Connection, key: str, now: float, paced_at: float, retry_after: float | None, start_rate: float
) -> Pace:
    row = db.execute("SELECT rate, cut_at, hold_until FROM send_paces WHERE key = ?", (key,)).fetchone()
    pace = slowed(None if row is None else Pace(*row), now, paced_at, retry_after, start_rate)
    db.execute(
        "INSERT OR REPLACE INTO send_paces (key, rate, cut_at, hold_until) VALUES (?, ?, ?, ?)",
        (key, pace.rate, pace.cut_at, pace.hold_until),
    )
    return pace


def _complete_job(db: sqlite3.Connection, job_id: str) -> None:
    db.execute("UPDATE jobs SET state = 'done', owner = NULL WHERE job_id = ?", (job_id,))


def _begin_job(db: sqlite3.Connection, job: Job) -> bool:
    """Mark the job's attempt begun (if it says so at all) if `job` is still leased as it was: whether it was."""
    cursor = db.execute(
        "UPDATE jobs SET begun_attempt = CASE WHEN begun_attempt IS NULL THEN NULL ELSE attempts END"
        " WHERE job_id = ? AND state = 'leased' AND owner = ? AND attempts = ?",
        (job.job_id, job.owner, job.attempts),
    )
    return bool(cursor.rowcount == 1)


def _holds_job(db: sqlite3.Connection, job: Job) -> None:
    """LeaseLost unless `job` is still leased by its owner in its attempt."""
    if (
        db.execute(
            "SELECT 1 FROM jobs WHERE job_id = ? AND state = 'leased' AND owner = ? AND attempts = ?",
            (job.job_id, job.owner, job.attempts),
        ).fetchone()
        is None
    ):
        raise LeaseLost(job.job_id)


def sqlite_path(url: str) -> tuple[str, str]:
    """`sqlite:///rel.db`, `sqlite:////abs/path.db` -> (path, synchronous mode)."""
    parts = urlsplit(url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(f"no database file in {url!r}")
    mode = parse_qs(parts.query).get("synchronous", ["full"])[0].upper()
    if mode not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"unsupported synchronous mode {mode!r} in {url!r}")
    return path, mode


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # the caller was cancelled; its change is committed all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SQLiteStore(Store):
    def __init__(self, url: str, *, busy_timeout_ms: int = 2000) -> None:
        self._path, self._synchronous = sqlite_path(url)
        self._busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        self._db: sqlite3.Connection | None = None
        self._queue_lock = threading.Lock()
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], bool]] = []
        self._flush_scheduled = False
        self._checkpointer: BackgroundCheckpointer | None = None

    # Plumbing ---------------------------------------------------------------------------------
    # Group commit: operations queue up while the store thread commits; the thread then runs everything
    # queued in ONE transaction (each operation that writes more than once in its own savepoint, so one
    # failing operation does not undo the others) and commits once. Every caller is answered only after the
    # commit that holds its change, so durability is that of a commit per operation, at the cost of one fsync
    # per batch.
    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, single_write: bool = False) -> T:
        """Run `fn` in the next batch. `single_write`: fn changes the database with at most one statement, its
        last, which SQLite undoes by itself if it fails (reads before it need no undoing), so fn needs no
        savepoint of its own: two statements fewer per operation."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._queue_lock:
            self._queue.append((fn, future, single_write))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self._executor.submit(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._flush_scheduled = False
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        db = self._db
        try:
            if db is None:
                raise StoreUnavailable("store is not open")
            # IMMEDIATE takes the write lock up front, so a read-then-write (leasing) cannot race with
            # another process on the same file.
            db.execute("BEGIN IMMEDIATE")
            for fn, future, single_write in batch:
                if single_write:
                    try:
                        outcomes.append((future, True, fn(db)))
                    except sqlite3.Error as exc:
                        if not db.in_transaction:  # e.g. SQLITE_FULL: SQLite rolled back the whole batch
                            raise
                        outcomes.append((future, False, StoreUnavailable(f"sqlite: {exc}")))
                    continue
                db.execute("SAVEPOINT op")
                try:
                    outcomes.append((future, True, fn(db)))
                    db.execute("RELEASE op")
                except Exception as exc:
                    db.execute("ROLLBACK TO op")
                    db.execute("RELEASE op")
                    error = StoreUnavailable(f"sqlite: {exc}") if isinstance(exc, sqlite3.Error) else exc
                    outcomes.append((future, False, error))
            db.execute("COMMIT")
        except Exception as exc:
            if db is not None and db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"sqlite: {exc}")
            outcomes = [(future, False, error) for _, future, _ in batch]
        loop.call_soon_threadsafe(_settle, outcomes)

    async def open(self) -> None:
        def connect() -> None:
            try:
                db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
                db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                db.execute("PRAGMA journal_mode = WAL")
                db.execute(f"PRAGMA synchronous = {self._synchronous}")
                db.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_NET_PAGES}")
                db.executescript(_SCHEMA)
                _migrate(db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite: cannot open {self._path}: {exc}") from exc
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        checkpointer = BackgroundCheckpointer(self._path, self._synchronous)
        try:
            await checkpointer.start()
        except sqlite3.Error as exc:
            await self.close()
            raise StoreUnavailable(f"sqlite: cannot open {self._path}: {exc}") from exc
        self._checkpointer = checkpointer

    async def close(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None

        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, disconnect)
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        # A write, not a read: a full disk or a read-only file must make the gateway not ready.
        await self._run(
            lambda db: db.execute("INSERT OR REPLACE INTO health (name, at) VALUES ('ping', ?)", (time.time(),)),
            single_write=True,
        )

    # Inbound ----------------------------------------------------------------------------------
    async def accept_inbound(self, message: InboundMessage) -> bool:
        key = inbound_key(message)
        payload = json.dumps(message.to_json(), separators=(",", ":"))

        def insert(db: sqlite3.Connection) -> bool:
            conv = conversation_key(message)
            cursor = db.execute(
                "INSERT OR IGNORE INTO inbound (key, seq, conv, payload, created_at, head)"
                " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM inbound), ?, ?, ?,"
                " NOT EXISTS (SELECT 1 FROM inbound WHERE conv = ? AND done = 0))",
                (key, conv, payload, message.received_at, conv),
            )
            return cursor.rowcount == 1

        return await self._run(insert, single_write=True)

    async def lease_inbound(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[InboundRecord]:
        def lease(db: sqlite3.Connection) -> list[InboundRecord]:
            rows = db.execute(
                "SELECT key, payload, attempts FROM inbound INDEXED BY inbound_heads"
                " WHERE head = 1 AND done = 0 AND (owner IS NULL OR lease_until <= ?)"
                " ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            records = []
            for key, payload, attempts in rows:
                db.execute(
                    "UPDATE inbound SET owner = ?, lease_until = ?, attempts = attempts + 1 WHERE key = ?",
                    (owner, now + lease_seconds, key),
                )
                records.append(InboundRecord(key, InboundMessage.from_json(json.loads(payload)), attempts + 1))
            return records

        return await self._run(lease)

    async def extend_inbound_leases(self, owner: str, keys: Sequence[str], until: float) -> None:
        if keys:
            await self._run(
                lambda db: db.executemany(
                    "UPDATE inbound SET lease_until = ? WHERE key = ? AND owner = ? AND done = 0",
                    [(until, key, owner) for key in keys],
                )
            )

    async def complete_inbound(self, key: str) -> None:
        await self._run(lambda db: _complete_inbound(db, key))

    async def pending_inbound_count(self) -> int:
        row = await self._run(
            lambda db: db.execute("SELECT COUNT(*) FROM inbound WHERE done = 0").fetchone(), single_write=True
        )
        return int(row[0])

    # Sessions ---------------------------------------------------------------------------------
    async def load_session(self, tenant_number: str, user_number: str) -> Session | None:
        return await self._run(lambda db: _select_session(db, tenant_number, user_number), single_write=True)

    async def save_session(self, session: Session) -> None:
        data = json.dumps(session.to_json(), separators=(",", ":"))
        await self._run(lambda db: _save_session(db, session, data), single_write=True)

    async def insert_session(self, session: Session) -> Session | None:
        data = json.dumps(session.to_json(), separators=(",", ":"))

        def insert(db: sqlite3.Connection) -> Session | None:
            row = db.execute(
                "SELECT data FROM sessions WHERE tenant = ? AND user = ?", (session.tenant_number, session.user_number)
            ).fetchone()
            if row is not None:
                return Session.from_json(json.loads(row[0]))
            db.execute(
                "INSERT INTO sessions (tenant, user, session_id, expires_at, data) VALUES (?, ?, ?, ?, ?)",
                (session.tenant_number, session.user_number, session.session_id, session.expires_at(), data),
            )
            return None

        return await self._run(insert, single_write=True)

    async def delete_session(self, tenant_number: str, user_number: str, session_id: str) -> bool:
        return await self._run(
            lambda db: _delete_session(db, tenant_number, user_number, session_id), single_write=True
        )

    async def find_session(self, session_id: str) -> Session | None:
        row = await self._run(
            lambda db: db.execute("SELECT data FROM sessions WHERE session_id = ?", (session_id,)).fetchone(),
            single_write=True,
        )
        return None if row is None else Session.from_json(json.loads(row[0]))

    async def expired_sessions(self, now: float, limit: int) -> list[Session]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT data FROM sessions WHERE expires_at <= ? ORDER BY expires_at LIMIT ?", (now, limit)
            ).fetchall(),
            single_write=True,
        )
        return [Session.from_json(json.loads(row[0])) for row in rows]

    # smsError ---------------------------------------------------------------------------------
    async def push_sms_error(self, tenant_number: str, user_number: str, error: JSON) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO sms_errors (tenant, user, error) VALUES (?, ?, ?)",
                (tenant_number, user_number, json.dumps(error)),
            ),
            single_write=True,
        )

    async def pop_sms_errors(self, tenant_number: str, user_number: str) -> list[JSON]:
        return await self._run(lambda db: _pop_sms_errors(db, tenant_number, user_number), single_write=True)

    # Outbound ---------------------------------------------------------------------------------
    async def record_outbound(self, record: OutboundRecord) -> None:
        await self._run(lambda db: _record_outbound(db, record), single_write=True)

    async def find_outbound(self, message_id: str) -> OutboundRecord | None:
        row: Any = await self._run(
            lambda db: db.execute(
                "SELECT message_id, tenant, user, session_id, provider_message_id, pipe, first_attempt_at FROM outbound"
                " WHERE message_id = ?",
                (message_id,),
            ).fetchone(),
            single_write=True,
        )
        if row is None:
            return None
        message_id, tenant, user, session_id, provider_id, pipe, first_attempt_at = row
        return OutboundRecord(
            message_id,
            tenant,
            user,
            session_id,
            provider_id,
            None if pipe is None else json.loads(pipe),
            first_attempt_at,
        )

    async def claim_status(self, provider_message_id: str, status: str) -> bool:
        cursor = await self._run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO statuses (provider_message_id, status, at) VALUES (?, ?, ?)",
                (provider_message_id, status, time.time()),
            ),
            single_write=True,
        )
        return bool(cursor.rowcount == 1)

    # Claims that last until a time -----------------------------------------------------------
    async def claim_once(self, key: str, until: float) -> bool:
        def claim(db: sqlite3.Connection) -> bool:
            # One statement in the batch's write transaction (BEGIN IMMEDIATE): no other connection, in this
            # process or another on the file, can claim the key between the check and the write. It changes
            # a row only when there is none or the one there has expired.
            cursor = db.execute(
                "INSERT INTO once_claims (key, until) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE once_claims.until <= ?",
                (key, until, time.time()),
            )
            return cursor.rowcount == 1

        return await self._run(claim, single_write=True)

    # Pipes ------------------------------------------------------------------------------------
    async def save_pipe(self, pipe: Pipe) -> None:
        data = json.dumps(pipe.to_json(), separators=(",", ":"))

        def save(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM pipes WHERE tenant = ? AND user = ?", (pipe.tenant_number, pipe.user_number))
            db.execute(
                "INSERT OR REPLACE INTO pipes (pipe_id, tenant, user, expires_at, data) VALUES (?, ?, ?, ?, ?)",
                (pipe.pipe_id, pipe.tenant_number, pipe.user_number, pipe.expires_at, data),
            )

        await self._run(save)

    async def get_pipe(self, pipe_id: str) -> Pipe | None:
        row = await self._run(
            lambda db: db.execute("SELECT data FROM pipes WHERE pipe_id = ?", (pipe_id,)).fetchone(),
            single_write=True,
        )
        return None if row is None else Pipe.from_json(json.loads(row[0]))

    async def pipe_for(self, tenant_number: str, user_number: str, now: float) -> Pipe | None:
        return await self._run(lambda db: _select_pipe(db, tenant_number, user_number, now), single_write=True)

    async def delete_pipe(self, pipe_id: str) -> bool:
        cursor = await self._run(
            lambda db: db.execute("DELETE FROM pipes WHERE pipe_id = ?", (pipe_id,)), single_write=True
        )
        return bool(cursor.rowcount == 1)

    # Jobs -------------------------------------------------------------------------------------
    async def enqueue_job(self, job: Job) -> bool:
        payload = json.dumps(job.payload, separators=(",", ":"))
        return await self._run(lambda db: _enqueue_job(db, job, payload), single_write=True)

    async def lease_jobs(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[Job]:
        def lease(db: sqlite3.Connection) -> list[Job]:
            # A job is due when nothing earlier with its order key is still queued or leased.
            rows = db.execute(
                "SELECT job_id, kind, payload, order_key, run_at, attempts, last_error, begun_attempt FROM jobs AS j"
                " WHERE (state = 'queued' OR (state = 'leased' AND lease_until <= :now)) AND run_at <= :now"
                " AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs AS e WHERE e.order_key = j.order_key"
                "      AND e.seq < j.seq AND e.state IN ('queued', 'leased')))"
                " ORDER BY seq LIMIT :limit",
                {"now": now, "limit": limit},
            ).fetchall()
            jobs = []
            for job_id, kind, payload, order_key, run_at, attempts, last_error, begun in rows:
                db.execute(
                    "UPDATE jobs SET state = 'leased', owner = ?, lease_until = ?, attempts = attempts + 1"
                    " WHERE job_id = ?",
                    (owner, now + lease_seconds, job_id),
                )
                jobs.append(
                    Job(job_id, kind, json.loads(payload), order_key, run_at, attempts + 1, last_error, begun, owner)
                )
            return jobs

        return await self._run(lease)

    async def pending_job_count(self) -> int:
        row = await self._run(
            lambda db: db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased')").fetchone(),
            single_write=True,
        )
        return int(row[0])

    async def extend_job_leases(self, owner: str, job_ids: Sequence[str], until: float) -> None:
        if job_ids:
            await self._run(
                lambda db: db.executemany(
                    "UPDATE jobs SET lease_until = ? WHERE job_id = ? AND owner = ? AND state = 'leased'",
                    [(until, job_id, owner) for job_id in job_ids],
                )
            )

    async def complete_job(self, job_id: str) -> None:
        await self._run(lambda db: _complete_job(db, job_id), single_write=True)

    async def retry_job(self, job_id: str, run_at: float, error: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', owner = NULL, run_at = ?, last_error = ? WHERE job_id = ?",
                (run_at, error, job_id),
            ),
            single_write=True,
        )

    async def defer_job(self, job_id: str, run_at: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', owner = NULL, run_at = ?, attempts = MAX(attempts - 1, 0),"
                " begun_attempt = MIN(begun_attempt, MAX(attempts - 1, 0)) WHERE job_id = ? AND state = 'leased'",
                (run_at, job_id),
            ),
            single_write=True,
        )

    async def begin_job(self, job: Job) -> None:
        if not await self._run(lambda db: _begin_job(db, job), single_write=True):
            raise LeaseLost(job.job_id)

    async def dead_letter_job(self, job_id: str, error: str, now: float) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'dead', owner = NULL, last_error = ?, run_at = ? WHERE job_id = ?",
                (error, now, job_id),
            ),
            single_write=True,
        )

    async def dead_letters(self, limit: int) -> list[Job]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT job_id, kind, payload, order_key, run_at, attempts, last_error, begun_attempt FROM jobs"
                " WHERE state = 'dead' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall(),
            single_write=True,
        )
        return [Job(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

    async def replay_dead_letter(self, job_id: str, now: float) -> bool:
        cursor = await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, begun_attempt = MIN(begun_attempt, 0), run_at = ?,"
                " seq = (SELECT MAX(seq) + 1 FROM jobs) WHERE job_id = ? AND state = 'dead'",
                (now, job_id),
            ),
            single_write=True,
        )
        return bool(cursor.rowcount == 1)

    # A turn's and a send's combined reads and writes: one batch entry (one round trip) each -----
    async def begin_turn(self, tenant_number: str, user_number: str, now: float) -> TurnStart:
        def begin(db: sqlite3.Connection) -> TurnStart:
            pipe = _select_pipe(db, tenant_number, user_number, now)
            if pipe is not None:
                return TurnStart(pipe, None, [])
            session = _select_session(db, tenant_number, user_number)
            return TurnStart(None, session, _pop_sms_errors(db, tenant_number, user_number))

        return await self._run(begin, single_write=True)  # reads, then at most the errors' DELETE

    async def end_turn(
        self, session: Session, *, ended: bool, inbound_key: str | None, jobs: Sequence[Job] = ()
    ) -> int:
        data = None if ended else json.dumps(session.to_json(), separators=(",", ":"))
        payloads = [(job, json.dumps(job.payload, separators=(",", ":"))) for job in jobs]

        def end(db: sqlite3.Connection) -> int:
            queued = sum(_enqueue_job(db, job, payload) for job, payload in payloads)
            if data is None:
                _delete_session(db, session.tenant_number, session.user_number, session.session_id)
            else:
                _save_session(db, session, data)
            if inbound_key is not None:
                _complete_inbound(db, inbound_key)
            return queued

        return await self._run(end, single_write=inbound_key is None and not payloads)

    async def begin_send(
        self,
        slot_key: str,
        cap: SenderRate | None,
        now: float,
        record: OutboundRecord,
        max_wait: float = math.inf,
        job: Job | None = None,
    ) -> float:
        def begin(db: sqlite3.Connection) -> float:
            if job is not None:
                _holds_job(db, job)  # first: a send refused writes nothing
            wait = _reserve_send_slot(db, slot_key, cap, now, max_wait)
            _record_outbound(db, record)
            if job is not None and wait <= 0:
                _begin_job(db, job)
            return wait

        return await self._run(begin)

    async def complete_send(self, job_id: str, record: OutboundRecord) -> None:
        def complete(db: sqlite3.Connection) -> None:
            _record_outbound(db, record)
            _complete_job(db, job_id)

        await self._run(complete)

    # Retention --------------------------------------------------------------------------------
    async def prune_finished(self, before: float, limit: int) -> int:
        def prune(db: sqlite3.Connection) -> int:
            removed = 0
            last = _last_before(db, "inbound", "seq", "created_at", before)
            if last is not None:
                removed += db.execute(
                    "DELETE FROM inbound WHERE key IN (SELECT key FROM inbound WHERE done = 1 AND seq <= ?"
                    " ORDER BY seq LIMIT ?)",
                    (last, limit),
                ).rowcount
            last = _last_before(db, "jobs", "seq", "run_at", before)
            if last is not None:
                removed += db.execute(
                    "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE state = 'done' AND seq <= ?"
                    " ORDER BY seq LIMIT ?)",
                    (last, limit),
                ).rowcount
            for table, when in (("outbound", "first_attempt_at"), ("statuses", "at")):
                last = _last_before(db, table, "rowid", when, before)
                if last is not None:
                    removed += db.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE rowid <= ?"
                        " ORDER BY rowid LIMIT ?)",
                        (last, limit),
                    ).rowcount
            removed += db.execute(
                "DELETE FROM pipes WHERE pipe_id IN (SELECT pipe_id FROM pipes WHERE expires_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount
            removed += db.execute(
                "DELETE FROM once_claims WHERE key IN (SELECT key FROM once_claims WHERE until <= ? LIMIT ?)",
                (time.time(), limit),
            ).rowcount
            return removed

        return await self._run(prune)

    # Lease owners -----------------------------------------------------------------------------
    async def beat_owner(self, owner: Owner, ttl_seconds: float, now: float) -> bool:
        def beat(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT alive_until FROM owners WHERE owner_id = ?", (owner.owner_id,)).fetchone()
            db.execute(
                "INSERT INTO owners (owner_id, machine, pid, started, alive_until) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (owner_id) DO UPDATE SET alive_until = excluded.alive_until",
                (owner.owner_id, owner.machine, owner.pid, owner.started, now + ttl_seconds),
            )
            return row is not None and row[0] > now

        return await self._run(beat, single_write=True)

    async def owners(self, now: float) -> list[OwnerState]:
        rows = await self._run(
            lambda db: db.execute("SELECT owner_id, machine, pid, started, alive_until FROM owners").fetchall(),
            single_write=True,
        )
        return [
            OwnerState(Owner(owner_id, machine, pid, started), alive_until > now)
            for owner_id, machine, pid, started, alive_until in rows
        ]

    async def end_owner(self, owner_id: str) -> None:
        await self._run(
            lambda db: db.execute("UPDATE owners SET alive_until = 0 WHERE owner_id = ?", (owner_id,)),
            single_write=True,
        )

    async def release_owners(self, owner_ids: Sequence[str], now: float, job_settle_seconds: float = 0.0) -> list[str]:
        def release(db: sqlite3.Connection) -> list[str]:
            released = []
            for owner_id in owner_ids:
                if (
                    db.execute("DELETE FROM owners WHERE owner_id = ? AND alive_until <= ?", (owner_id, now)).rowcount
                    == 0
                ):
                    continue  # alive again, or released already
                # Only heads of conversations are leased, and only active jobs: the indexes of those.
                db.execute(
                    "UPDATE inbound INDEXED BY inbound_heads SET lease_until = 0"
                    " WHERE head = 1 AND done = 0 AND owner = ?",
                    (owner_id,),
                )
                # An attempt that had not begun (Job.begun) is free at once; one that had, once it has settled.
                db.execute(
                    "UPDATE jobs SET lease_until = CASE WHEN begun_attempt IS NULL OR begun_attempt >= attempts"
                    " THEN MIN(lease_until, ?) ELSE 0 END WHERE state = 'leased' AND owner = ?",
                    (now + job_settle_seconds, owner_id),
                )
                released.append(owner_id)
            return released

        return await self._run(release)

    # Sending pace -----------------------------------------------------------------------------
    async def reserve_send_slot(
        self, key: str, cap: SenderRate | None, now: float, max_wait: float = math.inf
    ) -> float:
        return await self._run(lambda db: _reserve_send_slot(db, key, cap, now, max_wait), single_write=True)

    async def slow_sender(
        self, key: str, now: float, paced_at: float, retry_after: float | None, start_rate: float
    ) -> Pace:
        return await self._run(
            lambda db: _slow_sender(db, key, now, paced_at, retry_after, start_rate), single_write=True
        )
