"""Logging set-up: every line one JSON object, phone numbers redacted unless the operator asks, secrets never.

Our own events go through structlog; every stdlib logger (aiohttp.server, aiohttp.access, asyncio, the root)
is routed through the same processors, so aiohttp's "Error handling request" is a JSON line too, not a
multi-line traceback. What a client did wrong (a malformed request, a body that does not decode, a hang-up)
is logged by aiohttp as an error with a traceback: here it is an `info` line with the error's text.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

# Keys whose values are phone numbers in our log events.
PHONE_KEYS = frozenset({"user", "tenant", "from_number", "to_number", "user_number", "tenant_number"})
# Keys that must never reach a log line, whoever passes them.
SECRET_KEYS = frozenset({"password", "token", "auth_token", "apikey", "authorization", "bearer_token", "secret"})
# Keys whose values are never free text with a number in it (with every "*_id": ids are ours or a provider's;
# "event" is checked: for a stdlib record it holds the message).
_NOT_TEXT_KEYS = frozenset({"timestamp", "level", "logger"})

# A phone number inside free text, e.g. a provider's "The 'To' number +15551230001 is not a valid phone
# number": E.164 (formatted or not), a bare run of 10-15 digits, or a US local format. Shorter digit runs
# (dates, ports, codes, counts) are left alone.
_NUMBER_IN_TEXT = re.compile(
    r"""(?<![\w+.])(?:
          \+\d(?:[ ().-]{0,2}\d){6,14}
        | \d{10,15}
        | \(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}
    )(?![\w]|\.\d)""",
    re.VERBOSE,
)

_DIGIT = re.compile(r"\d")

# Errors of aiohttp's server that a client causes: a request it cannot parse, a body that does not decode,
# a connection that goes away.
CLIENT_FAULTS = (HttpProcessingError, web.RequestPayloadError, ConnectionError)


def redact_number(number: str) -> str:
    """Keep the last two digits, enough to tell two users apart in one incident, not to identify them."""
    digits = [ch for ch in number if ch.isdigit()]
    if len(digits) <= 4:
        return "***"
    return "***" + "".join(digits[-2:])


def redact_numbers_in_text(text: str) -> str:
    if _DIGIT.search(text) is None:  # most values: a third of the full pattern's time
        return text
    return _NUMBER_IN_TEXT.sub(lambda match: redact_number(match[0]), text)


def _redact_free_text(value: Any) -> Any:
    if isinstance(value, str):
        return redact_numbers_in_text(value)
    if isinstance(value, list | tuple):
        return [_redact_free_text(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_free_text(item) for key, item in value.items()}
    return value


def make_redactor(redact_numbers: bool) -> structlog.types.Processor:
    def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            if key in SECRET_KEYS:
                event[key] = "****"
            elif not redact_numbers or key in _NOT_TEXT_KEYS or key.endswith("_id"):
                continue
            elif key in PHONE_KEYS and isinstance(event[key], str):
                event[key] = redact_number(event[key])
            else:
                event[key] = _redact_free_text(event[key])
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
    """Configure structlog and route the stdlib's loggers through it; calling it again replaces both set-ups."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    writer = BatchedLineWriter(stream or sys.stdout)
    # The exception is formatted before redaction, so a number quoted in an error's text is redacted too.
    last: list[structlog.types.Processor] = [make_redactor(redact_numbers), structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *last,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_factory(writer),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _client_faults_at_info(numeric),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            *last,
        ],
    )
    root = logging.getLogger()
    _remove_stdlib_route(root)
    handler = _StdlibRoute(writer, numeric)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp's access log would print each request's path and query: numbers and ids we do not log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def reset_logging() -> None:
    """Undo `configure_logging` (tests): structlog's defaults, the stdlib's root without our handler."""
    structlog.reset_defaults()
    root = logging.getLogger()
    _remove_stdlib_route(root)
    root.setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.NOTSET)


class _StdlibRoute(logging.Handler):
    """A stdlib record as one JSON line, written by the same writer as structlog's."""

    def __init__(self, writer: BatchedLineWriter, level: int) -> None:
        super().__init__(level)
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except structlog.DropEvent:
            return
        except Exception:
            self.handleError(record)
            return
        self._writer.msg(line)

    def flush(self) -> None:
        self._writer.flush()


def _remove_stdlib_route(root: logging.Logger) -> None:
    for handler in [h for h in root.handlers if isinstance(h, _StdlibRoute)]:
        root.removeHandler(handler)


def _client_faults_at_info(threshold: int) -> structlog.types.Processor:
    """aiohttp's error, with traceback, for what a client did wrong -> an info line with the error's text."""

    def downgrade(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        record = event.get("_record")
        exc_info = event.get("exc_info")
        if (
            not isinstance(record, logging.LogRecord)
            or not record.name.startswith("aiohttp.")
            or not isinstance(exc_info, tuple)
            or not isinstance(exc_info[1], CLIENT_FAULTS)
        ):
            return event
        if threshold > logging.INFO:
            raise structlog.DropEvent
        exc = exc_info[1]
        del event["exc_info"]
        event["level"] = "info"
        event["error"] = " ".join(f"{type(exc).__name__}: {exc}".split())
        return event

    return downgrade


def _factory(writer: BatchedLineWriter) -> Any:
    def make(*_: Any) -> BatchedLineWriter:
        return writer

    return make
