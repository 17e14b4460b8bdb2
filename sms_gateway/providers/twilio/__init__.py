"""Twilio Programmable Messaging: inbound webhooks (IBM's `/sms.receiver/SmsRecv`), status callbacks,
`X-Twilio-Signature`, and sending through the Messages API.

twilio-python is used only for `RequestValidator` (the reference signature algorithm) and `MessagingResponse`
(TwiML); its HTTP client never runs on the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import MultiDict, MultiDictProxy, MultiMapping

from sms_gateway.config.model import TenantConfig
from sms_gateway.model import MessageLimits
from sms_gateway.providers.base import (
    Addressed,
    Event,
    InvalidRequest,
    Provider,
    TenantDirectory,
    UnknownTenant,
    Verified,
    WebhookRefused,
    WebhookRequest,
    WebhookRoute,
)
from sms_gateway.providers.twilio.errors import twilio_code_is_retryable
from sms_gateway.providers.twilio.sandbox import TwilioSandbox
from sms_gateway.providers.twilio.sender import STATUS_PATH, TwilioSender, build_form, status_callback_url
from sms_gateway.providers.twilio.settings import TwilioConfig
from sms_gateway.providers.twilio.webhooks import (
    FORM_CONTENT_TYPE,
    MESSAGE_STATUSES,
    SIGNATURE_HEADER,
    TWIML_CONTENT_TYPE,
    address,
    decode_form,
    empty_twiml,
    parse_inbound,
    parse_status,
    twilio_status_is_final,
    verify_signature,
)

__all__ = [
    "MESSAGE_STATUSES",
    "SIGNATURE_HEADER",
    "STATUS_PATH",
    "TWIML_CONTENT_TYPE",
    "TwilioConfig",
    "TwilioProvider",
    "TwilioSender",
    "build_form",
    "empty_twiml",
    "parse_inbound",
    "parse_status",
    "status_callback_url",
    "twilio_code_is_retryable",
    "twilio_status_is_final",
    "verify_signature",
]

INBOUND = WebhookRoute("POST", "/sms.receiver/SmsRecv", "inbound")
INBOUND_GET = WebhookRoute("GET", "/sms.receiver/SmsRecv", "inbound")
INBOUND_ALIAS = WebhookRoute("POST", "/sms.receiver/twilio/inbound", "inbound")
INBOUND_ALIAS_GET = WebhookRoute("GET", "/sms.receiver/twilio/inbound", "inbound")
STATUS = WebhookRoute("POST", STATUS_PATH, "status")

LIMITS = MessageLimits(
    max_media_per_message=10,
    max_total_bytes=5 * 1024 * 1024,
    max_body_chars=1600,
    mms_country_prefixes=("+1",),  # US and Canada
)


@dataclass(frozen=True, slots=True)
class TwilioForm:
    params: MultiMapping[str]  # every parameter
    signed: MultiMapping[str]  # those X-Twilio-Signature covers besides the URL (none for a GET)


_NOTHING_SIGNED: MultiMapping[str] = MultiDictProxy(MultiDict())


class TwilioProvider(Provider[TwilioForm, TwilioConfig]):
    kind = "twilio"
    settings_type = TwilioConfig
    routes = (INBOUND, INBOUND_GET, INBOUND_ALIAS, INBOUND_ALIAS_GET, STATUS)

    async def address(self, hook: WebhookRequest, tenants: TenantDirectory) -> Addressed[TwilioForm]:
        form = _read_form(hook)
        if hook.route is STATUS:
            # A status naming our message (?mid=) is addressed to the tenant that sent it, whatever From says, so
            # its signature is checked with that tenant's token: another tenant's token cannot report on it.
            # From (our number on a status) serves only a status naming no message we know.
            our_id = hook.query.get("mid")
            owner = await tenants.by_message(our_id) if our_id else None
            if owner is not None:
                tenant = self._ours(owner)
            else:
                tenant = self._ours(tenants.by_number(address(form.params, "From") or ""))
            if tenant is None:
                raise UnknownTenant(
                    "status for a message or number that is not of this gateway's Twilio tenants",
                    hint=self._numbers_hint("From", form.params.get("From", "")),
                )
            return Addressed(tenant, form)
        to_number = form.params.get("To", "")
        if not to_number:
            raise InvalidRequest("missing 'To'")
        tenant = self._ours(tenants.by_number(to_number))
        if tenant is None:
            raise UnknownTenant("'To' is not a number of this gateway", hint=self._numbers_hint("To", to_number))
        return Addressed(tenant, form)

    @functools.cached_property
    def _numbers_shown(self) -> str:
        numbers = [t.phone_number for t in self.config.tenants if isinstance(t.provider, TwilioConfig)]
        return (", ".join(numbers[:10]) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")) or "none"

    def _numbers_hint(self, field: str, received: str) -> str:
        return (
            f"{field} was {received[:32]!r}; the Twilio tenants' numbers are {self._numbers_shown}: a tenant is "
            "matched on the digits of its number, so write it as Twilio sends it, in E.164 (+ and country code)"
        )

    def _ours(self, tenant: TenantConfig | None) -> TenantConfig | None:
        return tenant if tenant is not None and isinstance(tenant.provider, TwilioConfig) else None

    def verify(self, hook: WebhookRequest, addressed: Addressed[TwilioForm]) -> Verified:
        settings = self.settings(addressed.tenant)
        if not settings.validate_signature:
            return Verified()
        if not verify_signature(
            hook.url, addressed.payload.signed, hook.headers.get(SIGNATURE_HEADER), settings.password
        ):
            raise WebhookRefused(
                f"invalid {SIGNATURE_HEADER}",
                hint=(
                    f"the signature was checked against the URL {hook.url[:200]}: set PUBLIC_URL to the URL configured "
                    "at Twilio (behind a proxy), and check that the tenant's smsProvider.password is the account's "
                    "auth token"
                ),
            )
        return Verified()

    def parse(self, hook: WebhookRequest, addressed: Addressed[TwilioForm]) -> Sequence[Event]:
        if hook.route is STATUS:
            return [parse_status(addressed.payload.params, hook.query.get("mid"))]
        return [parse_inbound(addressed.payload.params)]

    def acknowledge(self, hook: WebhookRequest) -> web.Response:
        return web.Response(text=empty_twiml(), content_type=TWIML_CONTENT_TYPE)

    def limits(self, tenant: TenantConfig) -> MessageLimits:
        return LIMITS

    def sender(self, tenant: TenantConfig, http: aiohttp.ClientSession) -> TwilioSender:
        return TwilioSender(self.settings(tenant), http)

    @classmethod
    def sandbox(cls) -> TwilioSandbox:
        return TwilioSandbox()


def _read_form(hook: WebhookRequest) -> TwilioForm:
    """The webhook's parameters; a GET webhook carries them in its query and signs only its URL."""
    if hook.method == "GET":
        return TwilioForm(hook.query, _NOTHING_SIGNED)
    if hook.content_type != FORM_CONTENT_TYPE:
        raise InvalidRequest(f"expected a form-encoded body, got {hook.content_type!r}")
    params = decode_form(hook.body)
    return TwilioForm(params, params)
