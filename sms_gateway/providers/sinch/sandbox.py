"""Sinch's sandbox: a local stand-in for the Conversation API (its token endpoint and `messages:send`), and a phone
that posts signed callbacks as Sinch would (`sms-gateway demo --provider sinch`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from sms_gateway.http_client import basic_authorization
from sms_gateway.model import JSON
from sms_gateway.providers.json_fields import JSON_CONTENT_TYPE
from sms_gateway.providers.sandbox import SandboxMessage, UserMedia, WebhookAnswer
from sms_gateway.providers.sinch.settings import SinchConfig
from sms_gateway.providers.sinch.signature import signature_headers
from sms_gateway.providers.sinch.webhooks import CALLBACK_PATH

PROJECT_ID = "demo-project"
APP_ID = "01DEMOAPP000000000000000000"
KEY_ID = "demo-key-id"
KEY_SECRET = "demo-key-secret"
WEBHOOK_SECRET = "demo-webhook-secret"
TOKEN_PATH = "/oauth2/token"
SEND_PATH = "/v1/projects/{project_id}/messages:send"


def sinch_id() -> str:
    """An id shaped like Sinch's (a ULID: 26 upper-case characters)."""
    return "01" + secrets.token_hex(12).upper()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sample_mms(tenant_number: str, user_number: str) -> JSON:
    """A MESSAGE_INBOUND callback for an MMS with a picture and a caption, as Sinch posts it (the media re-hosted
    by Sinch at a public URL, the identities without "+")."""
    return inbound_message(
        tenant_number,
        user_number,
        {
            "media_card_message": {
                "url": f"https://mms-media.example.com/inbound/{secrets.token_hex(16)}.jpg",
                "caption": "Here is a photo of the damage",
            }
        },
    )


def contact_messages(text: str, media: Sequence[UserMedia]) -> list[JSON]:
    """The contact messages Sinch delivers for a user's message: one per media (a media card with the text as
    its caption, then plain media), or one text message."""
    if not media:
        return [{"text_message": {"text": text}}]
    first, *rest = media
    return [
        {"media_card_message": {"url": first.url, "caption": text}},
        *({"media_message": {"url": item.url}} for item in rest),
    ]


def inbound_message(tenant_number: str, user_number: str, contact_message: JSON) -> JSON:
    """A MESSAGE_INBOUND callback carrying `contact_message`, as Sinch posts it (identities without "+")."""
    return {
        "app_id": APP_ID,
        "project_id": PROJECT_ID,
        "accepted_time": now_iso(),
        "event_time": now_iso(),
        "message": {
            "id": sinch_id(),
            "direction": "TO_APP",
            "contact_message": contact_message,
            "channel_identity": {"channel": "MMS", "identity": user_number.lstrip("+"), "app_id": ""},
            "conversation_id": "",
            "contact_id": "",
            "metadata": "",
            "accept_time": now_iso(),
            "sender_id": tenant_number.lstrip("+"),
            "processing_mode": "DISPATCH",
        },
        "message_metadata": "",
        "correlation_id": "",
    }


def delivered_report(message: SandboxMessage) -> JSON:
    """A MESSAGE_DELIVERY callback saying `message` was delivered on the MMS channel."""
    return {
        "app_id": APP_ID,
        "project_id": PROJECT_ID,
        "accepted_time": now_iso(),
        "event_time": now_iso(),
        "message_delivery_report": {
            "message_id": message.provider_message_id,
            "conversation_id": "",
            "status": "DELIVERED",
            "channel_identity": {"channel": "MMS", "identity": message.to.lstrip("+"), "app_id": ""},
            "contact_id": "",
            "metadata": message.our_message_id or "",
            "processing_mode": "DISPATCH",
        },
        "message_metadata": message.our_message_id or "",
        "correlation_id": message.our_message_id or "",
    }


