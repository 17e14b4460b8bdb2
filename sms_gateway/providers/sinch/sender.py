"""Sending through Sinch's Conversation API (`messages:send`, MMS with SMS fallback), and finding a message Sinch
may already have (`GET messages`), with OAuth2 bearer tokens.

Our own aiohttp requests rather than Sinch's SDK: the SDK is synchronous and takes no async transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from sms_gateway.http_client import Answer, TransportError
from sms_gateway.model import OutboundMessage, SendResult
from sms_gateway.providers.sinch import outcomes
from sms_gateway.providers.sinch.send_request import encode, send_request
from sms_gateway.providers.sinch.settings import SinchConfig
from sms_gateway.providers.sinch.tokens import TokenCache, TokenUnavailable
from sms_gateway.providers.transport import ProviderTransport

log = structlog.get_logger("sms_gateway.providers.sinch")

MAX_MEDIA_PER_MESSAGE = 1
# Where Sinch keeps an app's messages depends on the app's processing mode; find_sent looks in both.
MESSAGE_SOURCES = ("DISPATCH_SOURCE", "CONVERSATION_SOURCE")
PAGE_SIZE = 1000  # Sinch's maximum
MAX_PAGES = 10  # per source: more than 10,000 messages to one user since the first attempt is not a search to make
CLOCK_MARGIN_SECONDS = 60.0  # Sinch's clock against ours, for `start_time`
UNAUTHORIZED = 401


@dataclass(frozen=True, slots=True)
class MessagePage:
    """One page of ListMessages, as far as find_sent cares."""

    message_id: str | None  # Sinch's id of the message with our id as its metadata, if on this page
    next_page_token: str | None

    @classmethod
    def read(cls, payload: Any, our_id: str) -> MessagePage:
        if not isinstance(payload, dict):
            raise LookupError("cannot list messages at Sinch: the answer is not a JSON object")
        messages = payload.get("messages") or []  # Sinch leaves out an empty list
        if not isinstance(messages, list):
            raise LookupError("cannot list messages at Sinch: `messages` is not a list")
        found = next(
            (item.get("id") for item in messages if isinstance(item, dict) and item.get("metadata") == our_id), None
        )
        token = payload.get("next_page_token")
        return cls(
            found if isinstance(found, str) and found else None, token if isinstance(token, str) and token else None
        )


class SinchSender:
    """Sends one OutboundMessage per call (at most one media) for a tenant; never raises for HTTP or network
    problems. Tries once, but for one retry with a new token when Sinch refuses the token it was given."""

    kind = "sinch"

    def __init__(self, settings: SinchConfig, http: aiohttp.ClientSession, tokens: TokenCache) -> None:
        self._settings = settings
        self._transport = ProviderTransport(settings, http, "Sinch")
        self._tokens = tokens
        project = f"{settings.api_base}/v1/projects/{quote(settings.project_id, safe='')}"
        self._send_url = f"{project}/messages:send"
        self._list_url = f"{project}/messages"

    def __repr__(self) -> str:  # keeps the key secret and tokens out of logs and tracebacks
        settings = self._settings
        return f"SinchSender(url={self._send_url!r}, app_id={settings.app_id!r}, key_id={settings.key_id!r})"

    def may_have_sent(self, error_code: str) -> bool:
        return outcomes.may_have_sent(error_code)

    async def send(self, message: OutboundMessage, callback_base: str | None) -> SendResult:
        """`callback_base` is not used: Sinch posts delivery reports to the app's webhook, set up at Sinch."""
        if len(message.media_urls) > MAX_MEDIA_PER_MESSAGE:
            return outcomes.refused(
                outcomes.TOO_MANY_MEDIA,
                f"a Sinch message carries at most "
                f"{MAX_MEDIA_PER_MESSAGE} media; this one has {len(message.media_urls)}",
            )
        if not message.text and not message.media_urls:
            return outcomes.refused(outcomes.EMPTY_MESSAGE, "the message has neither text nor media")
        body = encode(send_request(message, self._settings))
        try:
            answer = await self._authorized("POST", self._send_url, data=body)
        except TokenUnavailable as exc:
            return exc.result
        except TransportError as exc:
            return exc.result()
        return outcomes.send_result(answer)

    async def find_sent(self, message: OutboundMessage, since: float) -> str | None:
        """Sinch's id of the message whose metadata is our id, sent to the user since `since` (a minute's margin
        for clocks); None if Sinch has none. Sinch has no idempotency key, so this is how a send whose outcome is
        unknown is checked before it is sent again. LookupError when Sinch cannot be asked."""
        start = datetime.fromtimestamp(max(0.0, since - CLOCK_MARGIN_SECONDS), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {
            "app_id": self._settings.app_id,
            "channel_identity": message.user_number,
            "start_time": start,
            "direction": "TO_CONTACT",
            "view": "WITH_METADATA",
            "page_size": str(PAGE_SIZE),
        }
        for source in MESSAGE_SOURCES:
            found = await self._find_in({**params, "messages_source": source}, message.message_id)
            if found is not None:
                log.info("sinch.find_sent.found", message_id=message.message_id, sinch_message_id=found, source=source)
                return found
        return None

    async def _find_in(self, params: Mapping[str, str], our_id: str) -> str | None:
        for _ in range(MAX_PAGES):
            try:
                answer = await self._authorized("GET", self._list_url, params=params)
            except TokenUnavailable as exc:
                raise LookupError(f"cannot list messages at Sinch: {exc.result.error_message}") from exc
            except TransportError as exc:
                raise LookupError(f"cannot list messages at Sinch: {exc.message}") from exc
            if answer.status != 200:
                raise LookupError(
                    f"cannot list messages at Sinch: {outcomes.error_message(answer)} (HTTP {answer.status})"
                )
            page = MessagePage.read(answer.json(), our_id)
            if page.message_id is not None or page.next_page_token is None:
                return page.message_id
            params = {**params, "page_token": page.next_page_token}
        raise LookupError(f"cannot list messages at Sinch: more than {MAX_PAGES * PAGE_SIZE} messages to look at")

    async def _authorized(
        self, method: str, url: str, *, data: bytes | None = None, params: Mapping[str, str] | None = None
    ) -> Answer:
        """The request with a bearer token and, if Sinch refuses that token, once more with a new one.
        TokenUnavailable, TransportError."""
        token = await self._tokens.token(self._transport)
        answer = await self._call(method, url, token, data=data, params=params)
        if answer.status != UNAUTHORIZED:
            return answer
        log.info("sinch.token.refused", key_id=self._settings.key_id)
        self._tokens.discard(token)
        token = await self._tokens.token(self._transport)
        return await self._call(method, url, token, data=data, params=params)

    async def _call(
        self, method: str, url: str, token: str, *, data: bytes | None, params: Mapping[str, str] | None
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        return await self._transport.call(method, url, headers=headers, data=data, params=params)
