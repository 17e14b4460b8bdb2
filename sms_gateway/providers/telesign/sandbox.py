"""TeleSign's sandbox: a local stand-in for the Messaging API (`POST /v1/omnichannel`), and a phone that posts
signed callbacks as TeleSign would (`sms-gateway demo --provider telesign`)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from sms_gateway.config.model import normalise_number
from sms_gateway.http_client import basic_authorization
from sms_gateway.model import JSON
from sms_gateway.providers.json_fields import JSON_CONTENT_TYPE
from sms_gateway.providers.sandbox import SandboxMessage, UserMedia, WebhookAnswer
from sms_gateway.providers.telesign.auth import callback_headers
from sms_gateway.providers.telesign.callbacks import CALLBACK_PATH, MO_MMS, MO_SMS
from sms_gateway.providers.telesign.send_request import SEND_PATH
from sms_gateway.providers.telesign.settings import TeleSignConfig

CUSTOMER_ID = "DEMO0000-0000-4000-8000-000000000000"
API_KEY = base64.b64encode(b"demo-api-key-not-a-real-secret").decode("ascii")  # base64, as TeleSign issues keys


def reference_id() -> str:
    """An id shaped like TeleSign's (32 upper-case hex digits)."""
    return secrets.token_hex(16).upper()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def callback_url(gateway_url: str, tenant_number: str) -> str:
    return gateway_url.rstrip("/") + CALLBACK_PATH.replace("{tenant}", normalise_number(tenant_number))


def sample_mms(user_number: str) -> JSON:
    """A mobile-originated MMS callback with a caption and a picture, as TeleSign posts it (the media at a public
    URL, the user's number without "+")."""
    return user_message(
        user_number,
        "Here is a photo of the damage",
        [UserMedia(f"https://mms-media.example.com/inbound/{secrets.token_hex(16)}.jpg", "image/jpeg")],
    )


def user_message(user_number: str, text: str, media: Sequence[UserMedia]) -> JSON:
    """A mobile-originated callback as TeleSign posts it: an MMS with its parts numbered by kind when it carries
    media, else an SMS."""
    callback: JSON = {
        "reference_id": reference_id(),
        "status": {"code": 1500, "description": "Delivered", "updated_on": now_iso()},
        "phone_number": normalise_number(user_number),
    }
    if not media:
        return callback | {
            "sub_resource": MO_SMS,
            "user_response": {"mo_message": text, "phone_number": normalise_number(user_number)},
        }
    content: JSON = {"text_1": text} if text else {}
    counts: dict[str, int] = {}
    for item in media:
        kind = next((k for k in ("image", "video", "audio") if item.content_type.startswith(k + "/")), "image")
        counts[kind] = counts.get(kind, 0) + 1
        content[f"url_{kind}_{counts[kind]}"] = item.url
    return callback | {"sub_resource": MO_MMS, "content": content}


def delivered_callback(message: SandboxMessage) -> JSON:
    """A delivery callback saying `message` was delivered, on MMS if it had a media, else on SMS."""
    channel = "mms" if message.media_urls else "sms"
    updated_on = now_iso()
    return {
        "reference_id": message.provider_message_id,
        "external_id": message.our_message_id,
        "status": {"code": 3000, "description": "Delivered", "updated_on": updated_on, "last_channel": channel},
        "channel_status": [
            {
                channel: {
                    "code": 3000,
                    "description": "Delivered",
                    "reference_id": message.provider_message_id,
                    "updated_on": updated_on,
                }
            }
        ],
    }


@dataclass(slots=True)
class TeleSignSandbox:
    name: str = "TeleSign"
    api_name: str = "TeleSign Messaging API"
    tenant_number: str = "12345"  # a short code: TeleSign sends MMS only from US short codes
    sent: list[SandboxMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    fail_next_send: bool = False

    def api(self) -> web.Application:
        app = web.Application()
        app.router.add_post(SEND_PATH, self._send_message)
        return app

    def settings(self, api_url: str) -> TeleSignConfig:
        return TeleSignConfig(customer_id=CUSTOMER_ID, api_key=API_KEY, url=api_url.rstrip("/"))

    async def send_sample_mms(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, user_number: str
    ) -> WebhookAnswer:
        url = callback_url(gateway_url, tenant_number)
        status, text = await _post_signed(http, url, sample_mms(user_number))
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
        url = callback_url(gateway_url, tenant_number)
        status, answer = await _post_signed(http, url, user_message(user_number, text, media))
        what = f"signed MMS, {len(media)} media" if media else "signed SMS"
        return WebhookAnswer(status, answer, f"POST {url} ({what})", media_count=len(media))

    async def report_delivered(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, message: SandboxMessage
    ) -> int | None:
        return (await _post_signed(http, callback_url(gateway_url, tenant_number), delivered_callback(message)))[0]

    async def _send_message(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_authorization(CUSTOMER_ID, API_KEY):
            return _status(401, 3400, "Not authorized")
        try:
            body = json.loads(await request.read())
            message = _recorded(body)
        except (ValueError, LookupError, TypeError, AttributeError):
            return _status(400, 3110, "Invalid request")
        refused, self.fail_next_send = self.fail_next_send, False
        if refused:
            self.sent.append(dataclasses.replace(message, refused=True))
            self.arrived.set()
            # As TeleSign refuses a message it will never send (an unverified number on a trial account).
            return _status(400, 3071, "Phone number not verified")
        self.sent.append(message)
        self.arrived.set()
        return web.json_response(
            {
                "reference_id": message.provider_message_id,
                "external_id": message.our_message_id,
                "status": {"code": 3001, "description": "Message in progress"},
            }
        )


def _recorded(body: Any) -> SandboxMessage:
    """The message of an omnichannel request (LookupError, TypeError or AttributeError when it has none)."""
    content = body["message"]
    mms = content.get("mms")
    sms = content.get("sms") or {}
    our_id = body.get("external_id")
    return SandboxMessage(
        provider_message_id=reference_id(),
        to="+" + str(body["recipient"]["phone_number"]),
        from_=str(body.get("sender_id") or ""),
        text=str(sms.get("parameters", {}).get("text") or ""),
        media_urls=(str(mms["parameters"]["url"]),) if mms else (),
        shown=body,
        our_message_id=our_id if isinstance(our_id, str) and our_id else None,
    )


def _status(http_status: int, code: int, description: str) -> web.Response:
    return web.json_response({"status": {"code": code, "description": description}}, status=http_status)


async def _post_signed(http: aiohttp.ClientSession, url: str, payload: JSON) -> tuple[int, str]:
    body = json.dumps(payload).encode("utf-8")
    headers = callback_headers(CUSTOMER_ID, API_KEY, body) | {"Content-Type": JSON_CONTENT_TYPE}
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()
