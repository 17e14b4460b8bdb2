"""Refused webhooks, logged once per cause: the first at warning with the hint that fixes it, then at most once
per interval with how many were refused since (the metrics count every one).

A misconfiguration refuses every request, and an attacker can send as many as they like: one line per request
would bury the hint or flood the log. Causes are keyed by what the configuration bounds (the route, the
outcome, the tenant), never by what a caller sends (its `To`, its URL), so the table stays small.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("sms_gateway.web.webhooks")

REPEAT_INTERVAL_S = 300.0


@dataclass(slots=True)
class _Cause:
    logged_at: float
    refused_since: int = 0  # refused after the last line, not yet logged


class RejectionLog:
    def __init__(self, *, interval: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._causes: dict[tuple[str, str, str], _Cause] = {}

    def refused(self, route: str, outcome: str, tenant: str | None, **fields: Any) -> None:
        """Log this refusal if its cause (route, outcome, tenant) was not logged within the interval.

        `fields` are the line's: the reason, the hint, the tenant number and the like; never a secret."""
        key = (route, outcome, tenant or "")
        now = self._clock()
        cause = self._causes.get(key)
        if cause is not None and now - cause.logged_at < self._interval:
            cause.refused_since += 1
            return
        repeated = cause.refused_since if cause is not None else 0
        self._causes[key] = _Cause(now)
        if tenant is not None:
            fields["tenant"] = tenant
        log.warning("webhook_rejected", route=route, outcome=outcome, refused_since_last_logged=repeated, **fields)
