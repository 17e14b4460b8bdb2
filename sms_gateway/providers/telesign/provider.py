"""TeleSign's Messaging API as a provider: one callback URL per tenant (`/sms.receiver/telesign/{digits of the
tenant's number}`, registered with TeleSign for delivery callbacks and users' messages alike); sending on MMS with
SMS fallback from US short codes, on SMS from any other sender."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import aiohttp
from aiohttp import web

from sms_gateway.config.model import Config, TenantConfig
from sms_gateway.model import JSON, MessageLimits
from sms_gateway.providers.base import (
    Addressed,
    Event,
    Provider,
    TenantDirectory,
    UnknownTenant,
    Verified,
    WebhookRefused,
    WebhookRequest,
    WebhookRoute,
)
from sms_gateway.providers.json_fields import decode_json_object
from sms_gateway.providers.telesign.auth import new_nonce, verify_callback
from sms_gateway.providers.telesign.callbacks import CALLBACK_PATH, parse_callback
from sms_gateway.providers.telesign.sandbox import TeleSignSandbox
from sms_gateway.providers.telesign.send_request import sender_id_of
from sms_gateway.providers.telesign.sender import MAX_MEDIA_PER_MESSAGE, TeleSignSender
from sms_gateway.providers.telesign.settings import TeleSignConfig

CALLBACKS = WebhookRoute("POST", CALLBACK_PATH, "telesign")

# TeleSign sends MMS only from US short codes; from any other sender every message is SMS, with the links.
MMS_LIMITS = MessageLimits(
    max_media_per_message=MAX_MEDIA_PER_MESSAGE,
    max_total_bytes=1_000_000,  # carriers cap MMS near 1 MB
    max_body_chars=1600,
    mms_country_prefixes=("+1",),
    media_with_text=False,  # TeleSign's MMS carries the media alone
)
SMS_LIMITS = MessageLimits(
    max_media_per_message=MAX_MEDIA_PER_MESSAGE,
    max_total_bytes=1_000_000,
    max_body_chars=1600,
    mms_country_prefixes=(),
    media_with_text=False,
)
_SHORT_CODE = re.compile(r"[0-9]{5,6}")
_TENANT_DIGITS = re.compile(r"[0-9]{1,15}")

ACKNOWLEDGEMENT: JSON = {"status": "accepted"}
SIGNATURE_HINT = (
    "the tenant's smsProvider.customerId and apiKey must be the TeleSign account's: TeleSign signs "
    "its callbacks with that key"
)


def limits_for(sender_id: str) -> MessageLimits:
    """MMS_LIMITS for a US short code (5 or 6 digits), else SMS_LIMITS."""
    return MMS_LIMITS if _SHORT_CODE.fullmatch(sender_id) else SMS_LIMITS


class TeleSignProvider(Provider[JSON, TeleSignConfig]):
    kind = TeleSignConfig.KIND
    settings_type = TeleSignConfig
    routes = (CALLBACKS,)

    def __init__(
        self, config: Config, *, clock: Callable[[], float] = time.time, nonce: Callable[[], str] = new_nonce
    ) -> None:
        """`clock` (epoch seconds) and `nonce` make the senders' Digest headers."""
        super().__init__(config)
        self._clock = clock
        self._nonce = nonce

    # Webhooks -------------------------------------------------------------------------------------
    async def address(self, hook: WebhookRequest, tenants: TenantDirectory) -> Addressed[JSON]:
        digits = hook.path_params.get("tenant", "")
        tenant = tenants.by_number(digits) if _TENANT_DIGITS.fullmatch(digits) else None
        if tenant is None or not isinstance(tenant.provider, TeleSignConfig):
            numbers = [t.phone_number for t in self.config.tenants if isinstance(t.provider, TeleSignConfig)]
            raise UnknownTenant(
                "the callback URL does not name a TeleSign tenant's number",
                hint=(
                    f"the callback URL named {digits[:32]!r}; it must be {CALLBACK_PATH} with the digits of a TeleSign "
                    f"tenant's number, and those are {', '.join(numbers[:10]) or 'none'}"
                ),
            )
        return Addressed(tenant, decode_json_object(hook))

    def verify(self, hook: WebhookRequest, addressed: Addressed[JSON]) -> Verified:
        # Always checked: TeleSign signs every callback with the API key. There is no nonce or timestamp to
        # refuse a replay with; the core takes each message id and (id, status) once instead.
        settings = self.settings(addressed.tenant)
        try:
            verify_callback(hook.headers, hook.body, settings.customer_id, settings.api_key)
        except WebhookRefused as exc:
            raise WebhookRefused(str(exc), hint=SIGNATURE_HINT) from exc
        return Verified()

    def parse(self, hook: WebhookRequest, addressed: Addressed[JSON]) -> Sequence[Event]:
        return parse_callback(addressed.payload, addressed.tenant.phone_number, hook.received_at)

    def acknowledge(self, hook: WebhookRequest) -> web.Response:
        return web.json_response(ACKNOWLEDGEMENT)

    # Sending --------------------------------------------------------------------------------------
    def limits(self, tenant: TenantConfig) -> MessageLimits:
        return limits_for(sender_id_of(self.settings(tenant), tenant.phone_number))

    def sender(self, tenant: TenantConfig, http: aiohttp.ClientSession) -> TeleSignSender:
        settings = self.settings(tenant)
        return TeleSignSender(
            settings, http, sender_id_of(settings, tenant.phone_number), clock=self._clock, nonce=self._nonce
        )

    # Trying it out --------------------------------------------------------------------------------
    @classmethod
    def sandbox(cls) -> TeleSignSandbox:
        return TeleSignSandbox()
