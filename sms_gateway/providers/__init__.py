"""The SMS/MMS providers the gateway speaks, by `smsProvider.type`: one package each, all behind `base.Provider`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from sms_gateway.config.model import ProviderConfig
from sms_gateway.providers.base import Provider
from sms_gateway.providers.sinch import SinchProvider
from sms_gateway.providers.telesign import TeleSignProvider
from sms_gateway.providers.twilio import TwilioProvider

DEFAULT_KIND = "twilio"  # IBM's SMS Gateway spoke only Twilio: a tenant that names no type is a Twilio tenant

PROVIDER_TYPES: Mapping[str, type[Provider[Any, Any]]] = {
    TwilioProvider.kind: TwilioProvider,
    SinchProvider.kind: SinchProvider,
    TeleSignProvider.kind: TeleSignProvider,
}


def settings_type(kind: str) -> type[ProviderConfig]:
    return PROVIDER_TYPES[kind].settings_type


@functools.cache
def provider_integer_keys() -> frozenset[str]:
    """Every provider's own keys whose values are whole numbers (IBM's tenant JSON writes them as strings)."""
    keys: set[str] = set()
    for provider_type in PROVIDER_TYPES.values():
        settings = provider_type.settings_type
        types = {field.name: field.type for field in dataclasses.fields(settings)}
        keys |= {key for key, name in settings.KEYS.items() if types[name] in ("int", int)}
    return frozenset(keys)


def provider_secrets() -> frozenset[str]:
    """Every provider's secret setting names (masked wherever settings are shown)."""
    return frozenset().union(*(t.settings_type.SECRETS for t in PROVIDER_TYPES.values()))
