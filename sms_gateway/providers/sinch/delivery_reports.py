"""MESSAGE_DELIVERY callbacks (`message_delivery_report`): what became of a message we sent -> DeliveryStatus."""

from __future__ import annotations

import re

from sms_gateway.model import DeliveryStatus
from sms_gateway.providers.base import InvalidRequest
from sms_gateway.providers.json_fields import Fields, blank_to_none
from sms_gateway.providers.sinch.inbound import MAX_ID_CHARS
from sms_gateway.providers.sinch.settings import SinchConfig

PROVIDER = SinchConfig.KIND
FAILED = "FAILED"  # no channel left to try; SWITCHING_CHANNEL (MMS failed, SMS is tried next) is not a failure
SWITCHING_CHANNEL = "SWITCHING_CHANNEL"  # the MMS channel gave up: the message goes by SMS (the next channel)
# Sinch's statuses are upper-case words (QUEUED_ON_CHANNEL, DELIVERED, READ, FAILED, SWITCHING_CHANNEL); it may
# add more, which pass on as statuses that are not failures.
_STATUS = re.compile(r"[A-Z][A-Z_]{0,63}")
MAX_METADATA_CHARS = 1024  # Sinch's limit on message_metadata, echoed back as the report's metadata
MAX_REASON_CODE_CHARS = 64
MAX_REASON_DESCRIPTION_CHARS = 2000
_UNSPECIFIED_SUB_CODE = "UNSPECIFIED_SUB_CODE"


def parse_delivery_report(envelope: Fields, tenant_number: str) -> DeliveryStatus:
    report = envelope.required_object("message_delivery_report")
    message_id = report.identifier("message_id", max_chars=MAX_ID_CHARS)
    status = report.required_text("status", max_chars=64).strip()
    if not _STATUS.fullmatch(status):
        raise InvalidRequest(f"{report.where('status')} is not a Sinch delivery status (an upper-case word)")
    identity = report.object("channel_identity")
    reason = report.object("reason")
    code = description = None
    if reason is not None:
        code = blank_to_none(reason.text("code", max_chars=MAX_REASON_CODE_CHARS))
        description = _reason_description(reason)
    # Our id went out as message_metadata (echoed as the report's metadata) and as correlation_id.
    our_id = blank_to_none(report.text("metadata", max_chars=MAX_METADATA_CHARS)) or blank_to_none(
        envelope.text("correlation_id", max_chars=MAX_ID_CHARS)
    )
    return DeliveryStatus(
        provider=PROVIDER,
        provider_message_id=message_id,
        status=status.lower(),
        failed=status == FAILED,
        fallback=status == SWITCHING_CHANNEL,
        our_message_id=our_id,
        error_code=code,
        error_message=description,
        tenant_number=tenant_number,
        user_number=identity.required_phone_number("identity") if identity is not None else None,
    )


def _reason_description(reason: Fields) -> str | None:
    """The reason's description, with its sub-code when that says more (ATTACHMENT_REJECTED, INACTIVE_SENDER)."""
    description = blank_to_none(reason.text("description", max_chars=MAX_REASON_DESCRIPTION_CHARS))
    sub_code = blank_to_none(reason.text("sub_code", max_chars=MAX_REASON_CODE_CHARS))
    if sub_code is None or sub_code == _UNSPECIFIED_SUB_CODE:
        return description
    return f"{description} ({sub_code})" if description else sub_code
