"""Moves SQLite's WAL checkpoints off the commit path.

SQLite checkpoints automatically inside the commit that takes the WAL past 1,000 pages: that commit, and every
acknowledgement waiting on it, pays for copying ~4 MB into the database file and an fsync of it, a stall of
several milliseconds every few seconds under load. Here a second connection on its own thread checkpoints
PASSIVE-ly (never waiting for, nor blocking, the writer) several times a second; the writer's own automatic
checkpoint stays on at a much larger size, only as a safety net should this fall behind or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import structlog

log = structlog.get_logger("sms_gateway.store.sqlite")

# The writer's own checkpoint, used only if the background one cannot keep up: 10,000 pages (~40 MB of WAL).
SAFETY_NET_PAGES = 10_000


class BackgroundCheckpointer:
    def __init__(self, path: str, synchronous: str, *, interval: float = 0.2) -> None:
        self._path = path
        self._synchronous = synchronous
        self.interval = interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._connect)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _connect(self) -> None:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._db.close()
            self._db = None

    def checkpoint(self) -> tuple[int, int, int]:
        """(busy, WAL pages, pages checkpointed) as SQLite reports them."""
        assert self._db is not None
        busy, wal_pages, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(wal_pages), int(copied)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await loop.run_in_executor(self._executor, self.checkpoint)
            except sqlite3.Error as exc:
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 1000 == 0:
                    log.warning("sqlite_checkpoint_failed", error=str(exc), failures=self.failures)
