"""The body of `POST /v1/omnichannel` for one OutboundMessage.

A message with a media goes on MMS first and, if MMS gives up within `fallback_time`, on SMS with the media's link
(after the message's text, if it has any); a text-only message goes on SMS alone. TeleSign's MMS request has no
text, only the media's URL, which is why the gateway sends text in messages of its own (`media_with_text` is
False): a message with both, which the outbox does not make, would reach an MMS phone without its text.
"""

from __future__ import annotations

import json

from sms_gateway.config.model import normalise_number
from sms_gateway.model import JSON, OutboundMessage
from sms_gateway.providers.media_types import MediaKind, kind_of
from sms_gateway.providers.telesign.settings import TeleSignConfig

SEND_PATH = "/v1/omnichannel"
DEFAULT_TEMPLATE: MediaKind = "image"  # a URL that does not say what it is: pictures are most MMS
MAX_EXTERNAL_ID_CHARS = 100  # TeleSign's limit (printable ASCII); a longer id would refuse the message (3103)


def send_request(message: OutboundMessage, settings: TeleSignConfig, sender_id: str) -> JSON:
    """The request for a message with at most one media (the sender refuses more)."""
    sms_text = message.text
    channels: list[JSON] = []
    content: JSON = {}
    if message.media_urls:
        url = message.media_urls[0]
        channels.append({"channel": "mms", "fallback_time": settings.fallback_seconds})
        content["mms"] = {"template": mms_template(url), "parameters": {"url": url}}
        sms_text = f"{message.text}\n{url}" if message.text else url
    channels.append({"channel": "sms"})
    content["sms"] = {"template": "text", "parameters": {"text": sms_text}}
    body: JSON = {
        "channels": channels,
        "recipient": {"phone_number": normalise_number(message.user_number)},
        "message": content,
        "message_type": settings.message_type,
        "sender_id": sender_id,
    }
    # Echoed in delivery callbacks, so a status names our message even before TeleSign's answer is recorded.
    if _fits_external_id(message.message_id):
        body["external_id"] = message.message_id
    return body


def mms_template(url: str) -> MediaKind:
    """TeleSign's MMS template for the media at `url`: its kind by the extension, else DEFAULT_TEMPLATE."""
    return kind_of(url) or DEFAULT_TEMPLATE


def sender_id_of(settings: TeleSignConfig, tenant_number: str) -> str:
    """The number a tenant's messages come from: `senderId`, else the tenant's number; digits alone."""
    raw = settings.sender_id or tenant_number
    return normalise_number(raw) or raw.strip()


def encode(body: JSON) -> bytes:
    """Serialised once: the Digest signature covers these exact bytes."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _fits_external_id(message_id: str) -> bool:
    return 0 < len(message_id) <= MAX_EXTERNAL_ID_CHARS and message_id.isascii() and message_id.isprintable()
