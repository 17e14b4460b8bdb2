"""POST JSON to an engine with IBM's timeouts and retry count; answers must be JSON objects."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from sms_gateway.config.model import EngineConfig
from sms_gateway.engines.auth import Authorizer, basic_authorization
from sms_gateway.engines.base import EngineError
from sms_gateway.model import JSON

log = structlog.get_logger("sms_gateway.engines")

Sleep = Callable[[float], Awaitable[None]]
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0


class EngineHTTPError(EngineError):
    """The engine answered with an HTTP error; `error_message` is the text the body gives, if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        error_message: str | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, retryable=retryable)
        self.error_message = error_message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class HttpOptions:
    timeout: aiohttp.ClientTimeout
    max_retries: int = 2
    proxy: str | None = None
    proxy_headers: Mapping[str, str] | None = None
    backoff_s: float = 0.25
    max_backoff_s: float = 2.0

    @classmethod
    def from_config(cls, config: EngineConfig) -> HttpOptions:
        proxy = config.proxy
        auth = None
        if proxy and proxy.username:
            auth = {"Proxy-Authorization": basic_authorization(proxy.username, proxy.password or "")}
        connect, read = config.connect_timeout_ms / 1000, config.read_timeout_ms / 1000
        # IBM's convRetryInterval: the same wait before every retry.
        interval = None if config.retry_interval_ms is None else config.retry_interval_ms / 1000
        backoff = {} if interval is None else {"backoff_s": interval, "max_backoff_s": interval}
        return cls(
            # sock_read bounds each wait for bytes, so an engine trickling a byte at a time would never time out:
            # `total` bounds the whole call (as the providers' transport does).
            timeout=aiohttp.ClientTimeout(total=connect + read, sock_connect=connect, sock_read=read),
            max_retries=max(0, config.max_retries),
            proxy=proxy.url if proxy else None,
            proxy_headers=auth,
            **backoff,
        )

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * 2**attempt))


class JsonClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        authorizer: Authorizer,
        options: HttpOptions,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        self._http = http
        self._authorizer = authorizer
        self.options = options
        self._sleep = sleep or asyncio.sleep

    async def post(self, url: str, body: JSON, *, params: Mapping[str, str] | None = None) -> JSON:
        """POST `body`; retry timeouts, connection errors, 429 and 5xx up to `max_retries` times."""
        attempt = 0
        while True:
            try:
                return await self._attempt(url, body, params)
            except EngineError as exc:
                if not exc.retryable or attempt >= self.options.max_retries:
                    raise
                delay = self.options.backoff(attempt)
                if isinstance(exc, EngineHTTPError) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                attempt += 1
                log.warning("engine_retry", error=str(exc), status=exc.status, attempt=attempt, delay_s=delay)
                await self._sleep(delay)

    async def _attempt(self, url: str, body: JSON, params: Mapping[str, str] | None) -> JSON:
        headers = await self._authorizer.headers()
        headers["Accept"] = "application/json"
        headers["Content-Type"] = "application/json"
        try:
            async with self._http.post(
                url,
                data=json.dumps(body, separators=(",", ":")).encode(),
                params=params,
                headers=headers,
                timeout=self.options.timeout,
                proxy=self.options.proxy,
                proxy_headers=self.options.proxy_headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                raw = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise EngineError(f"engine unreachable: {_describe(exc)}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise EngineError(f"engine request failed: {_describe(exc)}") from exc

        parsed = _json(raw)
        if not 200 <= status < 300:
            raise _http_error(status, parsed, retry_after)
        if not isinstance(parsed, dict):
            raise EngineError(f"engine answered HTTP {status} with no JSON object", status=status)
        return parsed


def _http_error(status: int, parsed: object, retry_after: str | None) -> EngineHTTPError:
    error_message = _error_message(parsed)
    message = f"engine answered HTTP {status}" + (f": {error_message}" if error_message else "")
    retryable = status in RETRY_STATUSES
    return EngineHTTPError(
        message,
        status=status,
        retryable=retryable,
        error_message=error_message,
        retry_after=_seconds(retry_after) if retryable else None,
    )


def _error_message(parsed: object) -> str | None:
    """The error text the way ibm-cloud-sdk-core's ApiException finds it."""
    if not isinstance(parsed, dict):
        return None
    errors = parsed.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0].get("message")
        if isinstance(first, str):
            return first
    for key in ("error", "message", "errorMessage"):
        value = parsed.get(key)
        if isinstance(value, str):
            return value
    return None


def _seconds(value: str | None) -> float | None:
    """A delta-seconds Retry-After, capped; an HTTP date or garbage falls back to our own backoff."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return min(seconds, MAX_RETRY_AFTER_S) if seconds >= 0 else None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__} {exc}".strip()


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:  # includes UnicodeDecodeError
        return None