@dataclass(slots=True)
class SinchSandbox:
    name: str = "Sinch"
    api_name: str = "Sinch Conversation API"
    tenant_number: str = "+15005550006"
    sent: list[SandboxMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    fail_next_send: bool = False
    _tokens: set[str] = field(default_factory=set)

    def api(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._issue_token)
        app.router.add_post(SEND_PATH, self._send_message)
        return app

    def settings(self, api_url: str) -> SinchConfig:
        base = api_url.rstrip("/")
        return SinchConfig(
            project_id=PROJECT_ID,
            app_id=APP_ID,
            key_id=KEY_ID,
            key_secret=KEY_SECRET,
            webhook_secret=WEBHOOK_SECRET,
            url=base,
            auth_url=base + TOKEN_PATH,
        )

    async def send_sample_mms(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, user_number: str
    ) -> WebhookAnswer:
        url = f"{gateway_url.rstrip('/')}{CALLBACK_PATH}"
        status, text = await _post_signed(http, url, sample_mms(tenant_number, user_number))
        return WebhookAnswer(status, text, f"POST {url} (signed MMS, 1 media)", media_count=1)

    async def send_message(
        self,
        http: aiohttp.ClientSession,
        gateway_url: str,
        tenant_number: str,
        user_number: str,
        text: str,
        media: Sequence[UserMedia] = (),
    ) -> WebhookAnswer:
        url = f"{gateway_url.rstrip('/')}{CALLBACK_PATH}"
        status, answer = 0, ""
        for contact_message in contact_messages(text, media):
            status, answer = await _post_signed(http, url, inbound_message(tenant_number, user_number, contact_message))
            if status != 200:
                break
        what = f"signed MMS, {len(media)} media" if media else "signed SMS"
        return WebhookAnswer(status, answer, f"POST {url} ({what})", media_count=len(media))

    async def report_delivered(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, message: SandboxMessage
    ) -> int | None:
        url = f"{gateway_url.rstrip('/')}{CALLBACK_PATH}"
        return (await _post_signed(http, url, delivered_report(message)))[0]

    async def _issue_token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_authorization(KEY_ID, KEY_SECRET):
            return web.json_response({"error": "invalid_client", "error_description": "unknown access key"}, status=401)
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": 3600, "scope": ""})

    async def _send_message(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        if authorization.removeprefix("Bearer ") not in self._tokens:
            return _error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        try:
            body = json.loads(await request.read())
            sandbox_message = _recorded(body)
        except (ValueError, LookupError, TypeError, AttributeError):
            return _error(
                400, "The request is not a messages:send request this sandbox understands.", "INVALID_ARGUMENT"
            )
        refused, self.fail_next_send = self.fail_next_send, False
        if refused:
            self.sent.append(dataclasses.replace(sandbox_message, refused=True))
            self.arrived.set()
            # As Sinch refuses a message it will never send: a 400 (any 4xx but 408/429 fails for good).
            return _error(400, "The recipient cannot receive messages on this channel.", "INVALID_ARGUMENT")
        self.sent.append(sandbox_message)
        self.arrived.set()
        return web.json_response({"message_id": sandbox_message.provider_message_id, "accepted_time": now_iso()})


def _recorded(body: Any) -> SandboxMessage:
    """The message of a messages:send body (LookupError, TypeError or AttributeError when it has none)."""
    identities = body["recipient"]["identified_by"]["channel_identities"]
    message = body["message"]
    card = message.get("card_message") or {}
    media = card.get("media_message") or message.get("media_message") or {}
    text = (message.get("text_message") or {}).get("text") or card.get("description") or ""
    our_id = body.get("message_metadata")
    return SandboxMessage(
        provider_message_id=sinch_id(),
        to=str(identities[0]["identity"]),
        from_=str(body["channel_properties"]["MMS_SENDER"]),
        text=str(text),
        media_urls=(str(media["url"]),) if "url" in media else (),
        shown=body,
        our_message_id=our_id if isinstance(our_id, str) and our_id else None,
    )


def _error(status: int, message: str, sinch_status: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message, "status": sinch_status}}, status=status)


async def _post_signed(http: aiohttp.ClientSession, url: str, payload: JSON) -> tuple[int, str]:
    body = json.dumps(payload).encode("utf-8")
    headers = signature_headers(WEBHOOK_SECRET, body, sinch_id(), int(time.time()))
    headers["Content-Type"] = JSON_CONTENT_TYPE
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()
