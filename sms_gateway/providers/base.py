"""The provider plug-in interface: what a provider owns and what the core asks of it.

A provider (one package under `sms_gateway.providers`) owns its webhook routes, how a webhook is addressed to a
tenant, verified and parsed into neutral `InboundMessage` / `DeliveryStatus` objects, the body a webhook is
acknowledged with, sending an `OutboundMessage` and classifying the outcome, finding a message it may already
have sent, its limits and its error codes. The core (`web.webhooks`, the outbox, conversations) calls these and
never names a provider.

A webhook goes through these steps, each the provider's, with the core's in between:

    address   which tenant is it for (InvalidRequest -> 400, UnknownTenant -> 403)
    (core)    the tenant's HTTP Basic webhook credentials, if it has any (401/403)
    verify    the provider's signature over the raw request (WebhookRefused -> 403)
    parse     the events it carries (InvalidRequest -> 400)
    (core)    store each event durably (503 when the store is down), then claim the replay key if any
    acknowledge   the provider's 200 answer
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from sms_gateway.config.model import Config, ProviderConfig, TenantConfig
from sms_gateway.http_client import CONNECTION_ERROR, HTTP_ERROR, INVALID_URL, TIMEOUT, TRANSPORT_NOT_SENT
from sms_gateway.model import DeliveryStatus, InboundMessage, MessageLimits, OutboundMessage, SendResult

if TYPE_CHECKING:
    from sms_gateway.providers.sandbox import Sandbox


__all__ = ["CONNECTION_ERROR", "HTTP_ERROR", "INVALID_URL", "TIMEOUT", "TRANSPORT_NOT_SENT"]


class InvalidRequest(Exception):
    """A provider webhook that cannot be understood (answered 400)."""


class Refusal(Exception):
    """A webhook refused for what may be the operator's mistake: `hint` tells them what to check (logged once
    per cause; never a secret, and no more than a few dozen characters of what the caller sent)."""

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        super().__init__(reason)
        self.hint = hint


class UnknownTenant(Refusal):
    """A webhook for a number or account that is not one of this gateway's tenants (answered 403)."""


class WebhookRefused(Refusal):
    """A webhook that does not prove it comes from the provider (answered 403): bad or missing signature,
    stale timestamp, unknown signing algorithm."""


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    method: str
    path: str  # an aiohttp route path; `{name}` parts reach the provider as WebhookRequest.path_params
    name: str  # the route's label in metrics (smsgw_webhooks_total{route=...})


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """One webhook request as received, before anything is believed of it."""

    route: WebhookRoute
    method: str
    url: str  # the URL the provider addressed: the gateway's public base + the raw path and query, byte-exact
    query: MultiMapping[str]  # repeated keys are kept
    headers: Mapping[str, str]  # case-insensitive
    content_type: str
    body: bytes
    path_params: Mapping[str, str]
    received_at: float  # time.time() when it arrived


P = TypeVar("P")
S = TypeVar("S", bound=ProviderConfig)


@dataclass(frozen=True, slots=True)
class Addressed(Generic[P]):
    """A webhook whose tenant is known; `payload` is its body as the provider decoded it (not yet verified)."""

    tenant: TenantConfig
    payload: P


@dataclass(frozen=True, slots=True)
class Replay:
    """Something a verified webhook may carry only once (a signature nonce): the core refuses a second request
    with the same key until `until`, and claims it only after the request's events are stored, so a request
    the store could not take is accepted when the provider sends it again."""

    key: str
    until: float


@dataclass(frozen=True, slots=True)
class Verified:
    """What `verify` found besides the request's origin: what it may carry only once."""

    replay: Replay | None = None


Event = InboundMessage | DeliveryStatus


class TenantDirectory(Protocol):
    """How a provider finds the tenant a webhook is for."""

    def by_number(self, number: str) -> TenantConfig | None:
        """The tenant with this phone number (compared by digits)."""
        ...

    async def by_message(self, message_id: str) -> TenantConfig | None:
        """The tenant that sent the message with our id `message_id` (StoreUnavailable when it cannot tell)."""
        ...


class Sender(Protocol):
    """Sends for one tenant. Tries once per call: the outbox retries, durably, with one policy for all."""

    kind: str

    async def send(self, message: OutboundMessage, callback_base: str | None) -> SendResult:
        """Hand the message to the provider; never raises for HTTP or network problems.

        `callback_base` is the gateway's public base URL when known, for a provider whose delivery statuses are
        addressed per message.
        """
        ...

    async def find_sent(self, message: OutboundMessage, since: float) -> str | None:
        """The provider's id of this message if the provider already has it (LookupError: cannot tell)."""
        ...

    def may_have_sent(self, error_code: str) -> bool:
        """Whether an attempt that failed with `error_code` (a SendResult's) may have created the message."""
        ...


class Provider(abc.ABC, Generic[P, S]):
    """One provider family: its webhooks, its senders and its limits. One instance per application."""

    kind: ClassVar[str]
    settings_type: ClassVar[type[ProviderConfig]]
    routes: ClassVar[tuple[WebhookRoute, ...]]  # the first: the one to register with the provider (shown at start)

    def __init__(self, config: Config) -> None:
        self.config = config

    def settings(self, tenant: TenantConfig) -> S:
        """The tenant's provider settings, as this provider's own type."""
        settings = tenant.provider
        if not isinstance(settings, self.settings_type):
            raise TypeError(f"tenant {tenant.phone_number} is not a {self.kind} tenant")
        return settings  # type: ignore[return-value]

    # Webhooks -------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def address(self, hook: WebhookRequest, tenants: TenantDirectory) -> Addressed[P]:
        """Decode the body and find its tenant: InvalidRequest (400), UnknownTenant (403)."""

    @abc.abstractmethod
    def verify(self, hook: WebhookRequest, addressed: Addressed[P]) -> Verified:
        """Check that the provider sent it (WebhookRefused otherwise)."""

    @abc.abstractmethod
    def parse(self, hook: WebhookRequest, addressed: Addressed[P]) -> Sequence[Event]:
        """The inbound messages and delivery statuses it carries (none for events the gateway ignores)."""

    @abc.abstractmethod
    def acknowledge(self, hook: WebhookRequest) -> web.Response:
        """The 200 answer to a webhook whose events are stored (or were already)."""

    # Sending --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def limits(self, tenant: TenantConfig) -> MessageLimits:
        """What one message to this provider may carry."""

    @abc.abstractmethod
    def sender(self, tenant: TenantConfig, http: aiohttp.ClientSession) -> Sender:
        """The tenant's sender, on the application's HTTP session."""

    # Trying it out --------------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def sandbox(cls) -> Sandbox:
        """A local stand-in for the provider's API and a user's phone (`sms-gateway demo`)."""
