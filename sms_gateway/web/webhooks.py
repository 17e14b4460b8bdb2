"""Every provider's webhooks, through one path: address, authenticate, verify, parse, store, acknowledge.

The provider plug-in decides each step's meaning (`sms_gateway.providers.base`); this module stores what it
found and answers. An inbound message is stored and acknowledged before any engine call; nothing is stored
for a request that is refused.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiohttp import web

from sms_gateway.config.model import Config, TenantConfig, normalise_number
from sms_gateway.context import media_fallback_notice
from sms_gateway.keys import CONFIG, METRICS, PIPES, PROVIDERS, STORE, WORKER
from sms_gateway.model import DeliveryStatus, InboundMessage
from sms_gateway.providers.base import (
    InvalidRequest,
    Provider,
    UnknownTenant,
    WebhookRefused,
    WebhookRequest,
    WebhookRoute,
)
from sms_gateway.store.base import Job, OutboundRecord, Store, StoreUnavailable
from sms_gateway.web.basic_auth import caller
from sms_gateway.web.errors import json_error
from sms_gateway.web.rejections import RejectionLog

log = structlog.get_logger("sms_gateway.web.webhooks")

REALM = "sms.receiver"
# What every provider's webhooks are written in (US-ASCII being a part of it).
TEXT_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _first_header_value(value: str | None) -> str | None:
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def public_base(public_url: str | None, request: web.BaseRequest, *, trust_forwarded: bool = False) -> str:
    """The base URL the caller reached the gateway's root at: the configured public URL (e.g.
    `https://example.com/gw` behind a proxy that strips `/gw`), else the request's own scheme and Host. Behind a
    proxy the operator trusts (`trust_forwarded`), `X-Forwarded-Proto` / `X-Forwarded-Host` (first value of
    each) come before the request's: anyone else could send them to pose as another URL."""
    if public_url:
        return public_url.rstrip("/")
    scheme, host = request.scheme, request.host
    if trust_forwarded:
        proto = _first_header_value(request.headers.get("X-Forwarded-Proto"))
        scheme = proto.lower() if proto and proto.lower() in ("http", "https") else scheme
        host = _first_header_value(request.headers.get("X-Forwarded-Host")) or host
    return f"{scheme}://{host}"


def public_request_url(public_url: str | None, request: web.BaseRequest, *, trust_forwarded: bool = False) -> str:
    """The URL a provider addressed (and signed): the public base and the raw path and query, byte-exact, since
    re-encoding the query breaks a signature."""
    return public_base(public_url, request, trust_forwarded=trust_forwarded) + request.raw_path


@dataclass(frozen=True, slots=True)
class ConfiguredTenants:
    """The tenant directory providers address webhooks with: the configuration, and the store for the tenant
    of a message we sent."""

    config: Config
    store: Store

    def by_number(self, number: str) -> TenantConfig | None:
        return self.config.tenant_for(number)

    async def by_message(self, message_id: str) -> TenantConfig | None:
        outbound = await self.store.find_outbound(message_id)
        return self.config.tenant_for(outbound.tenant_number) if outbound is not None else None


def check_basic_auth(request: web.Request, tenant: TenantConfig) -> web.Response | None:
    """None when allowed. Providers send credentials only after a 401 challenge, so a missing header gets one."""
    if tenant.webhook_credentials is None:
        return None
    who = caller(request)
    if not who.basic:
        return json_error(401, "unauthorized", "credentials required", {"WWW-Authenticate": f'Basic realm="{REALM}"'})
    if not who.matches(tenant.webhook_credentials):
        return json_error(403, "forbidden", "bad credentials")
    return None


BAD_CREDENTIALS_HINT = (
    "the Basic credentials in the webhook URL configured at the provider "
    "(https://user:password@host/...) must be the tenant's webHookCredentials "
    "(SMS_WEBHOOK_USERNAME / SMS_WEBHOOK_PASSWORD)"
)


