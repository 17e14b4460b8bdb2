"""What every outgoing HTTP call of the gateway shares: Basic credentials, Retry-After, error descriptions, and
one request to a provider's API as an `Answer` or a `TransportError` (no HTTP answer at all)."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from sms_gateway.model import SendOutcome, SendResult

# Codes of failures below a provider's API (no HTTP answer), shared by every provider's sender.
TIMEOUT = "timeout"  # the request may still be being processed: wait before asking the provider about it
CONNECTION_ERROR = "connectionError"
HTTP_ERROR = "httpError"
INVALID_URL = "invalidURL"  # the request never left
TRANSPORT_NOT_SENT = frozenset({INVALID_URL})


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, None when it is not."""
        return json_or_none(self.body)

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers.get("Retry-After"))

    def snippet(self) -> str:
        """`HTTP <status>` and the start of the body, for an error message."""
        text = self.body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}" + (f": {text}" if text else "")


class TransportError(Exception):
    """No HTTP answer: the request timed out, could not connect, broke off, or never left (bad URL)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def result(self) -> SendResult:
        # Only a request that never left is surely not sent; after any other the provider may have the message.
        outcome = SendOutcome.FAILED if self.code == INVALID_URL else SendOutcome.UNKNOWN
        return SendResult(outcome, error_code=self.code, error_message=self.message)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    client_timeout: aiohttp.ClientTimeout,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
    params: Mapping[str, str] | None = None,
    proxy: str | None = None,
    proxy_headers: Mapping[str, str] | None = None,
    what: str = "the provider",
) -> Answer:
    """One request, its answer read whole; TransportError when there is no answer. `what` names the peer in
    error messages."""
    try:
        async with http.request(
            method,
            url,
            data=data,
            params=params,
            headers=headers,
            timeout=client_timeout,
            proxy=proxy,
            proxy_headers=proxy_headers,
            allow_redirects=False,
        ) as response:
            return Answer(response.status, response.headers, await response.read())
    except TimeoutError as exc:
        raise TransportError(TIMEOUT, f"{what} did not answer in time") from exc
    except aiohttp.InvalidURL as exc:
        raise TransportError(INVALID_URL, f"the URL of {what} is not valid") from exc
    except aiohttp.ClientConnectionError as exc:
        raise TransportError(CONNECTION_ERROR, describe(exc)) from exc
    except aiohttp.ClientError as exc:
        raise TransportError(HTTP_ERROR, describe(exc)) from exc
