"""MESSAGE_INBOUND callbacks (`message`): a user's MMS or SMS -> InboundMessage."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from sms_gateway.model import InboundMessage, Media
from sms_gateway.providers.json_fields import Fields
from sms_gateway.providers.media_types import content_type_of
from sms_gateway.providers.sinch.settings import SinchConfig

log = structlog.get_logger("sms_gateway.providers.sinch")

PROVIDER = SinchConfig.KIND
# Channels whose identities are phone numbers we answer on. Plain-text replies to an MMS arrive on SMS.
CHANNELS = frozenset({"MMS", "SMS"})
MAX_ID_CHARS = 128  # Sinch's ids (messages, apps) are 26-character ULIDs
MAX_TEXT_CHARS = 10_000
MAX_FILENAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class Content:
    """What a contact message carries that the gateway passes on."""

    text: str
    media: tuple[Media, ...]


def parse_inbound(envelope: Fields, tenant_number: str, received_at: float) -> InboundMessage | None:
    """The user's message; None for what the gateway does not take (another direction or channel, a kind of
    contact message with neither text nor media, an empty message)."""
    message = envelope.required_object("message")
    direction = message.text("direction", max_chars=32)
    message_id = message.identifier("id", max_chars=MAX_ID_CHARS)
    if direction not in (None, "TO_APP"):
        log.info("sinch.webhook.ignored", reason="direction", direction=direction, sinch_message_id=message_id)
        return None
    identity = message.required_object("channel_identity")
    channel = identity.required_text("channel", max_chars=32).strip()
    if channel not in CHANNELS:
        log.info("sinch.webhook.ignored", reason="channel", channel=channel, sinch_message_id=message_id)
        return None
    user = identity.required_phone_number("identity")
    content = contact_content(message.required_object("contact_message"))
    if content is None or (not content.text and not content.media):
        log.info("sinch.webhook.ignored", reason="no text or media", sinch_message_id=message_id)
        return None
    return InboundMessage(
        provider=PROVIDER,
        message_id=message_id,
        tenant_number=tenant_number,
        user_number=user,
        text=content.text,
        media=content.media,
        received_at=received_at,
    )


def contact_content(contact: Fields) -> Content | None:
    """The text and media of a contact message; None for kinds the gateway does not take (location, product
    response, channel-specific, fallback: logged). Sinch sends one kind per message."""
    if (card := contact.object("media_card_message")) is not None:
        return Content(card.text("caption", max_chars=MAX_TEXT_CHARS) or "", (_media(card),))
    if (media := contact.object("media_message")) is not None:
        return Content("", (_media(media),))
    if (text := contact.object("text_message")) is not None:
        return Content(text.text("text", max_chars=MAX_TEXT_CHARS) or "", ())
    if (choice := contact.object("choice_response_message")) is not None:
        # The chosen option's postback data is what the user answered.
        return Content(choice.text("postback_data", max_chars=MAX_TEXT_CHARS) or "", ())
    kinds = sorted(key[:40] for key in contact.data if key != "reply_to")[:5]
    log.info("sinch.webhook.ignored", reason="contact message kind", kinds=kinds)
    return None


def _media(fields: Fields) -> Media:
    url = fields.http_url("url")
    filename = fields.text("filename_override", max_chars=MAX_FILENAME_CHARS)
    return Media(url=url, content_type=content_type_of(url, filename=filename))