def webhook_handler(provider: Provider[Any, Any], route: WebhookRoute) -> Handler:
    rejections = RejectionLog()

    async def handle(request: web.Request) -> web.StreamResponse:
        app = request.app
        metrics = app[METRICS]

        def reject(outcome: str, response: web.Response) -> web.Response:
            metrics.webhooks.labels(route.name, outcome).inc()
            return response

        config = app[CONFIG]
        if request.charset is not None and request.charset.lower() not in TEXT_CHARSETS:
            return reject(
                "bad_request",
                json_error(
                    400, "badRequest", f"unsupported charset {request.charset[:40]!r}: provider webhooks are UTF-8"
                ),
            )
        body = await request.read() if request.can_read_body else b""  # over client_max_size: 413
        url = public_request_url(config.public_url, request, trust_forwarded=config.trust_forwarded_headers)
        hook = WebhookRequest(
            route=route,
            method=request.method,
            url=url,
            query=request.query,
            headers=request.headers,
            content_type=request.content_type,
            body=body,
            path_params=request.match_info,
            received_at=time.time(),
        )
        store = app[STORE]
        try:
            try:
                addressed = await provider.address(hook, ConfiguredTenants(config, store))
            except InvalidRequest as exc:
                return reject("bad_request", json_error(400, "badRequest", str(exc)))
            except UnknownTenant as exc:
                rejections.refused(
                    route.name, "unknown_tenant", None, provider=provider.kind, reason=str(exc), hint=exc.hint
                )
                return reject("unknown_tenant", json_error(403, "forbidden", str(exc)))
            denied = check_basic_auth(request, addressed.tenant)
            if denied is not None:
                if denied.status == 403:  # a 401 is the challenge providers expect before sending credentials
                    rejections.refused(
                        route.name,
                        "unauthorized",
                        addressed.tenant.phone_number,
                        provider=provider.kind,
                        reason="bad credentials",
                        hint=BAD_CREDENTIALS_HINT,
                    )
                return reject("unauthorized", denied)
            try:
                verified = provider.verify(hook, addressed)
            except WebhookRefused as exc:
                rejections.refused(
                    route.name,
                    "bad_signature",
                    addressed.tenant.phone_number,
                    provider=provider.kind,
                    reason=str(exc),
                    hint=exc.hint,
                )
                return reject("bad_signature", json_error(403, "forbidden", str(exc)))
            try:
                events = provider.parse(hook, addressed)
            except InvalidRequest as exc:
                return reject("bad_request", json_error(400, "badRequest", str(exc)))
            outcome = "ignored"
            for event in events:
                if isinstance(event, InboundMessage):
                    outcome = await _accept_inbound(app, event)
                else:
                    outcome = await _accept_status(app, addressed.tenant, event)
            replay = verified.replay
            if replay is not None and not await store.claim_once(replay.key, replay.until):
                log.warning("webhook_replayed", provider=provider.kind, tenant=addressed.tenant.phone_number)
                return reject("replayed", json_error(403, "forbidden", "this request was already received"))
            if events or replay is not None:
                await store.wait_durable()  # the provider never sends again what it got a 200 for
        except StoreUnavailable as exc:
            log.error("store_unavailable", where=f"{route.name}_webhook", error=str(exc))
            return reject("store_unavailable", json_error(503, "storeUnavailable", "message store unavailable"))
        metrics.webhooks.labels(route.name, outcome).inc()
        return provider.acknowledge(hook)

    return handle


async def _accept_inbound(app: web.Application, message: InboundMessage) -> str:
    accepted = await app[STORE].accept_inbound(message)
    if accepted:
        app[WORKER].notify(message)
        log.info("inbound_accepted", message_id=message.message_id, media=len(message.media), user=message.user_number)
        return "accepted"
    log.info("inbound_duplicate", message_id=message.message_id)
    return "duplicate"


