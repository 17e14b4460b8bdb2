"""Sending through TeleSign's Messaging API (`POST /v1/omnichannel`: MMS with SMS fallback, or SMS), with Basic or
Digest ("TSA", HMAC-SHA256) authentication.

Our own aiohttp requests rather than TeleSign's SDK: the SDK is synchronous (requests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate

import aiohttp

from sms_gateway.http_client import TransportError
from sms_gateway.model import OutboundMessage, SendResult
from sms_gateway.providers.json_fields import JSON_CONTENT_TYPE
from sms_gateway.providers.telesign import errors
from sms_gateway.providers.telesign.auth import basic_headers, digest_headers, new_nonce
from sms_gateway.providers.telesign.send_request import SEND_PATH, encode, send_request
from sms_gateway.providers.telesign.settings import TeleSignConfig
from sms_gateway.providers.transport import ProviderTransport

MAX_MEDIA_PER_MESSAGE = 1


class TeleSignSender:
    """Sends one OutboundMessage per call (at most one media) for a tenant; never raises for HTTP or network
    problems. `clock` (epoch seconds) and `nonce` make the Digest headers; tests fix them."""

    kind = "telesign"

    def __init__(
        self,
        settings: TeleSignConfig,
        http: aiohttp.ClientSession,
        sender_id: str,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = new_nonce,
    ) -> None:
        self._settings = settings
        self._transport = ProviderTransport(settings, http, "TeleSign")
        self._sender_id = sender_id
        self._url = settings.url.rstrip("/") + SEND_PATH
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:  # keeps the API key out of logs and tracebacks
        settings = self._settings
        return (
            f"TeleSignSender(url={self._url!r}, customer_id={settings.customer_id!r}, "
            f"auth_method={settings.auth_method!r}, sender_id={self._sender_id!r})"
        )

    def may_have_sent(self, error_code: str) -> bool:
        return errors.may_have_sent(error_code)

    async def send(self, message: OutboundMessage, callback_base: str | None) -> SendResult:
        """`callback_base` is not used: TeleSign posts delivery callbacks to the URL registered with it for the
        account (a per-request `callback_url` must be enabled by TeleSign, else every send is refused: 3203)."""
        if len(message.media_urls) > MAX_MEDIA_PER_MESSAGE:
            return errors.refused(
                errors.TOO_MANY_MEDIA,
                f"a TeleSign message carries at most "
                f"{MAX_MEDIA_PER_MESSAGE} media; this one has {len(message.media_urls)}",
            )
        if not message.text and not message.media_urls:
            return errors.refused(errors.EMPTY_MESSAGE, "the message has neither text nor media")
        body = encode(send_request(message, self._settings, self._sender_id))
        try:
            headers = self.headers(body)
        except ValueError as exc:
            return errors.refused(errors.INVALID_API_KEY, f"cannot sign the request for TeleSign: the {exc}")
        try:
            answer = await self._transport.call("POST", self._url, headers=headers, data=body)
        except TransportError as exc:
            return exc.result()
        return errors.send_result(answer)

    async def find_sent(self, message: OutboundMessage, since: float) -> str | None:
        """Always None: TeleSign finds a message only by its own reference id (`GET /v1/omnichannel/{reference_id}`),
        never by our external_id, so a send whose answer was lost (a timeout, a 5xx, a crash after the request
        left) is sent again, and the user may get it twice, unless its delivery callback (which carries our id)
        came first and recorded it as sent."""
        return None

    def headers(self, body: bytes) -> dict[str, str]:
        """The headers of a send whose body is `body` (ValueError: Digest, and the API key is not base64)."""
        settings = self._settings
        headers = {"Accept": JSON_CONTENT_TYPE, "Content-Type": JSON_CONTENT_TYPE}
        if settings.auth_method == "digest":
            date = formatdate(self._clock(), usegmt=True)
            return headers | digest_headers(
                settings.customer_id,
                settings.api_key,
                "POST",
                SEND_PATH,
                body.decode("utf-8"),
                content_type=JSON_CONTENT_TYPE,
                date=date,
                nonce=self._nonce(),
            )
        return headers | basic_headers(settings.customer_id, settings.api_key)
