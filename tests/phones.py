"""A user's phone on each provider, for end-to-end scenarios that every provider must pass alike.

A phone posts inbound messages to the gateway exactly as its provider's webhook would (signed, in the provider's
own format) and reads what the gateway sent through the provider's fake API, as neutral `Sent` records.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from tests.fakes.sinch import FakeSinch, SinchSent, inbound_event, new_ulid, serialize, sign_webhook
from tests.fakes.telesign import FakeTeleSign, TeleSignSent, mo_mms, mo_sms, new_reference_id, sign_callback
from tests.fakes.telesign import serialize as telesign_serialize
from tests.fakes.twilio import SentMessage
from tests.harness import SINCH, TELESIGN, USER, V1, Harness, inbound_form, new_sid


@dataclass(frozen=True, slots=True)
class Sent:
    """A message the gateway handed to the provider."""

    to: str
    from_: str
    text: str
    media_urls: tuple[str, ...]
    our_id: str | None  # the gateway's message id, as the provider will echo it
    raw: Any  # the fake's own record


class Phone(Protocol):
    provider: str
    tenant: str  # the tenant number this phone texts
    inbound_media: int  # how many media one inbound message of this provider carries at most
    # How the provider's messages carry a reply: media per message, and whether an MMS also carries text.
    outbound_media: int
    outbound_media_with_text: bool

    async def send(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        user: str = USER,
        message_id: str | None = None,
    ) -> str:
        """Deliver an inbound message (asserting a 200); returns the provider's message id."""
        ...

    async def post(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        message_id: str | None = None,
        tamper: bool = False,
        to_unknown: bool = False,
    ) -> int:
        """Deliver an inbound message and return the gateway's status: signed for a changed body (`tamper`) or
        addressed to no tenant of the gateway (`to_unknown`)."""
        ...

    def sent(self) -> list[Sent]: ...

    async def report(self, sent: Sent, *, delivered: bool, code: str = "", message: str = "") -> int:
        """Post the provider's delivery status for `sent`; the gateway's answer."""
        ...


async def wait_sent(phone: Phone, count: int, timeout: float = 10.0) -> list[Sent]:
    deadline = time.monotonic() + timeout
    while len(phone.sent()) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    sent = phone.sent()
    assert len(sent) >= count, f"{len(sent)} of {count} messages sent"
    return sent


class TwilioPhone:
    provider = "twilio"
    inbound_media = outbound_media = 10
    outbound_media_with_text = True

    def __init__(self, gw: Harness, tenant: str = V1) -> None:
        self.gw = gw
        self.tenant = tenant

    def _form(
        self, text: str, media: list[tuple[str, str]] | None, user: str, message_id: str | None
    ) -> dict[str, str]:
        return inbound_form(text, media, user=user, tenant=self.tenant, sid=message_id)

    async def send(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        user: str = USER,
        message_id: str | None = None,
    ) -> str:
        form = self._form(text, media, user, message_id)
        status, body, _ = await self.gw.post_form(form)
        assert status == 200, body
        return form["MessageSid"]

    async def post(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        message_id: str | None = None,
        tamper: bool = False,
        to_unknown: bool = False,
    ) -> int:
        form = self._form(text, media, USER, message_id)
        if to_unknown:
            form["To"] = "+19998887777"
        signature = self.gw.sign(self.gw.url + "/sms.receiver/SmsRecv", form)
        if tamper:
            form["Body"] = text + " (changed)"
        status, _, _ = await self.gw.post_form(form, signature=signature)
        return status

    def sent(self) -> list[Sent]:
        return [self._neutral(m) for m in self.gw.twilio.messages]

    @staticmethod
    def _neutral(m: SentMessage) -> Sent:
        callback = m.status_callback or ""
        our_id = parse_qs(urlsplit(callback).query).get("mid", [None])[0]
        return Sent(m.to, m.from_ or "", m.body or "", tuple(m.media_urls), our_id, m)

    async def report(self, sent: Sent, *, delivered: bool, code: str = "", message: str = "") -> int:
        extra = {"ErrorCode": code, "ErrorMessage": message} if code else {}
        return await self.gw.post_status(sent.raw, "delivered" if delivered else "undelivered", **extra)