async def _accept_status(app: web.Application, tenant: TenantConfig, status: DeliveryStatus) -> str:
    """Store what a status tells of a message the addressed tenant sent. A status naming a message of another
    tenant (a request signed with tenant B's key naming A's message id) is acknowledged and ignored: it proves
    only that B sent it, and must neither reach A's engine or Voice Gateway nor link A's message."""
    store = app[STORE]
    # Deduplicated per tenant: another tenant's status naming the same provider id cannot pre-empt this one's.
    if not await store.claim_status(
        f"{normalise_number(tenant.phone_number)}/{status.provider_message_id}", status.status
    ):
        return "duplicate"
    outbound = await store.find_outbound(status.our_message_id) if status.our_message_id else None
    if outbound is not None and normalise_number(outbound.tenant_number) != normalise_number(tenant.phone_number):
        log.warning(
            "status_ignored",
            reason="names a message another tenant sent",
            provider=status.provider,
            tenant=tenant.phone_number,
            message_id=status.our_message_id,
        )
        return "ignored"
    app[METRICS].statuses.labels(status.status).inc()
    if status.fallback:
        app[METRICS].mms_fallbacks.labels(status.provider).inc()
    log.info(
        "delivery_status",
        provider_id=status.provider_message_id,
        status=status.status,
        message_id=status.our_message_id,
        code=status.error_code,
        fallback=status.fallback,
    )
    if outbound is None:
        return "accepted"
    if outbound.provider_message_id is None:
        # The send's answer was lost (or has not come yet): the provider's report proves it has the message, so
        # the outbox's next attempt does not send it again.
        await store.record_outbound(replace(outbound, provider_message_id=status.provider_message_id))
    if status.failed:
        await report_failed_delivery(app, outbound, status)
    elif status.fallback and outbound.session_id is not None:
        await store.push_sms_error(
            outbound.tenant_number,
            outbound.user_number,
            media_fallback_notice(
                status.error_code or status.status,
                status.error_message or "the media were sent by SMS instead of MMS",
                outbound.message_id,
            ),
        )
    return "accepted"


async def report_failed_delivery(app: web.Application, outbound: OutboundRecord, status: DeliveryStatus) -> None:
    """A message the carrier did not deliver: the session's engine hears it as smsError, a pipe's Voice
    Gateway as a failure event (the same event as for a send the gateway gave up on)."""
    code = status.error_code or status.status
    message = status.error_message or f"message {status.status}"
    if outbound.session_id is not None:
        await app[STORE].push_sms_error(
            outbound.tenant_number,
            outbound.user_number,
            {"code": code, "message": message, "messageID": outbound.message_id},
        )
    if outbound.pipe is not None:
        send = Job(
            outbound.message_id,
            "send",
            {
                "messageId": outbound.message_id,
                "tenantNumber": outbound.tenant_number,
                "userNumber": outbound.user_number,
                **outbound.pipe,
            },
        )
        await app[PIPES].on_send_failed(send, code, message)


async def _warn_without_public_url(app: web.Application) -> None:
    if app[CONFIG].public_url is None:
        log.warning(
            "public_url_unset",
            reason="PUBLIC_URL (http.publicURL) is not set: messages are sent without a per-message status "
            "callback (Twilio's StatusCallback), so their delivery statuses never reach the gateway, "
            "and signatures are checked against the URL each request arrived at",
        )


def webhook_urls(config: Config, providers: dict[str, Provider[Any, Any]], base: str) -> dict[str, str]:
    """Per provider the tenants use: the URL to register with it (its first route, under `base`)."""
    used = {tenant.provider.kind for tenant in config.tenants}
    return {kind: base.rstrip("/") + provider.routes[0].path for kind, provider in providers.items() if kind in used}


def setup(app: web.Application) -> None:
    for provider in app[PROVIDERS].values():
        for route in provider.routes:
            app.router.add_route(route.method, route.path, webhook_handler(provider, route))
    app.on_startup.append(_warn_without_public_url)
