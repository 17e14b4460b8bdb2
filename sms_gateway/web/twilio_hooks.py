"""Twilio's webhooks: inbound SMS/MMS (IBM's `/sms.receiver/SmsRecv`) and delivery status callbacks.

An inbound message is verified, stored and answered with empty TwiML before any engine call.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy, MultiMapping

from sms_gateway.config.model import TenantConfig
from sms_gateway.keys import CONFIG, METRICS, PIPES, STATE, STORE, WORKER
from sms_gateway.model import DeliveryStatus
from sms_gateway.providers import twilio
from sms_gateway.providers.base import InvalidRequest
from sms_gateway.store.base import Job, OutboundRecord, StoreUnavailable
from sms_gateway.web.basic_auth import caller
from sms_gateway.web.errors import json_error

log = structlog.get_logger("sms_gateway.web.twilio")

INBOUND_PATHS = ("/sms.receiver/SmsRecv", "/sms.receiver/twilio/inbound")
STATUS_PATH = "/sms.receiver/twilio/status"
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def twiml_ok() -> web.Response:
    return web.Response(text=twilio.empty_twiml(), content_type="text/xml")


async def read_params(request: web.Request) -> tuple[MultiMapping[str], MultiMapping[str]]:
    """(all parameters, the POST parameters that Twilio signed); a GET webhook signs only its URL."""
    if request.method == "GET":
        return request.query, MultiDictProxy(MultiDict())
    if request.content_type not in _FORM_TYPES:
        raise InvalidRequest(f"expected a form-encoded body, got {request.content_type!r}")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed form body: {exc}") from exc
    if any(not isinstance(value, str) for value in form.values()):
        raise InvalidRequest("file uploads are not accepted")
    params: MultiMapping[str] = form  # type: ignore[assignment]
    return params, params


def check_basic_auth(request: web.Request, tenant: TenantConfig, fallback_realm: str) -> web.Response | None:
    """None when allowed. Twilio sends credentials only after a 401 challenge, so a missing header gets one."""
    if tenant.webhook_credentials is None:
        return None
    who = caller(request)
    if not who.basic:
        return json_error(401, "unauthorized", "credentials required",
                          {"WWW-Authenticate": f'Basic realm="{fallback_realm}"'})
    if not who.matches(tenant.webhook_credentials):
        return json_error(403, "forbidden", "bad credentials")
    return None


def check_signature(request: web.Request, tenant: TenantConfig, signed: MultiMapping[str]) -> bool:
    if not tenant.provider.validate_signature:
        return True
    config = request.app[CONFIG]
    url = twilio.signature_url(config.public_url, request)
    if twilio.verify_signature(url, signed, request.headers.get("X-Twilio-Signature"), tenant.provider.password):
        if config.public_url is None:
            request.app[STATE].learned_public_base = url.split("/sms.receiver/", 1)[0]
        return True
    return False


async def receive_message(request: web.Request) -> web.StreamResponse:
    metrics = request.app[METRICS]

    def reject(outcome: str, response: web.Response) -> web.Response:
        metrics.webhooks.labels("inbound", outcome).inc()
        return response

    try:
        params, signed = await read_params(request)
    except InvalidRequest as exc:
        return reject("bad_request", json_error(400, "badRequest", str(exc)))
    to_number = params.get("To", "")
    if not to_number:
        return reject("bad_request", json_error(400, "badRequest", "missing 'To'"))
    tenant = request.app[CONFIG].tenant_for(to_number)
    if tenant is None:
        return reject("unknown_tenant", json_error(403, "forbidden", "'To' is not a number of this gateway"))
    denied = check_basic_auth(request, tenant, "sms.receiver")
    if denied is not None:
        return reject("unauthorized", denied)
    if not check_signature(request, tenant, signed):
        log.warning("signature_rejected", tenant=tenant.phone_number)
        return reject("bad_signature", json_error(403, "forbidden", "invalid X-Twilio-Signature"))
    try:
        message = twilio.parse_inbound(params)
    except InvalidRequest as exc:
        return reject("bad_request", json_error(400, "badRequest", str(exc)))
    try:
        accepted = await request.app[STORE].accept_inbound(message)
    except StoreUnavailable as exc:
        log.error("store_unavailable", where="inbound_webhook", error=str(exc))
        return reject("store_unavailable", json_error(503, "storeUnavailable", "message store unavailable"))
    if accepted:
        request.app[WORKER].notify(message)
        log.info("inbound_accepted", message_id=message.message_id, media=len(message.media),
                 user=message.user_number)
    else:
        log.info("inbound_duplicate", message_id=message.message_id)
    metrics.webhooks.labels("inbound", "accepted" if accepted else "duplicate").inc()
    return twiml_ok()


async def receive_status(request: web.Request) -> web.StreamResponse:
    app = request.app
    metrics = app[METRICS]
    store = app[STORE]
    our_id = request.query.get("mid") or None
    try:
        params, signed = await read_params(request)
    except InvalidRequest as exc:
        metrics.webhooks.labels("status", "bad_request").inc()
        return json_error(400, "badRequest", str(exc))
    tenant = app[CONFIG].tenant_for(params.get("From", ""))
    try:
        outbound = await store.find_outbound(our_id) if our_id else None
        if tenant is None and outbound is not None:
            tenant = app[CONFIG].tenant_for(outbound.tenant_number)
        if tenant is None:
            metrics.webhooks.labels("status", "unknown_tenant").inc()
            return json_error(403, "forbidden", "status for a number that is not of this gateway")
        denied = check_basic_auth(request, tenant, "sms.receiver")
        if denied is not None:
            metrics.webhooks.labels("status", "unauthorized").inc()
            return denied
        if not check_signature(request, tenant, signed):
            metrics.webhooks.labels("status", "bad_signature").inc()
            return json_error(403, "forbidden", "invalid X-Twilio-Signature")
        try:
            status = twilio.parse_status(params, our_id)
        except InvalidRequest as exc:
            metrics.webhooks.labels("status", "bad_request").inc()
            return json_error(400, "badRequest", str(exc))
        if not await store.claim_status(status.provider_message_id, status.status):
            metrics.webhooks.labels("status", "duplicate").inc()
            return twiml_ok()
        metrics.webhooks.labels("status", "accepted").inc()
        metrics.statuses.labels(status.status).inc()
        log.info("delivery_status", provider_id=status.provider_message_id, status=status.status,
                 message_id=our_id, code=status.error_code)
        if status.failed and outbound is not None:
            await report_failed_delivery(app, outbound, status)
    except StoreUnavailable as exc:
        log.error("store_unavailable", where="status_webhook", error=str(exc))
        return json_error(503, "storeUnavailable", "store unavailable")
    return twiml_ok()


async def report_failed_delivery(app: web.Application, outbound: OutboundRecord, status: DeliveryStatus) -> None:
    """A message the carrier did not deliver: the session's engine hears it as smsError, a pipe's Voice
    Gateway as a failure event (the same event as for a send the gateway gave up on)."""
    code = status.error_code or status.status
    message = status.error_message or f"message {status.status}"
    if outbound.session_id is not None:
        await app[STORE].push_sms_error(outbound.tenant_number, outbound.user_number,
                                        {"code": code, "message": message, "messageID": outbound.message_id})
    if outbound.pipe is not None:
        send = Job(outbound.message_id, "send", {"messageId": outbound.message_id,
                                                 "tenantNumber": outbound.tenant_number,
                                                 "userNumber": outbound.user_number, **outbound.pipe})
        await app[PIPES].on_send_failed(send, code, message)


def setup(app: web.Application) -> None:
    for path in INBOUND_PATHS:
        app.router.add_post(path, receive_message)
        app.router.add_get(path, receive_message)
    app.router.add_post(STATUS_PATH, receive_status)
