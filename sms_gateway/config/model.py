"""The one validated configuration every part of the gateway reads.

Built by `sms_gateway.config.load` from our YAML, IBM's environment variables and IBM's tenant JSON.
Times are kept in the units IBM uses for them (milliseconds for timeouts, seconds for sessions).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from sms_gateway.model import MessageLimits

KeyPath = tuple[str | int, ...]
EngineKind = Literal["watson_v1", "soe", "watson_v2", "echo"]
AuthKind = Literal["none", "basic", "iam", "bearer"]
V2PathStyle = Literal["environments", "legacy"]

IAM_DEFAULT_TOKEN_URL = "https://iam.cloud.ibm.com/identity/token"
V1_DEFAULT_VERSION = "2021-11-27"
V2_DEFAULT_VERSION = "2024-08-25"
DEFAULT_FAILED_REPLY = "We're sorry, but we can't respond to your message."


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A setting that is valid but probably not what the operator meant (ignored, overridden, or suspicious):
    `key` as the operator wrote it (a native key path, an environment variable, `<file>:<key>`)."""

    key: str
    message: str


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # secrets stay out of reprs, logs and tracebacks


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    url: str  # http://host:port
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    kind: EngineKind = "watson_v1"
    url: str = ""
    workspace_id: str | None = None
    assistant_id: str | None = None
    environment_id: str | None = None
    v2_path_style: V2PathStyle = "environments"
    api_version: str | None = None  # the ?version= date; None = the kind's default
    auth: AuthKind = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    apikey: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    token_url: str = IAM_DEFAULT_TOKEN_URL
    connect_timeout_ms: int = 30000
    read_timeout_ms: int = 30000
    max_retries: int = 2
    retry_interval_ms: int | None = None  # the wait before each retry; None: a short doubling backoff
    proxy: ProxyConfig | None = None

    @property
    def version_date(self) -> str:
        if self.api_version:
            return self.api_version
        return V2_DEFAULT_VERSION if self.kind == "watson_v2" else V1_DEFAULT_VERSION


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """The settings every SMS/MMS provider has; each provider's own settings subclass it (`KIND` names it)."""

    KIND: ClassVar[str] = ""
    # Native key -> field, for the provider's own fields (the common ones: config.build.PROVIDER_FIELDS).
    KEYS: ClassVar[Mapping[str, str]] = {}
    # Native keys whose values are secrets: masked in check-config and in configuration errors.
    SECRETS: ClassVar[frozenset[str]] = frozenset()

    connect_timeout_ms: int = 30000
    read_timeout_ms: int = 30000
    max_retries: int = 2
    retry_interval_ms: int | None = None  # the least wait before each retry; None: the outbox's backoff
    proxy: ProxyConfig | None = None

    @property
    def kind(self) -> str:
        return self.KIND

    @classmethod
    def config_problems(cls, tenants: Sequence[tuple[int, Mapping[str, Any]]]) -> list[tuple[KeyPath, str]]:
        """What the schema cannot say about this provider's tenants (index, native tenant dict), as (key path,
        reason); the tenants passed the schema's checks of their shape only loosely: check types before use."""
        return []

    @classmethod
    def config_warnings(cls, tenants: Sequence[tuple[int, Mapping[str, Any]]]) -> list[tuple[KeyPath, str]]:
        """Settings of this provider's (schema-valid) tenants that are ignored or suspicious, as (key path,
        reason)."""
        return []


def sender_is_tenant_number(tenants: Sequence[tuple[int, Mapping[str, Any]]], key: str) -> list[tuple[KeyPath, str]]:
    """For a provider whose sender setting `key` names the tenant's own number (the number its users text and its
    replies come from): a problem for each tenant where it names another."""
    problems: list[tuple[KeyPath, str]] = []
    for i, tenant in tenants:
        sender, number = tenant["smsProvider"].get(key), tenant.get("tenantPhoneNumber")
        if isinstance(sender, str) and isinstance(number, str) and normalise_number(sender) != normalise_number(number):
            problems.append(
                (
                    ("tenants", i, "smsProvider", key),
                    f"must be the tenant's phone number ({number}), the number its users text",
                )
            )
    return problems


