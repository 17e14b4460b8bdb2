"""TeleSign's Messaging API (`POST /v1/omnichannel`): MMS with SMS fallback from US short codes, SMS otherwise,
with Basic or Digest ("TSA") authentication; signed delivery callbacks and users' messages (`mo_mms`, `mo_sms`)
on `/sms.receiver/telesign/{digits of the tenant's number}`.

TeleSign's Python SDKs are not used at runtime: they are synchronous (requests).
"""

from __future__ import annotations

from sms_gateway.providers.telesign import errors
from sms_gateway.providers.telesign.provider import CALLBACKS, MMS_LIMITS, SMS_LIMITS, TeleSignProvider, limits_for
from sms_gateway.providers.telesign.sandbox import TeleSignSandbox
from sms_gateway.providers.telesign.sender import TeleSignSender
from sms_gateway.providers.telesign.settings import TeleSignConfig

__all__ = [
    "CALLBACKS",
    "MMS_LIMITS",
    "SMS_LIMITS",
    "TeleSignConfig",
    "TeleSignProvider",
    "TeleSignSandbox",
    "TeleSignSender",
    "errors",
    "limits_for",
]
