"""Twilio's sandbox: a local stand-in for the Messages API, and a phone that posts signed webhooks as Twilio
would (`sms-gateway demo`)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from sms_gateway.providers.sandbox import SandboxMessage, UserMedia, WebhookAnswer
from sms_gateway.providers.twilio.sender import STATUS_PATH
from sms_gateway.providers.twilio.settings import TwilioConfig
from sms_gateway.providers.twilio.webhooks import SIGNATURE_HEADER

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "demo-auth-token"
INBOUND_PATH = "/sms.receiver/SmsRecv"


def sample_mms(message_sid: str, tenant_number: str, user_number: str) -> dict[str, str]:
    """An inbound MMS webhook form with the fields Twilio sends."""
    media = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media"
    return inbound_form(
        message_sid,
        tenant_number,
        user_number,
        "Here are the photos of the damage",
        [
            UserMedia(f"{media}/ME{secrets.token_hex(16)}", "image/jpeg"),
            UserMedia(f"{media}/ME{secrets.token_hex(16)}", "image/png"),
        ],
    )


def inbound_form(
    message_sid: str, tenant_number: str, user_number: str, text: str, media: Sequence[UserMedia]
) -> dict[str, str]:
    """An inbound SMS (or MMS, with media) webhook form with the fields Twilio sends."""
    form = {
        "ToCountry": "US",
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "SmsSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": user_number,
        "To": tenant_number,
        "Body": text,
        "NumMedia": str(len(media)),
        "NumSegments": "1",
    }
    for n, item in enumerate(media):
        form[f"MediaUrl{n}"] = item.url
        form[f"MediaContentType{n}"] = item.content_type
    return form | {"SmsStatus": "received", "ApiVersion": "2010-04-01"}


@dataclass(slots=True)
class TwilioSandbox:
    name: str = "Twilio"
    api_name: str = "Twilio Messages API"
    tenant_number: str = "+15005550006"  # Twilio's magic test number
    sent: list[SandboxMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    fail_next_send: bool = False
    _callbacks: dict[str, str] = field(default_factory=dict)  # sid -> StatusCallback

    def api(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", self._create_message)
        return app

    def settings(self, api_url: str) -> TwilioConfig:
        return TwilioConfig(url=api_url, username=ACCOUNT_SID, password=AUTH_TOKEN)

    async def send_sample_mms(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, user_number: str
    ) -> WebhookAnswer:
        webhook = f"{gateway_url}{INBOUND_PATH}"
        form = sample_mms("MM" + secrets.token_hex(16), tenant_number, user_number)
        status, body = await _post_signed(http, webhook, form)
        return WebhookAnswer(status, body, f"POST {webhook} (signed MMS, 2 media)", media_count=2)

    async def send_message(
        self,
        http: aiohttp.ClientSession,
        gateway_url: str,
        tenant_number: str,
        user_number: str,
        text: str,
        media: Sequence[UserMedia] = (),
    ) -> WebhookAnswer:
        webhook = f"{gateway_url}{INBOUND_PATH}"
        form = inbound_form(("MM" if media else "SM") + secrets.token_hex(16), tenant_number, user_number, text, media)
        status, body = await _post_signed(http, webhook, form)
        what = f"signed MMS, {len(media)} media" if media else "signed SMS"
        return WebhookAnswer(status, body, f"POST {webhook} ({what})", media_count=len(media))

    async def report_delivered(
        self, http: aiohttp.ClientSession, gateway_url: str, tenant_number: str, message: SandboxMessage
    ) -> int | None:
        callback = self._callbacks.get(message.provider_message_id)
        if callback is None:
            return None
        status = {
            "MessageSid": message.provider_message_id,
            "MessageStatus": "delivered",
            "AccountSid": ACCOUNT_SID,
            "From": message.from_,
            "To": message.to,
            "ApiVersion": "2010-04-01",
        }
        return (await _post_signed(http, callback, status))[0]

    async def _create_message(self, request: web.Request) -> web.Response:
        form = await request.post()
        media_urls = tuple(str(url) for url in form.getall("MediaUrl", []))
        sid = ("MM" if media_urls else "SM") + secrets.token_hex(16)
        to, from_, body = str(form.get("To", "")), str(form.get("From", "")), str(form.get("Body", ""))
        callback = form.get("StatusCallback")
        callback = callback if isinstance(callback, str) else None
        shown = {"To": to, "From": from_, "Body": body, "MediaUrl": list(media_urls), "StatusCallback": callback}
        our_id = callback.rsplit("mid=", 1)[-1] if callback is not None and STATUS_PATH in callback else None
        refused, self.fail_next_send = self.fail_next_send, False
        self.sent.append(SandboxMessage(sid, to, from_, body, media_urls, shown, our_id, refused))
        self.arrived.set()
        if refused:
            # As Twilio refuses a message to a number that has replied STOP: a 400 it will not retry.
            return web.json_response(
                {
                    "code": 21610,
                    "message": "Attempt to send to unsubscribed recipient",
                    "more_info": "https://www.twilio.com/docs/errors/21610",
                    "status": 400,
                },
                status=400,
            )
        if callback is not None:
            self._callbacks[sid] = callback
        return web.json_response(
            {
                "sid": sid,
                "account_sid": request.match_info["account_sid"],
                "to": to,
                "from": from_,
                "body": body,
                "status": "queued",
                "num_media": str(len(media_urls)),
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "date_created": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            },
            status=201,
        )


async def _post_signed(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> tuple[int, str]:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    async with http.post(url, data=form, headers={SIGNATURE_HEADER: signature}) as response:
        return response.status, await response.text()
