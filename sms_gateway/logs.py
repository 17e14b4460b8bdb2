"""structlog set-up: JSON lines, phone numbers redacted unless the operator asks, secrets never logged."""

from __future__ import annotations

import logging
import sys
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
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    # aiohttp's access log is the stdlib's; keep it at warning so numbers in query strings don't leak.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
