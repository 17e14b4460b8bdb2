"""Sending through Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.

Our own aiohttp session rather than twilio-python's client: its async client ignores timeouts and proxies, and
retries POSTs on any 5xx without honouring `Retry-After`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from sms_gateway.http_client import Answer, TransportError, basic_authorization
from sms_gateway.model import OutboundMessage, SendOutcome, SendResult
from sms_gateway.providers.transport import ProviderTransport
from sms_gateway.providers.twilio import errors
from sms_gateway.providers.twilio.settings import TwilioConfig

STATUS_PATH = "/sms.receiver/twilio/status"


def status_callback_url(callback_base: str | None, message_id: str) -> str | None:
    """Where Twilio reports the message's statuses: our route, with our own id (a status can arrive before
    Twilio's answer to the send does)."""
    if not callback_base:
        return None
    return f"{callback_base.rstrip('/')}{STATUS_PATH}?mid={quote(message_id)}"


def build_form(message: OutboundMessage, status_callback: str | None) -> list[tuple[str, str]]:
    """The Messages.json form; `MediaUrl` repeats once per media."""
    form = [("To", message.user_number), ("From", message.tenant_number)]
    if message.text:
        form.append(("Body", message.text))
    form.extend(("MediaUrl", url) for url in message.media_urls)
    if status_callback:
        form.append(("StatusCallback", status_callback))
    return form


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


def interpret(answer: Answer) -> SendResult:
    """The Messages API's answer to a create -> SendResult."""
    payload = answer.json()
    if answer.status in (200, 201):
        data = payload if isinstance(payload, dict) else {}
        sid, status = data.get("sid"), data.get("status")
        return SendResult(
            SendOutcome.SENT,
            provider_message_id=sid if isinstance(sid, str) else None,
            status=status if isinstance(status, str) else None,
            http_status=answer.status,
        )
    code, text = _error_fields(payload)
    return SendResult(
        errors.outcome(answer.status, code),
        error_code=str(code if code is not None else answer.status),
        error_message=text if text is not None else answer.snippet(),
        http_status=answer.status,
        retry_after=answer.retry_after,
        throttled=errors.throttled(answer.status, code),
    )


class TwilioSender:
    """Sends one OutboundMessage through Twilio's REST API per call; never raises for HTTP or network problems."""

    kind = "twilio"

    def __init__(self, config: TwilioConfig, http: aiohttp.ClientSession) -> None:
        self._config = config
        self._transport = ProviderTransport(config, http, "Twilio")
        self._headers = {
            "Authorization": basic_authorization(config.username, config.password),
            "Accept": "application/json",
        }
        # The form is encoded by us: aiohttp's FormData builds a multipart writer for every request.
        self._post_headers = self._headers | {"Content-Type": "application/x-www-form-urlencoded"}

    def __repr__(self) -> str:  # keeps the auth token out of logs and tracebacks
        return f"TwilioSender(url={self._config.send_url!r}, account={self._config.username!r})"

    def may_have_sent(self, error_code: str) -> bool:
        return errors.may_have_sent(error_code)

    async def send(self, message: OutboundMessage, callback_base: str | None) -> SendResult:
        form = build_form(message, status_callback_url(callback_base, message.message_id))
        try:
            answer = await self._call("POST", data=urlencode(form).encode(), headers=self._post_headers)
        except TransportError as exc:
            return exc.result()
        return interpret(answer)

    async def find_sent(self, message: OutboundMessage, since: float) -> str | None:
        """The sid of a message Twilio already has for this one (same To, From, body and media count, created
        since `since`), found with `ListMessage`; None if there is none. Twilio's Messages API has no
        idempotency key, so this is how a send whose outcome is unknown (a timeout, a 5xx, a crash after the
        request left) is checked before it is sent again. Raises LookupError when Twilio cannot be asked.
        """
        params = {"To": message.user_number, "From": message.tenant_number, "PageSize": "50"}
        try:
            answer = await self._call("GET", params=params, headers=self._headers)
        except TransportError as exc:
            raise LookupError(f"cannot list messages at Twilio: {exc.message}") from exc
        payload = answer.json()
        if answer.status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise LookupError(f"cannot list messages at Twilio: HTTP {answer.status}")
        for item in payload["messages"]:
            if isinstance(item, dict) and _same_message(item, message, since):
                sid = item.get("sid")
                return sid if isinstance(sid, str) else None
        return None

    async def _call(
        self,
        method: str,
        *,
        headers: Mapping[str, str],
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        return await self._transport.call(method, self._config.send_url, headers=headers, data=data, params=params)


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
