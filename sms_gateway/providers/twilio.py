"""Twilio Programmable Messaging: inbound webhooks, status callbacks, signature checks and sending.

Sending talks to `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with our own aiohttp session rather
than twilio-python's client: its async client ignores timeouts and proxies, and retries POSTs on any 5xx
without honouring `Retry-After` (shared/reference/twilio.md §7). twilio-python is used only for
`RequestValidator` (the reference signature algorithm) and `MessagingResponse` (TwiML).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import structlog
from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from sms_gateway.config.model import ProviderConfig
from sms_gateway.model import DeliveryStatus, InboundMessage, Media, OutboundMessage, SendResult
from sms_gateway.providers.base import InvalidRequest

log = structlog.get_logger("sms_gateway.providers.twilio")

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML_CONTENT_TYPE = "text/xml"

# The spec's pattern for a Message SID (schema `api.v2010.account.message`). Kept strict: SMS/MMS webhooks
# always carry SM/MM ids, and anything else is more likely a forged or broken request than a new Twilio id.
MESSAGE_SID_RE = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")

MAX_ADDRESS_CHARS = 64
# Twilio caps bodies at 1,600 characters; more than this is not a Twilio request.
MAX_INBOUND_BODY_CHARS = 10_000
MAX_MEDIA = 10  # Twilio never sends more than 10 media per inbound message
MAX_MEDIA_URL_CHARS = 4096
MAX_CONTENT_TYPE_CHARS = 255
MAX_ERROR_CODE_CHARS = 16
MAX_ERROR_MESSAGE_CHARS = 2000

# `message_enum_status` in Twilio's OpenAPI spec.
MESSAGE_STATUSES = frozenset(
    {
        "queued",
        "sending",
        "sent",
        "failed",
        "delivered",
        "undelivered",
        "receiving",
        "received",
        "accepted",
        "scheduled",
        "read",
        "partially_delivered",
        "canceled",
    }
)
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "read", "received", "canceled"})

# Throttling codes: the request was not processed, so sending again later is safe.
RETRYABLE_CODES = frozenset(
    {
        20429,  # too many requests (REST API concurrency)
        14107,  # message rate limit exceeded
        30001,  # queue overflow
        30022,  # US A2P 10DLC rate limit exceeded
    }
)
# Errors about the message itself: sending it again can only fail again.
NON_RETRYABLE_CODES = frozenset(
    {
        21211,  # invalid 'To' number
        21408,  # permission to send to this region not enabled
        21602,  # body or media required
        21606,  # 'From' not a valid message-capable number
        21608,  # unverified 'To' on a trial account
        21610,  # recipient unsubscribed (STOP)
        21612,  # 'To'/'From' combination cannot be used
        21614,  # 'To' is not a mobile number
        21617,  # body over 1,600 characters
        21620,  # invalid media URL
        21623,  # more than 10 media
        21635,  # 'To' is a landline
        21658,  # parameter over its character limit
        20003,  # authentication failed
    }
)

DEFAULT_RETRY_AFTER_CAP = 30.0
DEFAULT_BACKOFF_CAP = 20.0

_EMPTY_TWIML: str = str(MessagingResponse())


def empty_twiml() -> str:
    """`<?xml …?><Response />`: acknowledge an inbound message without replying (serve as text/xml)."""
    return _EMPTY_TWIML


def twilio_status_is_final(status: str) -> bool:
    """True when Twilio sends no further status callbacks for the message after this one."""
    return status.strip().lower() in FINAL_STATUSES


def twilio_code_is_retryable(code: int | None) -> bool:
    return code in RETRYABLE_CODES


# ------------------------------------------------------------------------------ inbound


def _text(form: Mapping[str, object], name: str, *, max_chars: int) -> str | None:
    """A form field as a string, None when absent; InvalidRequest when not text or too long."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a text field")
    if len(value) > max_chars:
        raise InvalidRequest(f"{name} is longer than {max_chars} characters")
    return value


def _first_text(form: Mapping[str, object], names: Sequence[str], *, max_chars: int) -> str | None:
    for name in names:
        value = _text(form, name, max_chars=max_chars)
        if value:
            return value
    return None


def _message_sid(form: Mapping[str, object]) -> str:
    sid = _first_text(form, ("MessageSid", "SmsMessageSid", "SmsSid"), max_chars=64)
    if sid is None:
        raise InvalidRequest("MessageSid is missing")
    sid = sid.strip()
    if not MESSAGE_SID_RE.fullmatch(sid):
        raise InvalidRequest("MessageSid is not a Twilio message SID (SM/MM + 32 hex digits)")
    return sid


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


