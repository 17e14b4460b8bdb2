"""Sinch's Conversation API as a provider: every callback of every Sinch tenant on one route, told apart by the
app it is for; sending on the MMS channel with SMS fallback."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from sms_gateway.config.model import Config, TenantConfig, normalise_number
from sms_gateway.model import JSON, MessageLimits
from sms_gateway.providers.base import (
    Addressed,
    Event,
    Provider,
    Replay,
    TenantDirectory,
    UnknownTenant,
    Verified,
    WebhookRefused,
    WebhookRequest,
    WebhookRoute,
)
from sms_gateway.providers.json_fields import decode_json_object
from sms_gateway.providers.sinch import signature
from sms_gateway.providers.sinch.sandbox import SinchSandbox
from sms_gateway.providers.sinch.sender import MAX_MEDIA_PER_MESSAGE, SinchSender
from sms_gateway.providers.sinch.settings import SinchConfig
from sms_gateway.providers.sinch.tokens import ClientCredentials, TokenCache
from sms_gateway.providers.sinch.webhooks import (
    CALLBACK_PATH,
    app_id_of,
    our_message_id_of,
    parse_callback,
    sender_id_of,
)

CALLBACKS = WebhookRoute("POST", CALLBACK_PATH, "sinch")

LIMITS = MessageLimits(
    max_media_per_message=MAX_MEDIA_PER_MESSAGE,
    # Sinch does not transcode, and carriers cap long-code and toll-free MMS near 1 MB.
    max_total_bytes=1_000_000,
    max_body_chars=1600,
    mms_country_prefixes=("+1", "+61"),  # Sinch's MMS channel: US, Canada (and Puerto Rico), Australia
)

ACKNOWLEDGEMENT: JSON = {"status": "accepted"}
SIGNATURE_HINT = (
    "the tenant's smsProvider.webhookSecret must be the secret of the Sinch app's webhook, and this "
    "machine's clock right (Sinch's timestamp is checked)"
)


class SinchProvider(Provider[JSON, SinchConfig]):
    kind = SinchConfig.KIND
    settings_type = SinchConfig
    routes = (CALLBACKS,)

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock` times access tokens (monotonic seconds)."""
        super().__init__(config)
        self._clock = clock
        by_app: dict[str, list[TenantConfig]] = {}
        for tenant in config.tenants:
            if isinstance(tenant.provider, SinchConfig) and tenant.provider.app_id:
                by_app.setdefault(tenant.provider.app_id, []).append(tenant)
        self._tenants_by_app: Mapping[str, Sequence[TenantConfig]] = {app: tuple(ts) for app, ts in by_app.items()}
        # One token cache per access key, shared by the senders of every tenant that uses it.
        self._token_caches: dict[ClientCredentials, TokenCache] = {}

    # Webhooks -------------------------------------------------------------------------------------
    async def address(self, hook: WebhookRequest, tenants: TenantDirectory) -> Addressed[JSON]:
        payload = decode_json_object(hook)
        app_id = app_id_of(payload)
        candidates = self._tenants_by_app.get(app_id, ())
        if not candidates:
            configured = ", ".join(sorted(self._tenants_by_app)[:10]) or "none"
            raise UnknownTenant(
                f"no tenant uses the Sinch app {app_id[:64]!r}",
                hint=(
                    f"the Sinch apps of the tenants (smsProvider.appId) are {configured}: the callback's app_id must "
                    "be one of them"
                ),
            )
        if len(candidates) == 1:
            return Addressed(candidates[0], payload)
        return Addressed(await _one_of(candidates, payload, tenants, app_id), payload)

    def verify(self, hook: WebhookRequest, addressed: Addressed[JSON]) -> Verified:
        # Always checked: Sinch signs every callback of a webhook that has a secret, and there is no setting to
        # turn the check off.
        settings = self.settings(addressed.tenant)
        try:
            signed = signature.verify(hook.headers, hook.body, settings.webhook_secret, hook.received_at)
        except WebhookRefused as exc:
            raise WebhookRefused(str(exc), hint=SIGNATURE_HINT) from exc
        return Verified(replay=Replay(key=f"sinch:{settings.app_id}:{signed.nonce}", until=signed.remember_until))

    def parse(self, hook: WebhookRequest, addressed: Addressed[JSON]) -> Sequence[Event]:
        return parse_callback(addressed.payload, addressed.tenant.phone_number, hook.received_at)

    def acknowledge(self, hook: WebhookRequest) -> web.Response:
        return web.json_response(ACKNOWLEDGEMENT)

    # Sending --------------------------------------------------------------------------------------
    def limits(self, tenant: TenantConfig) -> MessageLimits:
        return LIMITS

    def sender(self, tenant: TenantConfig, http: aiohttp.ClientSession) -> SinchSender:
        settings = self.settings(tenant)
        return SinchSender(settings, http, self._token_cache(settings))

    def _token_cache(self, settings: SinchConfig) -> TokenCache:
        credentials = ClientCredentials.of(settings)
        cache = self._token_caches.get(credentials)
        if cache is None:
            cache = self._token_caches[credentials] = TokenCache(credentials, clock=self._clock)
        return cache

    # Trying it out --------------------------------------------------------------------------------
    @classmethod
    def sandbox(cls) -> SinchSandbox:
        return SinchSandbox()


async def _one_of(
    candidates: Sequence[TenantConfig], payload: Mapping[str, Any], tenants: TenantDirectory, app_id: str
) -> TenantConfig:
    """The tenant of a callback for an app several tenants share: an inbound message by the number it was sent
    to, a delivery report by the tenant that sent the message."""
    sender_id = sender_id_of(payload)
    if sender_id is not None and (digits := normalise_number(sender_id)):
        for tenant in candidates:
            if digits in _numbers(tenant):
                return tenant
    our_id = our_message_id_of(payload)
    if our_id is not None:
        sent_by = await tenants.by_message(our_id)
        if sent_by is not None and sent_by in candidates:
            return sent_by
    numbers = ", ".join(tenant.phone_number for tenant in candidates[:10])
    raise UnknownTenant(
        f"several tenants use the Sinch app {app_id!r} and the callback does not say which",
        hint=(
            f"a message to this app is addressed by the number it was sent to, and its tenants' numbers (and "
            f"mmsSender) are {numbers}"
        ),
    )


def _numbers(tenant: TenantConfig) -> set[str]:
    """The digits a tenant's messages may come to: its number and its MMS sender (a short code, say)."""
    settings = tenant.provider
    numbers = {normalise_number(tenant.phone_number)}
    if isinstance(settings, SinchConfig) and settings.mms_sender:
        numbers.add(normalise_number(settings.mms_sender))
    return numbers
