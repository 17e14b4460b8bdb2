"""The SMS/MMS providers the gateway speaks, by `smsProvider.type`: one package each, all behind `base.Provider`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sms_gateway.config.model import ProviderConfig
from sms_gateway.providers.base import Provider
from sms_gateway.providers.sinch import SinchProvider
from sms_gateway.providers.twilio import TwilioProvider

DEFAULT_KIND = "twilio"  # IBM's SMS Gateway spoke only Twilio: a tenant that names no type is a Twilio tenant

PROVIDER_TYPES: Mapping[str, type[Provider[Any, Any]]] = {
    TwilioProvider.kind: TwilioProvider,
    SinchProvider.kind: SinchProvider,
}


def settings_type(kind: str) -> type[ProviderConfig]:
    return PROVIDER_TYPES[kind].settings_type


def provider_secrets() -> frozenset[str]:
    """Every provider's secret setting names (masked wherever settings are shown)."""
    return frozenset().union(*(t.settings_type.SECRETS for t in PROVIDER_TYPES.values()))