class SinchPhone:
    provider = "sinch"
    inbound_media = 1  # Sinch delivers one media per inbound message (media_message / media_card_message)
    outbound_media = 1
    outbound_media_with_text = True  # a card: its description and one media

    def __init__(self, gw: Harness) -> None:
        assert gw.sinch is not None, "running_gateway(sinch=True)"
        self.gw = gw
        self.fake: FakeSinch = gw.sinch
        self.tenant = SINCH
        self.url = gw.url + "/sms.receiver/sinch"

    def _event(
        self,
        text: str,
        media: list[tuple[str, str]] | None,
        user: str,
        message_id: str | None,
        app_id: str | None = None,
    ) -> dict[str, Any]:
        media = media or []
        assert len(media) <= 1, "Sinch delivers one media per inbound message"
        # Sinch gives inbound identities without '+' and media without a content type.
        return inbound_event(
            app_id or self.fake.app_id,
            user.lstrip("+"),
            text=text or None,
            media_url=media[0][0] if media else None,
            message_id=message_id or new_ulid(),
        )

    async def send(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        user: str = USER,
        message_id: str | None = None,
    ) -> str:
        event = self._event(text, media, user, message_id)
        status, body = await self.fake.post_webhook(self.gw.http, self.url, event)
        assert status == 200, body
        return str(event["message"]["id"])

    async def post(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        message_id: str | None = None,
        tamper: bool = False,
        to_unknown: bool = False,
    ) -> int:
        event = self._event(text, media, USER, message_id, app_id=new_ulid() if to_unknown else None)
        if not tamper:
            return (await self.fake.post_webhook(self.gw.http, self.url, event))[0]
        headers = sign_webhook(self.fake.webhook_secret, serialize(event))
        event["message"]["contact_message"] = {"text_message": {"text": text + " (changed)"}}
        async with self.gw.http.post(
            self.url, data=serialize(event), headers={**headers, "Content-Type": "application/json"}
        ) as response:
            return response.status

    def sent(self) -> list[Sent]:
        return [self._neutral(m) for m in self.fake.messages]

    @staticmethod
    def _neutral(m: SinchSent) -> Sent:
        media = (m.media_url,) if m.media_url else ()
        return Sent(m.recipient, m.channel_properties.get("MMS_SENDER", ""), m.text, media, m.metadata, m)

    async def report(self, sent: Sent, *, delivered: bool, code: str = "", message: str = "") -> int:
        event = self.fake.deliver(
            sent.raw,
            "DELIVERED" if delivered else "FAILED",
            reason_code=code or None,
            reason_description=message or None,
        )
        return (await self.fake.post_webhook(self.gw.http, self.url, event))[0]


class TeleSignPhone:
    provider = "telesign"
    inbound_media = 10
    outbound_media = 1
    outbound_media_with_text = False  # TeleSign's MMS carries no text: the text goes by SMS of its own

    def __init__(self, gw: Harness) -> None:
        assert gw.telesign is not None, "running_gateway(telesign=True)"
        self.gw = gw
        self.fake: FakeTeleSign = gw.telesign
        self.tenant = TELESIGN
        self.url = f"{gw.url}/sms.receiver/telesign/{TELESIGN}"

    def callback(
        self, text: str, media: list[tuple[str, str]] | None, user: str, message_id: str | None = None
    ) -> dict[str, Any]:
        """The MO callback TeleSign posts for a user's message (mo_sms, or mo_mms with media)."""
        number = user.lstrip("+")
        if not media:
            return mo_sms(number, text, reference_id=message_id or new_reference_id())
        images = [url for url, content_type in media if content_type.startswith("image/")]
        videos = [url for url, content_type in media if content_type.startswith("video/")]
        return mo_mms(
            number,
            texts=[text] if text else [],
            images=images,
            videos=videos,
            reference_id=message_id or new_reference_id(),
        )

    async def send(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        user: str = USER,
        message_id: str | None = None,
    ) -> str:
        callback = self.callback(text, media, user, message_id)
        status, body = await self.fake.post_callback(self.gw.http, self.url, callback)
        assert status == 200, body
        return str(callback["reference_id"])

    async def post(
        self,
        text: str = "hello",
        media: list[tuple[str, str]] | None = None,
        *,
        message_id: str | None = None,
        tamper: bool = False,
        to_unknown: bool = False,
    ) -> int:
        callback = self.callback(text, media, USER, message_id)
        url = f"{self.gw.url}/sms.receiver/telesign/19998887777" if to_unknown else self.url
        signature = sign_callback(self.fake.api_key, telesign_serialize(callback)) if tamper else None
        if tamper:
            callback["user_response"]["mo_message"] = text + " (changed)"
        return (await self.fake.post_callback(self.gw.http, url, callback, signature=signature))[0]

    def sent(self) -> list[Sent]:
        return [self._neutral(m) for m in self.fake.messages]

    @staticmethod
    def _neutral(m: TeleSignSent) -> Sent:
        media = (m.mms_url,) if m.mms_url else ()
        # A media message's SMS text is only its fallback (the link): what it carries is the media.
        return Sent(
            "+" + m.phone_number, m.sender_id or "", "" if media else (m.sms_text or ""), media, m.external_id, m
        )

    async def report(self, sent: Sent, *, delivered: bool, code: str = "", message: str = "") -> int:
        callback = self.fake.deliver(
            sent.raw, "delivered" if delivered else "failed", failure_code=int(code) if code else 3031
        )
        return (await self.fake.post_callback(self.gw.http, self.url, callback))[0]


def phone(gw: Harness, provider: str) -> Phone:
    phones: dict[str, type[TwilioPhone | SinchPhone | TeleSignPhone]] = {
        "twilio": TwilioPhone,
        "sinch": SinchPhone,
        "telesign": TeleSignPhone,
    }
    return phones[provider](gw)


def inbound_sid(provider: str) -> str:
    """A fresh provider message id of the provider's own shape."""
    return {"twilio": new_sid, "sinch": new_ulid, "telesign": new_reference_id}[provider]()