def _address(form: Mapping[str, object], name: str) -> str | None:
    return _blank_to_none(_text(form, name, max_chars=MAX_ADDRESS_CHARS))


def _required_address(form: Mapping[str, object], name: str) -> str:
    value = _address(form, name)
    if value is None:
        raise InvalidRequest(f"{name} is missing")
    return value


def _num_media(form: Mapping[str, object]) -> int:
    """NumMedia as an int 0..10. Absent means "look at what is there" (up to Twilio's 10)."""
    raw = _text(form, "NumMedia", max_chars=8)
    if raw is None or not raw.strip():
        return MAX_MEDIA
    if not re.fullmatch(r"[0-9]{1,2}", raw.strip()):
        raise InvalidRequest("NumMedia must be a whole number from 0 to 10")
    count = int(raw)
    if count > MAX_MEDIA:
        raise InvalidRequest("NumMedia must be a whole number from 0 to 10")
    return count


_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")


def is_http_url(url: str) -> bool:
    """An absolute http(s) URL with a host (no reachability judgement: see sms_gateway.media for that)."""
    if _SPACE_OR_CONTROL.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _media(form: Mapping[str, object]) -> tuple[Media, ...]:
    """MediaUrl{N}/MediaContentType{N} for N < NumMedia, in Twilio's order.

    NumMedia is trusted as an upper bound only: a MediaUrl{N} missing below it is skipped (a shorter list
    beats dropping the whole message), and MediaUrl{N} at or beyond it is ignored.
    """
    media: list[Media] = []
    for n in range(_num_media(form)):
        url = _text(form, f"MediaUrl{n}", max_chars=MAX_MEDIA_URL_CHARS)
        if not url:
            continue
        if not is_http_url(url):
            raise InvalidRequest(f"MediaUrl{n} is not an http(s) URL")
        content_type = _text(form, f"MediaContentType{n}", max_chars=MAX_CONTENT_TYPE_CHARS)
        media.append(Media(url=url, content_type=_blank_to_none(content_type)))
    return tuple(media)


def parse_inbound(form: Mapping[str, object]) -> InboundMessage:
    """Twilio's inbound-message webhook form -> InboundMessage; InvalidRequest when it is malformed.

    Accepts a plain dict or aiohttp's `MultiDictProxy` (`await request.post()`); with repeated keys the
    first value counts.
    """
    sid = _message_sid(form)
    user = _required_address(form, "From")
    tenant = _required_address(form, "To")
    body = _text(form, "Body", max_chars=MAX_INBOUND_BODY_CHARS) or ""
    return InboundMessage(
        provider=PROVIDER,
        message_id=sid,
        tenant_number=tenant,
        user_number=user,
        text=body,
        media=_media(form),
    )


# ------------------------------------------------------------------------------ status callbacks


def parse_status(form: Mapping[str, object], our_message_id: str | None = None) -> DeliveryStatus:
    """A status callback form -> DeliveryStatus. `our_message_id` comes from our callback URL (`?mid=`)."""
    sid = _message_sid(form)
    raw_status = _first_text(form, ("MessageStatus", "SmsStatus"), max_chars=32)
    if raw_status is None:
        raise InvalidRequest("MessageStatus is missing")
    status = raw_status.strip().lower()
    if status not in MESSAGE_STATUSES:
        raise InvalidRequest("MessageStatus is not a Twilio message status")
    error_code = _text(form, "ErrorCode", max_chars=MAX_ERROR_CODE_CHARS)
    error_message = _text(form, "ErrorMessage", max_chars=MAX_ERROR_MESSAGE_CHARS)
    return DeliveryStatus(
        provider=PROVIDER,
        provider_message_id=sid,
        status=status,
        our_message_id=our_message_id or None,
        error_code=_blank_to_none(error_code),
        error_message=error_message or None,
        # On an outbound message From is our (tenant) number and To is the user.
        tenant_number=_address(form, "From"),
        user_number=_address(form, "To"),
    )


# ------------------------------------------------------------------------------ signatures


