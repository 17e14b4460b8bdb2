"""A provider's sandbox: a local stand-in for its send API and for a user's phone, so the gateway can be tried
end to end with no account (`sms-gateway demo --provider NAME`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web

from sms_gateway.config.model import ProviderConfig
from sms_gateway.model import JSON


@dataclass(frozen=True, slots=True)
class SandboxMessage:
    """A message the gateway sent that reached the stand-in API."""

    provider_message_id: str
    to: str
    from_: str
    text: str
    media_urls: tuple[str, ...]
    shown: JSON  # the request as the provider's API received it, for display
    our_message_id: str | None  # the gateway's id, where the provider echoes it back
    refused: bool = False  # the stand-in refused it (`fail_next_send`): it never reached the phone


@dataclass(frozen=True, slots=True)
class UserMedia:
    """A media a user's message carries: where the provider hosts it, and its content type."""

    url: str
    content_type: str


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    status: int
    body: str
    description: str  # what was posted, in a line: "POST <url> (signed MMS, 2 media)"
    media_count: int  # how many media the posted message carried


class Sandbox(Protocol):
    name: str  # the provider as a user would say it
    api_name: str  # its send API, as its documentation names it
    tenant_number: str  # the demo tenant's number: one this provider can send MMS from
    sent: list[SandboxMessage]
    arrived: asyncio.Event  # set whenever a message reaches the stand-in
    # When set, the next message sent is refused for good (the provider's answer to a message it will never
    # send, e.g. to an unsubscribed number), so the engine hears of it as smsError; then cleared.
    fail_next_send: bool

    def api(self) -> web.Application:
        """The stand-in for the provider's send API."""
        ...

    def settings(self, api_url: str) -> ProviderConfig:
        """Provider settings for a tenant that sends to the stand-in at `api_url`."""
        ...

    async def send_sample_mms(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, user_number: str
    ) -> WebhookAnswer:
        """Post a signed sample MMS (text and images) from `user_number`, as the provider's inbound webhook
        would: two images where the provider delivers several per message, else one."""
        ...

    async def send_message(
        self,
        http: aiohttp.ClientSession,
        gateway_url: str,
        tenant_number: str,
        user_number: str,
        text: str,
        media: Sequence[UserMedia] = (),
    ) -> WebhookAnswer:
        """Post a signed message from `user_number`, as the provider's inbound webhook would: an SMS, or an MMS
        when it carries media (in as many webhooks as the provider needs for them)."""
        ...

    async def report_delivered(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, message: SandboxMessage
    ) -> int | None:
        """Post a signed 'delivered' status for `message` as the provider would; the answer's status (None when
        the provider would not know where to post it)."""
        ...
