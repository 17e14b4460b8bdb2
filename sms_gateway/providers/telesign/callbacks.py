"""A TeleSign callback: its JSON body and the events the gateway takes from it.

TeleSign posts a tenant's delivery callbacks and its users' messages to the URL registered for the tenant; a
callback with a `sub_resource` is a mobile-originated one (`mo_mms`, `mo_sms`, and others the gateway ignores),
one without is a delivery callback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from sms_gateway.providers.base import Event
from sms_gateway.providers.json_fields import Fields, blank_to_none
from sms_gateway.providers.telesign.delivery import parse_delivery
from sms_gateway.providers.telesign.inbound import parse_mo_mms, parse_mo_sms

log = structlog.get_logger("sms_gateway.providers.telesign")

CALLBACK_PATH = "/sms.receiver/telesign/{tenant}"  # {tenant}: the digits of the tenant's number
MO_MMS = "mo_mms"
MO_SMS = "mo_sms"
MAX_SUB_RESOURCE_CHARS = 64


def parse_callback(payload: Mapping[str, Any], tenant_number: str, received_at: float) -> Sequence[Event]:
    """The events of a callback for the tenant with `tenant_number`; none for callbacks the gateway ignores."""
    callback = Fields(payload)
    sub_resource = blank_to_none(callback.text("sub_resource", max_chars=MAX_SUB_RESOURCE_CHARS))
    if sub_resource is None:
        return parse_delivery(callback, tenant_number)
    sub_resource = sub_resource.strip().lower()
    if sub_resource == MO_MMS:
        message = parse_mo_mms(callback, tenant_number, received_at)
    elif sub_resource == MO_SMS:
        message = parse_mo_sms(callback, tenant_number, received_at)
    else:
        log.info("telesign.webhook.ignored", reason="sub_resource", sub_resource=sub_resource)
        return []
    return [] if message is None else [message]