def _first_header_value(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def signature_url(public_url: str | None, request: web.BaseRequest) -> str:
    """The URL Twilio signed for this request.

    `public_url` is the external base the gateway's root is reachable at (e.g. `https://sms.example.com`, or
    `https://example.com/gw` behind a proxy that strips `/gw`); the request's raw path and query are appended
    byte-exact, since re-encoding the query breaks the signature. Without it the URL is rebuilt from
    `X-Forwarded-Proto`/`X-Forwarded-Host` (first value of each), else from the request itself.
    """
    if public_url:
        return public_url.rstrip("/") + request.raw_path
    proto = _first_header_value(request.headers.get("X-Forwarded-Proto"))
    scheme = proto.lower() if proto and proto.lower() in ("http", "https") else request.scheme
    host = _first_header_value(request.headers.get("X-Forwarded-Host")) or request.host
    return f"{scheme}://{host}{request.raw_path}"


def verify_signature(
    url: str,
    params: Mapping[str, object] | None,
    signature: str | None,
    auth_token: str,
    *,
    algorithm: str | None = None,
) -> bool:
    """Check `X-Twilio-Signature` with twilio-python's reference validator.

    `params` is the POST form (dict or aiohttp `MultiDictProxy`; repeated keys are handled), or None for GET.
    A missing signature or an empty auth token never validates. `algorithm` is for SharedKey-signed webhooks
    (`X-Twilio-Webhooks-Signature-Settings`); the default is Twilio's HMAC-SHA1.
    """
    if not signature or not auth_token:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, params or {}, signature, algorithm))
    except (ValueError, TypeError, UnicodeError):
        # A bad port in the URL, non-text form values, or an unknown algorithm.
        return False


# ------------------------------------------------------------------------------ sending

AttemptHook = Callable[[int, SendResult], None]


@dataclass(frozen=True, slots=True)
class _Attempt:
    result: SendResult
    retry_after: float | None = None


def basic_auth_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds; HTTP-date values are ignored (plain backoff applies)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _error_fields(payload: Any) -> tuple[int | None, str | None]:
    """(code, message) from Twilio's error JSON `{"code", "message", "more_info", "status"}`."""
    if not isinstance(payload, dict):
        return None, None
    raw_code = payload.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    if isinstance(raw_code, str) and raw_code.isdigit():
        code = int(raw_code)
    message = payload.get("message")
    return code, message if isinstance(message, str) else None


def _is_retryable(http_status: int, code: int | None) -> bool:
    if code in NON_RETRYABLE_CODES:
        return False
    return http_status == 429 or http_status >= 500 or code in RETRYABLE_CODES


def build_form(message: OutboundMessage, status_callback_url: str | None) -> list[tuple[str, str]]:
    """The Messages.json form; `MediaUrl` repeats once per media."""
    form = [("To", message.user_number), ("From", message.tenant_number)]
    if message.text:
        form.append(("Body", message.text))
    form.extend(("MediaUrl", url) for url in message.media_urls)
    if status_callback_url:
        form.append(("StatusCallback", status_callback_url))
    return form


