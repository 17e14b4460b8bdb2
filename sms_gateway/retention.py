"""Forgets finished work once its retention window has passed, so a long-running gateway's store stops growing.

Stores whose keys expire by themselves (Redis) have nothing to prune; SQLite and the memory store do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from sms_gateway.jobs import sweep_forever
from sms_gateway.store.base import RETENTION_SECONDS, Store

log = structlog.get_logger("sms_gateway.retention")


class RetentionSweeper:
    def __init__(
        self,
        store: Store,
        *,
        retention_seconds: float = RETENTION_SECONDS,
        interval: float = 60.0,
        batch: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention_seconds = retention_seconds
        self.interval = interval
        self.batch = batch  # rows per kind per store operation: keeps each transaction short under load
        self.clock = clock

    async def run(self) -> None:
        await sweep_forever("retention_sweeper", self.sweep, self.interval)

    async def sweep(self) -> int:
        total = 0
        while True:
            removed = await self.store.prune_finished(self.clock() - self.retention_seconds, self.batch)
            total += removed
            if removed < self.batch:
                break
            await asyncio.sleep(0)  # let webhooks and turns in between two batches
        if total:
            log.info("finished_work_pruned", rows=total, retention_days=round(self.retention_seconds / 86400, 2))
        return total
