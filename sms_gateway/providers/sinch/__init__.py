"""Sinch's Conversation API: MMS with SMS fallback, OAuth2 client credentials, and signed callbacks
(`x-sinch-webhook-signature`) for inbound messages and delivery reports on `/sms.receiver/sinch`.

Sinch's Python SDK is not used at runtime: it is synchronous and takes no async HTTP transport.
"""

from __future__ import annotations

from sms_gateway.providers.sinch.provider import CALLBACKS, LIMITS, SinchProvider
from sms_gateway.providers.sinch.sandbox import SinchSandbox
from sms_gateway.providers.sinch.sender import SinchSender
from sms_gateway.providers.sinch.settings import SinchConfig

__all__ = ["CALLBACKS", "LIMITS", "SinchConfig", "SinchProvider", "SinchSandbox", "SinchSender"]
