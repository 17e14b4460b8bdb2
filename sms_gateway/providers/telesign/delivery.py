"""Delivery callbacks of TeleSign's Transaction Callback Service: what became of a message we sent ->
DeliveryStatus.

A callback carries the message's status (`status.code`, with `last_channel`) and each channel's own
(`channel_status: [{"mms": {code, description, ...}}, {"sms": {...}}]`). Each status code has its own status name,
since the core keeps one status per (message, name):

    3000 delivered              3004 sent_unconfirmed (no handset receipts in that region)
    3001 in_progress            3005 read
    3002 delivered_to_gateway   3039 final_status_unknown
    3040 queued                 any other code: "failed_<code>" (a final failure), or "status_<code>" for a
                                code TeleSign has not documented (passed on, not taken for a failure)

The MMS leg giving up (3055 channel not supported by the device, 3056 not delivered within fallback_time, 3062
MMS not supported, 3100/3200/3306 channel unknown, not enabled or without content) hands the message to SMS,
which the gateway always names after MMS: that is the status "mms_fallback", `fallback` and not a failure, with
the MMS leg's code as its error. TeleSign may report it on its own (the message's status is the MMS leg's code)
or only in `channel_status` beside the SMS leg's status: then the callback gives two statuses, "mms_fallback" and
the SMS leg's (unless that is a failure, which says it all). Either way the core takes "mms_fallback" once.

A failure's error is its last leg's code and description where that leg failed with a code of its own (the
message's 3003 "Delivery error" is reported as the SMS leg's 3031 "Permanent phone error"); its status name stays
the message's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from sms_gateway.model import DeliveryStatus
from sms_gateway.providers.base import InvalidRequest
from sms_gateway.providers.json_fields import Fields, blank_to_none
from sms_gateway.providers.telesign.fields import MAX_ID_CHARS, read_reference_id, status_code
from sms_gateway.providers.telesign.settings import TeleSignConfig

PROVIDER = TeleSignConfig.KIND
MMS = "mms"

PROGRESS: Mapping[int, str] = {
    3000: "delivered",
    3001: "in_progress",
    3002: "delivered_to_gateway",
    3004: "sent_unconfirmed",
    3005: "read",
    3039: "final_status_unknown",
    3040: "queued",
}
# A channel's failure after which TeleSign tries the next channel.
HANDOVER = frozenset({3055, 3056, 3062, 3100, 3200, 3306})
FALLBACK = "mms_fallback"
# TeleSign's documented Messaging error codes (developer.telesign.com, "All status and error codes").
FAILURES = (
    frozenset(
        {
            3003,
            3006,
            3011,
            3012,
            *range(3030, 3039),
            *range(3041, 3060),
            3061,
            *range(3071, 3074),
            *range(3101, 3116),
            *range(3202, 3210),
            *range(3300, 3306),
            *range(3400, 3414),
            3500,
            3601,
        }
    )
    - PROGRESS.keys()
    - HANDOVER
)

MAX_CHANNELS = 10  # the gateway names two; TeleSign knows six
MAX_CHANNEL_NAME_CHARS = 32
MAX_DESCRIPTION_CHARS = 2000
MAX_EXTERNAL_ID_CHARS = 100  # TeleSign's limit on external_id, which it echoes back


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    channel: str  # lower case: "mms", "sms"
    code: int
    description: str | None


def parse_delivery(callback: Fields, tenant_number: str) -> list[DeliveryStatus]:
    """The callback's statuses: the message's, after "mms_fallback" when `channel_status` shows the MMS leg
    gave up and the message has not failed."""
    reference_id = read_reference_id(callback)
    status = callback.required_object("status")
    code = status_code(status)
    description = blank_to_none(status.text("description", max_chars=MAX_DESCRIPTION_CHARS))
    channels = channel_statuses(callback)
    leg = _channel_name(status, "last_channel") or (channels[-1].channel if channels else "")
    our_id = blank_to_none(callback.text("external_id", max_chars=MAX_EXTERNAL_ID_CHARS))
    user = callback.phone_number("phone_number")

    def report(name: str, *, failed: bool = False, error: ChannelStatus | None = None) -> DeliveryStatus:
        return DeliveryStatus(
            provider=PROVIDER,
            provider_message_id=reference_id,
            status=name,
            failed=failed,
            fallback=name == FALLBACK,
            our_message_id=our_id,
            error_code=str(error.code) if error is not None else None,
            error_message=error.description if error is not None else None,
            tenant_number=tenant_number,
            user_number=user,
        )

    message = ChannelStatus(leg, code, description)
    if code in HANDOVER and leg in (MMS, ""):
        # A leg the callback does not name is taken for MMS: the gateway names SMS last or alone, so only MMS
        # hands a message over.
        return [report(FALLBACK, error=message)]
    if code in FAILURES or code in HANDOVER:
        return [report(f"failed_{code}", failed=True, error=_with_leg_reason(message, channels))]
    name = PROGRESS.get(code, f"status_{code}")
    gave_up = (
        None
        if leg == MMS
        else next((entry for entry in channels if entry.channel == MMS and _gave_up(entry.code)), None)
    )
    return ([report(FALLBACK, error=gave_up)] if gave_up is not None else []) + [report(name)]


def channel_statuses(callback: Fields) -> list[ChannelStatus]:
    """`channel_status`: one single-key object per channel tried, in order."""
    entries: list[ChannelStatus] = []
    for entry in callback.objects("channel_status", max_items=MAX_CHANNELS):
        if len(entry.data) != 1:
            raise InvalidRequest(f"{entry.path} must name one channel")
        (channel,) = entry.data
        if not channel.strip() or len(channel) > MAX_CHANNEL_NAME_CHARS:
            raise InvalidRequest(f"{entry.path} does not name a channel")
        details = entry.required_object(channel)
        details.text("reference_id", max_chars=MAX_ID_CHARS)
        entries.append(
            ChannelStatus(
                channel.strip().lower(),
                status_code(details),
                blank_to_none(details.text("description", max_chars=MAX_DESCRIPTION_CHARS)),
            )
        )
    return entries


def _with_leg_reason(message: ChannelStatus, channels: list[ChannelStatus]) -> ChannelStatus:
    """A failure's reason: its last leg's own code and description where they say more than the message's
    (3031 "Permanent phone error" on SMS rather than the message's 3003 "Delivery error")."""
    leg = next((entry for entry in reversed(channels) if entry.channel == message.channel), None)
    if leg is None or leg.code == message.code or not (leg.code in FAILURES or leg.code in HANDOVER):
        return message
    return replace(leg, description=leg.description or message.description)


def _gave_up(code: int) -> bool:
    return code in HANDOVER or code in FAILURES


def _channel_name(fields: Fields, name: str) -> str | None:
    value = blank_to_none(fields.text(name, max_chars=MAX_CHANNEL_NAME_CHARS))
    return value.lower() if value is not None else None
