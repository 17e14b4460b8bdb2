"""A Twilio tenant's settings (`smsProvider.type: twilio`, the default; IBM's SMS_PROVIDER_* variables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sms_gateway.config.model import KeyPath, ProviderConfig


@dataclass(frozen=True, slots=True)
class TwilioConfig(ProviderConfig):
    KIND: ClassVar[str] = "twilio"
    KEYS: ClassVar[Mapping[str, str]] = {
        "url": "url",
        "explicitURL": "explicit_url",
        "username": "username",
        "password": "password",
        "validateSignature": "validate_signature",
    }
    SECRETS: ClassVar[frozenset[str]] = frozenset({"password"})

    url: str = "https://api.twilio.com"
    explicit_url: str | None = None
    username: str = ""  # Twilio Account SID
    password: str = field(default="", repr=False)  # Twilio Auth Token (also the webhook signing key)
    validate_signature: bool = True

    @classmethod
    def config_warnings(cls, tenants: Sequence[tuple[int, Mapping[str, Any]]]) -> list[tuple[KeyPath, str]]:
        return [
            (("tenants", i, "smsProvider", "url"), "is ignored: explicitURL is the URL messages are sent to")
            for i, tenant in tenants
            if "url" in tenant["smsProvider"] and "explicitURL" in tenant["smsProvider"]
        ]

    @property
    def send_url(self) -> str:
        if self.explicit_url:
            return self.explicit_url
        return f"{self.url.rstrip('/')}/2010-04-01/Accounts/{self.username}/Messages.json"