class TwilioSender:
    """Sends one OutboundMessage through Twilio's REST API, retrying what Twilio says is retryable.

    Never raises for HTTP or network problems: every outcome is a SendResult. A final failed result with
    `retryable=True` means the retries ran out and the caller may try again later.
    """

    def __init__(
        self,
        config: ProviderConfig,
        http: aiohttp.ClientSession,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        backoff_base: float = 0.5,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        retry_after_cap: float = DEFAULT_RETRY_AFTER_CAP,
        on_attempt: AttemptHook | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._http = http
        self._sleep = sleep
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retry_after_cap = retry_after_cap
        self._on_attempt = on_attempt
        self._jitter = jitter
        self._headers = {
            "Authorization": basic_auth_header(config.username, config.password),
            "Accept": "application/json",
        }
        # The form is encoded by us: aiohttp's FormData builds a multipart writer for every request.
        self._post_headers = self._headers | {"Content-Type": "application/x-www-form-urlencoded"}
        connect = config.connect_timeout_ms / 1000
        read = config.read_timeout_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=connect + read, sock_connect=connect, sock_read=read)
        proxy = config.proxy
        self._proxy = proxy.url if proxy else None
        self._proxy_headers: dict[str, str] | None = None
        if proxy and proxy.username:
            proxy_auth = {"Proxy-Authorization": basic_auth_header(proxy.username, proxy.password or "")}
            # aiohttp sends proxy_headers only on the CONNECT of an https tunnel; a plain-http request goes
            # to the proxy as is, so it must carry the header itself.
            if config.send_url.lower().startswith("https:"):
                self._proxy_headers = proxy_auth
            else:
                self._headers |= proxy_auth
                self._post_headers |= proxy_auth

    def __repr__(self) -> str:  # keeps the auth token out of logs and tracebacks
        return f"TwilioSender(url={self._config.send_url!r}, account={self._config.username!r})"

    async def send(self, message: OutboundMessage, status_callback_url: str | None) -> SendResult:
        form = build_form(message, status_callback_url)
        attempts = 1 + max(0, self._config.max_retries)
        for number in range(1, attempts + 1):
            attempt = await self._attempt(form)
            result = attempt.result
            if self._on_attempt is not None:
                self._on_attempt(number, result)
            if result.ok or not result.retryable or number == attempts:
                self._log_outcome(message, result, number)
                return result
            delay = self._delay(number, attempt.retry_after)
            log.info(
                "twilio.send.retry",
                message_id=message.message_id,
                attempt=number,
                error_code=result.error_code,
                http_status=result.http_status,
                delay=round(delay, 3),
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._retry_after_cap)
        ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** (attempt - 1))
        # "Equal jitter": at least half the exponential step, so retries never bunch up at zero.
        return ceiling / 2 + self._jitter() * ceiling / 2

    async def find_sent(self, message: OutboundMessage, since: float) -> str | None:
        """The sid of a message Twilio already has for this one (same To, From, body and media count, created
        since `since`), found with `ListMessage`; None if there is none. Twilio's Messages API has no
        idempotency key, so this is how a send whose outcome is unknown (a timeout, a 5xx, a crash after the
        request left) is checked before it is sent again. Raises LookupError when Twilio cannot be asked.
        """
        params = {"To": message.user_number, "From": message.tenant_number, "PageSize": "50"}
        try:
            async with self._http.get(self._config.send_url, params=params, headers=self._headers,
                                      timeout=self._timeout, proxy=self._proxy,
                                      proxy_headers=self._proxy_headers) as response:
                body = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise LookupError(f"cannot list messages at Twilio: {_describe(exc)}") from exc
        payload = _json_or_none(body)
        if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise LookupError(f"cannot list messages at Twilio: HTTP {status}")
        for item in payload["messages"]:
            if isinstance(item, dict) and _same_message(item, message, since):
                sid = item.get("sid")
                return sid if isinstance(sid, str) else None
        return None

    async def _attempt(self, form: list[tuple[str, str]]) -> _Attempt:
        try:
            async with self._http.post(
                self._config.send_url,
                data=urlencode(form).encode(),
                headers=self._post_headers,
                timeout=self._timeout,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
            ) as response:
                body = await response.read()
                return self._interpret(response.status, body, response.headers.get("Retry-After"))
        except TimeoutError:
            return _Attempt(_failure("timeout", "Twilio did not answer in time", retryable=True))
        except aiohttp.InvalidURL:
            return _Attempt(_failure("invalidURL", "the Twilio send URL is not valid", retryable=False))
        except aiohttp.ClientConnectionError as exc:
            return _Attempt(_failure("connectionError", _describe(exc), retryable=True))
        except aiohttp.ClientError as exc:
            return _Attempt(_failure("httpError", _describe(exc), retryable=True))

    def _interpret(self, status: int, body: bytes, retry_after: str | None) -> _Attempt:
        payload = _json_or_none(body)
        if status in (200, 201):
            data = payload if isinstance(payload, dict) else {}
            sid = data.get("sid")
            msg_status = data.get("status")
            return _Attempt(
                SendResult(
                    ok=True,
                    provider_message_id=sid if isinstance(sid, str) else None,
                    status=msg_status if isinstance(msg_status, str) else None,
                    http_status=status,
                )
            )
        code, text = _error_fields(payload)
        if text is None:
            snippet = body[:200].decode("utf-8", "replace").strip()
            text = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        wait = _retry_after_seconds(retry_after)
        result = SendResult(
            ok=False,
            error_code=str(code if code is not None else status),
            error_message=text,
            retryable=_is_retryable(status, code),
            http_status=status,
            retry_after=wait,
        )
        return _Attempt(result, retry_after=wait)

    def _log_outcome(self, message: OutboundMessage, result: SendResult, attempts: int) -> None:
        if result.ok:
            log.debug(
                "twilio.send.ok",
                message_id=message.message_id,
                sid=result.provider_message_id,
                attempts=attempts,
            )
        else:
            log.warning(
                "twilio.send.failed",
                message_id=message.message_id,
                attempts=attempts,
                error_code=result.error_code,
                http_status=result.http_status,
                retryable=result.retryable,
            )


def _same_message(item: Mapping[str, object], message: OutboundMessage, since: float) -> bool:
    created = item.get("date_created")
    try:
        created_at = parsedate_to_datetime(created).timestamp() if isinstance(created, str) else None
    except (TypeError, ValueError):
        created_at = None
    # Twilio's dates have whole seconds.
    recent = created_at is not None and created_at >= math.floor(since)
    return (
        recent
        and str(item.get("direction", "")).startswith("outbound")
        and (item.get("body") or "") == message.text
        and str(item.get("num_media", "0")) == str(len(message.media_urls))
    )


def _failure(code: str, message: str, *, retryable: bool) -> SendResult:
    return SendResult(ok=False, error_code=code, error_message=message, retryable=retryable)


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
