"""A local stand-in for Twilio's Messages API: accepts sends and keeps them, so the gateway can be tried
without an account (used by `sms-gateway demo`)."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(slots=True)
class SunkMessage:
    account_sid: str
    to: str
    from_: str
    body: str
    media_urls: list[str]
    status_callback: str | None
    sid: str


@dataclass(slots=True)
class Sink:
    messages: list[SunkMessage] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def create_message(self, request: web.Request) -> web.Response:
        form = await request.post()
        sid = ("MM" if form.getall("MediaUrl", []) else "SM") + secrets.token_hex(16)
        message = SunkMessage(
            account_sid=request.match_info["account_sid"],
            to=str(form.get("To", "")),
            from_=str(form.get("From", "")),
            body=str(form.get("Body", "")),
            media_urls=[str(url) for url in form.getall("MediaUrl", [])],
            status_callback=str(form["StatusCallback"]) if "StatusCallback" in form else None,
            sid=sid,
        )
        self.messages.append(message)
        self.arrived.set()
        return web.json_response(
            {
                "sid": sid,
                "account_sid": message.account_sid,
                "to": message.to,
                "from": message.from_,
                "body": message.body,
                "status": "queued",
                "num_media": str(len(message.media_urls)),
                "direction": "outbound-api",
                "api_version": "2010-04-01",
            },
            status=201,
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", self.create_message)
        return app
