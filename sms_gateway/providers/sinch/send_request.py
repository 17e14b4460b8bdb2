"""The body of `POST /v1/projects/{project_id}/messages:send` for one OutboundMessage: MMS first, then SMS if the
MMS channel fails (Sinch reports SWITCHING_CHANNEL between the two)."""

from __future__ import annotations

import json

from sms_gateway.model import JSON, OutboundMessage
from sms_gateway.providers.sinch.settings import SinchConfig

CHANNEL_PRIORITY = ("MMS", "SMS")
MAX_CORRELATION_ID_CHARS = 128  # Sinch's limit; message_metadata takes up to 1,024


def send_request(message: OutboundMessage, settings: SinchConfig) -> JSON:
    """The request for a message with at most one media (the sender refuses more)."""
    properties = {"MMS_SENDER": settings.mms_sender or message.tenant_number}
    if settings.sms_sender:
        properties["SMS_SENDER"] = settings.sms_sender
    body: JSON = {
        "app_id": settings.app_id,
        "recipient": {
            "identified_by": {
                "channel_identities": [
                    {"channel": channel, "identity": message.user_number} for channel in CHANNEL_PRIORITY
                ]
            }
        },
        "message": app_message(message),
        "channel_priority_order": list(CHANNEL_PRIORITY),
        "channel_properties": properties,
        # Echoed in delivery reports (as `metadata`) and kept with the message, where find_sent looks for it.
        "message_metadata": message.message_id,
    }
    if len(message.message_id) <= MAX_CORRELATION_ID_CHARS:
        body["correlation_id"] = message.message_id
    return body


def app_message(message: OutboundMessage) -> JSON:
    """Text alone, media alone, or both as a card (its description is the MMS body; it has no title, which
    would become the MMS subject)."""
    if not message.media_urls:
        return {"text_message": {"text": message.text}}
    media = {"url": message.media_urls[0]}
    if message.text:
        return {"card_message": {"description": message.text, "media_message": media}}
    return {"media_message": media}


def encode(body: JSON) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
