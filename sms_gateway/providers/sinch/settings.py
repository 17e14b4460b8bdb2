"""A Sinch tenant's settings (`smsProvider.type: sinch`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from sms_gateway.config.model import KeyPath, ProviderConfig, sender_is_tenant_number

Region = Literal["us", "eu", "br"]
DEFAULT_AUTH_URL = "https://auth.sinch.com/oauth2/token"


@dataclass(frozen=True, slots=True)
class SinchConfig(ProviderConfig):
    KIND: ClassVar[str] = "sinch"
    KEYS: ClassVar[Mapping[str, str]] = {
        "projectId": "project_id",
        "appId": "app_id",
        "keyId": "key_id",
        "keySecret": "key_secret",
        "region": "region",
        "webhookSecret": "webhook_secret",
        "mmsSender": "mms_sender",
        "smsSender": "sms_sender",
        "url": "url",
        "authURL": "auth_url",
    }
    SECRETS: ClassVar[frozenset[str]] = frozenset({"keySecret", "webhookSecret"})

    project_id: str = ""
    app_id: str = ""
    key_id: str = ""  # the access key's id and secret: OAuth2 client credentials
    key_secret: str = field(default="", repr=False)  # secrets stay out of reprs, logs and tracebacks
    region: Region = "us"
    webhook_secret: str = field(default="", repr=False)  # the secret of the app's webhook: callbacks are signed with it
    mms_sender: str | None = None  # the tenant's phone number (short code or long number); None: as tenantPhoneNumber
    sms_sender: str | None = None  # the SMS channel's sender, when MMS falls back to SMS
    url: str | None = None  # the API base; None: https://{region}.conversation.api.sinch.com
    auth_url: str = DEFAULT_AUTH_URL

    @classmethod
    def config_problems(cls, tenants: Sequence[tuple[int, Mapping[str, Any]]]) -> list[tuple[KeyPath, str]]:
        """The MMS sender is the tenant's phone number."""
        return sender_is_tenant_number(tenants, "mmsSender")

    @property
    def api_base(self) -> str:
        return (self.url or f"https://{self.region}.conversation.api.sinch.com").rstrip("/")
