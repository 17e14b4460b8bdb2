"""A Sinch Conversation API callback: its JSON body, the app it is for, and the events the gateway takes from it.

Sinch posts every trigger of an app's webhook to the one URL; which event a callback is depends on the top-level
key it carries (`message` for MESSAGE_INBOUND, `message_delivery_report` for MESSAGE_DELIVERY, and others for
contact, conversation and submit notifications, which the gateway ignores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from sms_gateway.providers.base import Event
from sms_gateway.providers.json_fields import Fields
from sms_gateway.providers.sinch.delivery_reports import parse_delivery_report
from sms_gateway.providers.sinch.inbound import MAX_ID_CHARS, parse_inbound

log = structlog.get_logger("sms_gateway.providers.sinch")

CALLBACK_PATH = "/sms.receiver/sinch"  # every callback of every Sinch app the gateway serves
INBOUND_KEY = "message"
DELIVERY_KEY = "message_delivery_report"
# Keys of every callback, beside the one naming its event.
_ENVELOPE_KEYS = frozenset(
    {"app_id", "project_id", "accepted_time", "event_time", "message_metadata", "correlation_id"}
)


def app_id_of(payload: Mapping[str, Any]) -> str:
    """The Sinch app the callback is for."""
    return Fields(payload).identifier("app_id", max_chars=MAX_ID_CHARS)


def sender_id_of(payload: Mapping[str, Any]) -> str | None:
    """The number an inbound message was sent to, when Sinch says (`message.sender_id`); None otherwise."""
    message = payload.get(INBOUND_KEY)
    sender_id = message.get("sender_id") if isinstance(message, dict) else None
    return sender_id if isinstance(sender_id, str) and len(sender_id) <= 32 else None


def our_message_id_of(payload: Mapping[str, Any]) -> str | None:
    """Our id of the message a delivery report is about, when it carries one."""
    report = payload.get(DELIVERY_KEY)
    candidates = (report.get("metadata") if isinstance(report, dict) else None, payload.get("correlation_id"))
    return next((value for value in candidates if isinstance(value, str) and 0 < len(value) <= 1024), None)


def parse_callback(payload: Mapping[str, Any], tenant_number: str, received_at: float) -> Sequence[Event]:
    """The events of a callback for the tenant with `tenant_number`; none for events the gateway ignores."""
    envelope = Fields(payload)
    # A delivery report first, as Sinch's own SDK does.
    if payload.get(DELIVERY_KEY) is not None:
        return [parse_delivery_report(envelope, tenant_number)]
    if payload.get(INBOUND_KEY) is not None:
        message = parse_inbound(envelope, tenant_number, received_at)
        return [] if message is None else [message]
    event = next((key[:64] for key in payload if key not in _ENVELOPE_KEYS), None)
    log.info("sinch.webhook.ignored", reason="event", sinch_event=event)
    return []