@dataclass(frozen=True, slots=True)
class TenantConfig:
    phone_number: str
    engine: EngineConfig
    provider: ProviderConfig
    description: str = ""
    webhook_credentials: Credentials | None = None
    control_credentials: Credentials | None = None
    allow_session_create_via_sms: bool = False
    timeout_for_session: int = 3600  # seconds
    notify_on_session_timeout: bool = False
    conversation_failed_reply_message: str | None = DEFAULT_FAILED_REPLY


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """How outgoing media are checked, and the operator's own limits where stricter than the provider's."""

    max_media_per_message: int | None = None
    max_total_bytes: int | None = None
    max_body_chars: int | None = None
    mms_country_prefixes: tuple[str, ...] | None = None  # replaces the provider's list
    allow_private_hosts: bool = False  # only for local testing: a provider cannot fetch them
    check_size: bool = True  # HEAD each media URL to learn its size
    size_check_timeout_ms: int = 3000

    def limits(self, provider: MessageLimits) -> MessageLimits:
        """The provider's limits, narrowed by the operator's: a provider's maximum is never exceeded."""
        return dataclasses.replace(
            provider,
            max_media_per_message=_narrower(provider.max_media_per_message, self.max_media_per_message),
            max_total_bytes=_narrower(provider.max_total_bytes, self.max_total_bytes),
            max_body_chars=_narrower(provider.max_body_chars, self.max_body_chars),
            mms_country_prefixes=provider.mms_country_prefixes
            if self.mms_country_prefixes is None
            else self.mms_country_prefixes,
        )


def _narrower(provider: int, operator: int | None) -> int:
    return provider if operator is None else min(provider, operator)


@dataclass(frozen=True, slots=True)
class Config:
    tenants: tuple[TenantConfig, ...] = ()
    http_host: str = "0.0.0.0"
    http_port: int = 9080
    public_url: str | None = None  # the base URL providers call us on, e.g. https://sms.example.com
    store_url: str = "sqlite:///sms-gateway.db"
    log_level: str = "info"
    redact_phone_numbers: bool = True
    enable_transcription_messages: bool = False
    latency_reporting_threshold_ms: int = 10000
    media: MediaPolicy = field(default_factory=MediaPolicy)
    worker_concurrency: int = 64
    # How long a process holds a message or job it works on before another may take it (renewed while it
    # works). A crashed process's work is picked up sooner, once its heartbeat shows it gone (`owners`).
    lease_seconds: float = 30.0
    # Messages per second per sending number: keys "long_code", "toll_free", "short_code" or a number's digits.
    rate_limits: dict[str, float] = field(default_factory=dict)
    # X-Forwarded-Proto/-Host are believed only behind a proxy the operator says they trust.
    trust_forwarded_headers: bool = False
    # Seconds a client has to send a request's head, its body; how long an idle keep-alive connection stays open.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 30.0
    # The session-control API refuses calls without credentials unless the operator opts in.
    allow_anonymous_control: bool = False
    # Where a pipe's callbackURL may point besides public addresses: host names or CIDRs, and private networks.
    pipe_allowed_callback_hosts: tuple[str, ...] = ()
    allow_private_callbacks: bool = False
    _by_number: dict[str, TenantConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_number", {normalise_number(t.phone_number): t for t in self.tenants})

    def tenant_for(self, number: str) -> TenantConfig | None:
        return self._by_number.get(normalise_number(number))


@functools.lru_cache(maxsize=4096)  # hot: every webhook and turn looks its tenant up
def normalise_number(number: str) -> str:
    """Tenants are matched on digits, so "+15555550100", "15555550100" and "+1 555-555-0100" agree."""
    return "".join(ch for ch in number if ch.isdigit())
