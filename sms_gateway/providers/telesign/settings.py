"""A TeleSign tenant's settings (`smsProvider.type: telesign`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from sms_gateway.config.model import KeyPath, ProviderConfig, sender_is_tenant_number

AuthMethod = Literal["basic", "digest"]
MessageType = Literal["ARN", "MKT", "OTP"]
DEFAULT_URL = "https://rest-ww.telesign.com"
DEFAULT_FALLBACK_SECONDS = 300


@dataclass(frozen=True, slots=True)
class TeleSignConfig(ProviderConfig):
    KIND: ClassVar[str] = "telesign"
    KEYS: ClassVar[Mapping[str, str]] = {
        "customerId": "customer_id",
        "apiKey": "api_key",
        "url": "url",
        "authMethod": "auth_method",
        "senderId": "sender_id",
        "fallbackTime": "fallback_seconds",
        "messageType": "message_type",
    }
    SECRETS: ClassVar[frozenset[str]] = frozenset({"apiKey"})

    customer_id: str = ""
    api_key: str = field(default="", repr=False)  # base64, as TeleSign issues it; decoded, it keys the HMACs
    url: str = DEFAULT_URL
    auth_method: AuthMethod = "basic"
    sender_id: str | None = None  # the tenant's phone number (MMS goes only from US short codes); None: as it
    fallback_seconds: int = DEFAULT_FALLBACK_SECONDS  # how long MMS is tried before SMS takes over (30-3600)
    message_type: MessageType = "ARN"

    @classmethod
    def config_problems(cls, tenants: Sequence[tuple[int, Mapping[str, Any]]]) -> list[tuple[KeyPath, str]]:
        """The sender id is the tenant's phone number; TeleSign signs its callbacks in the Authorization header,
        which HTTP Basic webhook credentials would need too."""
        problems = sender_is_tenant_number(tenants, "senderId")
        problems += [
            (
                ("tenants", i, "webHookCredentials"),
                "cannot be used with TeleSign: its callbacks carry their "
                "signature in the Authorization header, where HTTP Basic credentials would go",
            )
            for i, tenant in tenants
            if tenant.get("webHookCredentials") is not None
        ]
        return problems
