"""Mobile-originated callbacks: a user's MMS (`sub_resource: "mo_mms"`) or SMS (`"mo_sms"`) -> InboundMessage.

An MMS's `content` holds its parts by kind and number: `subject`, `text_1`, `text_2`…, `url_image_1`…,
`url_video_1`…, `url_audio_1`…. The message's text is the subject (when there is one: it is what the user wrote
first) and then the texts in their numbered order, one per line. Its media are the images, then the videos,
then the audios, each kind in its numbered order.
"""

from __future__ import annotations

import re

import structlog

from sms_gateway.model import InboundMessage, Media
from sms_gateway.providers.base import InvalidRequest
from sms_gateway.providers.json_fields import Fields
from sms_gateway.providers.media_types import KINDS, content_type_of
from sms_gateway.providers.telesign.fields import read_reference_id
from sms_gateway.providers.telesign.settings import TeleSignConfig

log = structlog.get_logger("sms_gateway.providers.telesign")

PROVIDER = TeleSignConfig.KIND
MAX_TEXT_CHARS = 10_000  # of the whole message; a part is checked against it too
MAX_MEDIA = 10
TEXT_SEPARATOR = "\n"
_NUMBERED = re.compile(r"(text|url_image|url_video|url_audio)_([0-9]{1,4})")


def parse_mo_mms(callback: Fields, tenant_number: str, received_at: float) -> InboundMessage | None:
    """The user's MMS; None for one with neither text nor media (logged)."""
    reference_id = read_reference_id(callback)
    user = callback.required_phone_number("phone_number")
    content = callback.required_object("content")
    numbered = _numbered_parts(content)
    texts = [content.text(key, max_chars=MAX_TEXT_CHARS) for key in ("subject", *numbered["text"])]
    text = TEXT_SEPARATOR.join(part for part in texts if part is not None and part.strip())
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequest(f"{content.path} has more than {MAX_TEXT_CHARS} characters of text")
    media = tuple(
        Media(url, content_type_of(url, kind))
        for kind in KINDS
        for url in (content.http_url(key) for key in numbered[f"url_{kind}"])
    )
    return _message(reference_id, tenant_number, user, text, media, received_at)


def parse_mo_sms(callback: Fields, tenant_number: str, received_at: float) -> InboundMessage | None:
    """The user's SMS; None for an empty one (logged). The user is `user_response.phone_number`, else the
    callback's `phone_number`."""
    reference_id = read_reference_id(callback)
    response = callback.required_object("user_response")
    text = response.text("mo_message", max_chars=MAX_TEXT_CHARS) or ""
    user = response.phone_number("phone_number") or callback.phone_number("phone_number")
    if user is None:
        raise InvalidRequest(f"{response.where('phone_number')} is missing")
    return _message(reference_id, tenant_number, user, text, (), received_at)


def _numbered_parts(content: Fields) -> dict[str, list[str]]:
    """The keys of `content`'s numbered parts by kind ("text", "url_image", ...), each kind in number order;
    blank and null parts are left out (a gap in the numbering is not an error)."""
    found: dict[str, list[tuple[int, str]]] = {"text": [], **{f"url_{kind}": [] for kind in KINDS}}
    media = 0
    for key, value in content.data.items():
        match = _NUMBERED.fullmatch(key)
        if match is None or value is None or (isinstance(value, str) and not value.strip()):
            continue
        found[match[1]].append((int(match[2]), key))
        media += match[1] != "text"
        if media > MAX_MEDIA:
            raise InvalidRequest(f"{content.path} has more than {MAX_MEDIA} media")
    return {kind: [key for _, key in sorted(keys)] for kind, keys in found.items()}


def _message(
    reference_id: str, tenant_number: str, user: str, text: str, media: tuple[Media, ...], received_at: float
) -> InboundMessage | None:
    if not text.strip():
        text = ""
    if not text and not media:
        log.info("telesign.webhook.ignored", reason="no text or media", telesign_reference_id=reference_id)
        return None
    return InboundMessage(
        provider=PROVIDER,
        message_id=reference_id,
        tenant_number=tenant_number,
        user_number=user,
        text=text,
        media=media,
        received_at=received_at,
    )
