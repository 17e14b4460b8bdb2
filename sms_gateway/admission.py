"""Webhooks before turns: how many turns run at once adapts to how late the event loop is.

A webhook must be acknowledged in milliseconds; a turn can wait, its message is already stored. When more
work arrives than the process's core can do, every request waits in the loop behind every turn step that is
ready to run. So the number of turns allowed to run shrinks while the loop is late and grows back while it is
punctual (additive increase, multiplicative decrease), between a floor and the configured concurrency:
webhooks stay fast, turns use the rest of the core, and the backlog drains once the burst is over.
"""

from __future__ import annotations

import asyncio
from collections import deque


class AdaptiveLimit:
    """A semaphore whose size moves between `minimum` and `maximum`."""

    def __init__(self, maximum: int, minimum: int = 4) -> None:
        self.maximum = max(1, maximum)
        self.minimum = max(1, min(minimum, self.maximum))
        self.limit = float(self.maximum)
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self.in_use < int(self.limit) and not self._waiters:
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the releaser counted us in already
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted and cancelled at once: give the slot on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *_: object) -> None:
        self._release()

    def _release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)

    def late(self) -> None:
        self.limit = max(float(self.minimum), self.limit * 0.5)

    def punctual(self) -> None:
        self.limit = min(float(self.maximum), self.limit + 1.0)
        self._wake()


class LoopLagGovernor:
    """Measures how late the loop runs a timer and tells the limits: late above `target_lag` seconds."""

    def __init__(self, limits: list[AdaptiveLimit], *, interval: float = 0.02, target_lag: float = 0.002) -> None:
        self.limits = limits
        self.interval = interval
        self.target_lag = target_lag
        self.last_lag = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            self.last_lag = max(0.0, loop.time() - started - self.interval)
            for limit in self.limits:
                if self.last_lag > self.target_lag:
                    limit.late()
                else:
                    limit.punctual()
