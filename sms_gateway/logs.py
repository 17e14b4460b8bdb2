"""structlog set-up: JSON lines, phone numbers redacted unless the operator asks, secrets never logged."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are phone numbers in our log events.
PHONE_KEYS = frozenset({"user", "tenant", "from_number", "to_number", "user_number", "tenant_number"})
# Keys that must never reach a log line, whoever passes them.
SECRET_KEYS = frozenset({"password", "token", "auth_token", "apikey", "authorization", "bearer_token", "secret"})


def redact_number(number: str) -> str:
    """Keep the last two digits, enough to tell two users apart in one incident, not to identify them."""
    digits = [ch for ch in number if ch.isdigit()]
    if len(digits) <= 4:
        return "***"
    return "***" + "".join(digits[-2:])


def make_redactor(redact_numbers: bool) -> structlog.types.Processor:
    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            if key in SECRET_KEYS:
                event[key] = "****"
            elif redact_numbers and key in PHONE_KEYS and isinstance(event[key], str):
                event[key] = redact_number(event[key])
        return event

    return redact


class BatchedLineWriter:
    """structlog's logger: lines written on the event loop go out together once per loop iteration.

    A write (and flush) per line costs a system call, and on a busy one-core process the GIL round trip that
    comes with it; under load many lines fall in one iteration, so batching them is much cheaper. A line
    logged outside a running loop (start-up, a worker thread) is written at once; atexit writes whatever is
    left, so a clean exit loses nothing.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(message)
            if loop is not None and self._flush_on is loop:
                return
            stale = self._flush_on is not None  # scheduled on a loop that is no longer the one running here
            if loop is not None and not stale:
                self._flush_on = loop
                loop.call_soon(self.flush)
                return
        self.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
            self._flush_on = None
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):  # a closed or broken stream must not take the gateway down
                    pass


def configure_logging(level: str = "info", redact_numbers: bool = True, stream: Any = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            make_redactor(redact_numbers),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_factory(BatchedLineWriter(stream or sys.stdout)),
        cache_logger_on_first_use=False,
    )
    # aiohttp's access log is the stdlib's; keep it at warning so numbers in query strings don't leak.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _factory(writer: BatchedLineWriter) -> Any:
    def make(*_: Any) -> BatchedLineWriter:
        return writer

    return make
