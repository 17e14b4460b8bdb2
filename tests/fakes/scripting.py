"""What a test told a fake to do for its next requests instead of its job: answer with an error, or wait first.

Each fake builds its own vendor's error and says which requests the script applies to; the queueing is here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Generic, TypeVar

E = TypeVar("E")


class Script(Generic[E]):
    def __init__(self) -> None:
        self._errors: deque[E] = deque()
        self._waits: deque[float] = deque()

    def fail(self, error: E, count: int) -> None:
        """Answer the next `count` requests with `error`."""
        self._errors.extend([error] * count)

    def delay(self, seconds: float, count: int) -> None:
        """Wait `seconds` before handling each of the next `count` requests.

        The request is still processed after the wait even when the client has given up, as a real server
        would: a timed-out send may well have been sent.
        """
        self._waits.extend([seconds] * count)

    @property
    def delaying(self) -> bool:
        """Whether the next request waits first."""
        return bool(self._waits)

    async def wait(self) -> None:
        """Make the next request's scripted wait, if it has one."""
        if self._waits:
            await asyncio.sleep(self._waits.popleft())

    def next_error(self) -> E | None:
        """The error the next request is answered with, if one is scripted."""
        return self._errors.popleft() if self._errors else None

    def clear(self) -> None:
        self._errors.clear()
        self._waits.clear()


def retry_after_header(value: str | float | None) -> str | None:
    """A scripted Retry-After as the header's text: a string as given, a whole number of seconds without ".0"."""
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


class RateLimit:
    """A provider's throughput limit: at most `per_second` requests taken in any one-second window; the fake
    answers the others with its vendor's rate-limit error (carrying `retry_after`, seconds, as Retry-After).

    `refused` counts the requests it refused, `taken_at` when (monotonic) each one it let through was taken."""

    def __init__(self, per_second: int, retry_after: float | None = 1.0) -> None:
        self.per_second = per_second
        self.retry_after = retry_after
        self.refused = 0
        self.taken_at: list[float] = []
        self._window: deque[float] = deque()

    def take(self) -> bool:
        """Whether one more request may go through now (and if so, it is counted)."""
        now = time.monotonic()
        while self._window and self._window[0] <= now - 1.0:
            self._window.popleft()
        if len(self._window) >= self.per_second:
            self.refused += 1
            return False
        self._window.append(now)
        self.taken_at.append(now)
        return True
