"""The session-control and pipe REST API under `/sms.gateway/`: JSON in and out, HTTP Basic auth.

Auth: a tenant with `controlCredentials` (or the global `CTRL_TENANT_*`, applied to every tenant without its own)
accepts only those. A tenant without any refuses every call, unless the operator opens it to anyone with
`controlAPI.allowAnonymous` (as IBM's API was; a warning names those tenants at startup): an open API lets anyone
divert a user's SMS through a pipe or text from the tenant's number. A tenant's credentials reach only that
tenant's numbers, pipes and sessions, and do not tell whether another tenant exists. The OpenAPI document is open.
Request bodies are validated against `schemas/api/*.json`; nothing is stored when a request is refused.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any, NoReturn

import structlog
from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from sms_gateway.actions import media_url_list
from sms_gateway.config.model import Config, TenantConfig, normalise_number
from sms_gateway.control import check_conversation, check_provider, end_session, start_session
from sms_gateway.engines.base import EngineError
from sms_gateway.keys import CONFIG, CONVERSATIONS, ENGINES, METRICS, OUTBOX, PIPES, STORE, WORKER
from sms_gateway.model import JSON, new_id
from sms_gateway.pipes import DEFAULT_EXPIRATION_SECONDS, callback_url_problem, new_pipe_id, pipe_send_extra
from sms_gateway.store.base import Pipe, StoreUnavailable
from sms_gateway.web.basic_auth import Caller, caller
from sms_gateway.web.errors import json_error
from sms_gateway.web.openapi import BASE, openapi_document, schema

log = structlog.get_logger("sms_gateway.web.rest")

REALM = "sms.gateway"
MAX_USER_DATA_BYTES = 16 * 1024
MAX_JSON_DEPTH = 32
_MAX_MESSAGE_CHARS = 300  # of an instance quoted in a validation message


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[JSON] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.headers, self.details = field, headers, details

    def response(self) -> web.Response:
        error: JSON = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        if self.details:
            error["details"] = self.details
        return web.json_response({"error": error}, status=self.status, headers=self.headers)


def bad_request(message: str, field: str | None = None, code: str = "badRequest") -> NoReturn:
    raise ApiError(400, code, message, field=field)


# Request bodies ---------------------------------------------------------------------------------------
@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name))


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request, schema_name: str) -> JSON:
    """The body as a JSON object valid against the named schema, else ApiError 400/415 naming the field."""
    if request.content_type != "application/json":
        raise ApiError(
            415, "unsupportedMediaType", f"the body must be application/json, not {request.content_type or 'missing'}"
        )
    raw = await request.read()  # bigger than the app's client_max_size: 413 from aiohttp
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:_MAX_MESSAGE_CHARS]
        bad_request(f"the body is not valid JSON: {reason}")
    if not isinstance(body, dict):
        bad_request(f"the body must be a JSON object, not {_json_type(body)}")
    _check_values(body)
    error = best_match(_validator(schema_name).iter_errors(body))
    if error is not None:
        message, field = describe(error)
        bad_request(message, field)
    return body


def _check_values(body: JSON) -> None:
    """What JSON Schema cannot say: bounded nesting, text that can be sent on (no lone surrogates), and finite
    numbers (`1e999` parses as infinity, which no field means and the engine's JSON cannot carry)."""
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            bad_request(f"{path.split('.')[0]}: nested more than {MAX_JSON_DEPTH} levels deep", path.split(".")[0])
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            field = path.split(".")[0] or None
            bad_request(f"{path or 'body'}: numbers must be finite, this one is too large", field)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, path)
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, path, depth + 1) for item in value)


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        field = path.split(".")[0] or None
        bad_request(f"{field or 'body'}: contains an unpaired surrogate (invalid Unicode)", field)


def describe(error: ValidationError) -> tuple[str, str | None]:
    """A message naming the field, and the field (the top-level key at fault)."""
    path = [str(part) for part in error.absolute_path]
    field = path[0] if path else None
    where = "/".join(path)
    instance = error.instance
    value: Any = error.validator_value
    rule: Any = error.schema
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in value if name not in instance]
        name = ".".join([*path, missing[0]]) if missing else where
        return f"missing required field '{name}'", field or (missing[0] if missing else None)
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(rule.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in known)
        name = extra[0] if extra else "?"
        return f"unknown field '{name}'", field or name
    if error.validator == "anyOf" and not path:
        options = [sub.get("required", []) for sub in value]
        names = " or ".join(f"'{name}'" for names in options for name in names)
        return f"one of {names} is required", None
    message = error.message
    quoted = repr(instance)
    if len(quoted) > 60:  # "'xxxx…' is too long": keep the verdict, shorten the value
        message = message.replace(quoted, quoted[:40] + "…")
    if error.validator == "pattern" and isinstance(rule.get("x-error"), str):  # the schema's own wording
        message = f"{rule['x-error']}, not {json.dumps(instance)[:60]}"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "…"
    return (f"{where}: {message}" if where else message), field


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), type(value).__name__
    )


def user_number(value: str) -> str:
    """User numbers are kept in E.164 with '+', as providers' inbound messages carry them."""
    return "+" + normalise_number(value)


# Auth -------------------------------------------------------------------------------------------------
def refuse(who: Caller) -> ApiError:
    if not who.presented:
        return ApiError(
            401, "unauthorized", "credentials required", headers={"WWW-Authenticate": f'Basic realm="{REALM}"'}
        )
    return ApiError(403, "forbidden", "these credentials do not give access to this resource")


def may_use(config: Config, who: Caller, tenant: TenantConfig) -> bool:
    """A tenant's own credentials are the only key to it; a tenant without any is open to anyone only when the
    operator chose so, else closed to everyone."""
    if tenant.control_credentials is None:
        return config.allow_anonymous_control
    return who.matches(tenant.control_credentials)


def authenticate(request: web.Request) -> Caller:
    """The caller, who must be allowed to use at least one tenant (401/403 otherwise)."""
    who = caller(request)
    config = request.app[CONFIG]
    if not any(may_use(config, who, t) for t in config.tenants):
        raise refuse(who)
    return who


def tenant_for(request: web.Request, who: Caller, number: str) -> TenantConfig:
    """The tenant named in a body. An unknown number answers 404 only to a caller allowed on every tenant;
    to anyone else it looks like another tenant's number (401/403), so it reveals nothing."""
    config = request.app[CONFIG]
    tenant = config.tenant_for(number)
    if tenant is not None and may_use(config, who, tenant):
        return tenant
    if tenant is None and all(may_use(config, who, t) for t in config.tenants):
        raise ApiError(
            404, "notFound", "unknown tenantPhoneNumber: it is not a number of this gateway", field="tenantPhoneNumber"
        )
    raise refuse(who)


def owned_tenant(request: web.Request, who: Caller, number: str, what: str) -> TenantConfig:
    """The tenant of a stored pipe or session; 401/403 unless the caller may use it."""
    config = request.app[CONFIG]
    tenant = config.tenant_for(number)
    if tenant is None:  # removed from the config since
        raise ApiError(404, "notFound", f"unknown {what}")
    if not may_use(config, who, tenant):
        raise refuse(who)
    return tenant


# Handlers ---------------------------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def endpoint(route: str) -> Callable[[Callable[[web.Request], Awaitable[web.Response]]], Handler]:
    """Errors as JSON answers, and every answer counted by route and status."""

    def wrap(handle: Callable[[web.Request], Awaitable[web.Response]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            metrics = request.app[METRICS]
            try:
                response = await handle(request)
                if request.method not in ("GET", "HEAD") and response.status < 300:
                    await request.app[STORE].wait_durable()  # what a 2xx promises is kept
            except ApiError as exc:
                response = exc.response()
            except StoreUnavailable as exc:
                log.error("store_unavailable", where=f"rest:{route}", error=str(exc))
                response = json_error(503, "storeUnavailable", "store unavailable, try again")
            except web.HTTPException as exc:
                metrics.rest.labels(route, str(exc.status)).inc()
                raise
            metrics.rest.labels(route, str(response.status)).inc()
            return response

        return handler

    return wrap


@endpoint("sessions.create")
async def create_session(request: web.Request) -> web.Response:
    who = authenticate(request)
    body = await read_json(request, "session_create")
    user_data = body.get("userData")
    if user_data is not None and len(json.dumps(user_data, separators=(",", ":"))) > MAX_USER_DATA_BYTES:
        bad_request(f"userData: larger than {MAX_USER_DATA_BYTES} bytes as JSON", "userData")
    tenant = tenant_for(request, who, body["tenantPhoneNumber"])
    user = user_number(body["userPhoneNumber"])
    session, created = await start_session(
        request.app[CONVERSATIONS], request.app[WORKER].runner, tenant, user, user_data, body.get("sessionTimeout")
    )
    if not created:
        return web.json_response(
            {
                "error": {"code": "sessionExists", "message": "a session already exists for these numbers"},
                "smsSessionID": session.session_id,
            },
            status=409,
        )
    return web.json_response({"smsSessionID": session.session_id}, status=201)


@endpoint("sessions.delete")
async def delete_session(request: web.Request) -> web.Response:
    who = authenticate(request)
    session = await request.app[STORE].find_session(request.match_info["smsSessionID"])
    if session is None:
        raise ApiError(404, "notFound", "unknown smsSessionID")
    owned_tenant(request, who, session.tenant_number, "smsSessionID")
    if not await end_session(request.app[CONVERSATIONS], request.app[WORKER].runner, session):
        raise ApiError(404, "notFound", "unknown smsSessionID")  # ended meanwhile
    return web.Response(status=204)


@endpoint("pipes.create")
async def create_pipe(request: web.Request) -> web.Response:
    who = authenticate(request)
    body = await read_json(request, "pipe_create")
    problem = callback_url_problem(body["callbackURL"])
    if problem is not None:
        bad_request(f"callbackURL: {problem}", "callbackURL")
    tenant = tenant_for(request, who, body["tenantPhoneNumber"])
    problem = await request.app[PIPES].callback_problem(body["callbackURL"])  # where it points: resolved
    if problem is not None:
        bad_request(f"callbackURL: {problem}", "callbackURL")
    now = time.time()
    lifetime = body.get("expirationInterval", DEFAULT_EXPIRATION_SECONDS)
    pipe = Pipe(
        new_pipe_id(),
        tenant.phone_number,
        user_number(body["userPhoneNumber"]),
        body["callbackURL"],
        now,
        now + lifetime,
    )
    await request.app[STORE].save_pipe(pipe)
    log.info(
        "pipe_created", pipe_id=pipe.pipe_id, tenant=pipe.tenant_number, user=pipe.user_number, expires_in=lifetime
    )
    expires = datetime.fromtimestamp(pipe.expires_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return web.json_response({"smsPipeID": pipe.pipe_id, "expiresAt": expires}, status=201)


async def _open_pipe(request: web.Request, who: Caller) -> Pipe:
    pipe = await request.app[STORE].get_pipe(request.match_info["smsPipeID"])
    if pipe is None or pipe.expires_at <= time.time():
        raise ApiError(404, "notFound", "unknown or expired smsPipeID")
    owned_tenant(request, who, pipe.tenant_number, "smsPipeID")
    return pipe


@endpoint("pipes.send")
async def send_through_pipe(request: web.Request) -> web.Response:
    who = authenticate(request)
    body = await read_json(request, "pipe_message")
    pipe = await _open_pipe(request, who)
    return await _deliver(request, pipe.tenant_number, pipe.user_number, body, pipe_send_extra(pipe))


@endpoint("pipes.delete")
async def delete_pipe(request: web.Request) -> web.Response:
    who = authenticate(request)
    pipe = await request.app[STORE].get_pipe(request.match_info["smsPipeID"])
    if pipe is None:
        raise ApiError(404, "notFound", "unknown smsPipeID")
    owned_tenant(request, who, pipe.tenant_number, "smsPipeID")
    if not await request.app[STORE].delete_pipe(pipe.pipe_id):
        raise ApiError(404, "notFound", "unknown smsPipeID")
    log.info("pipe_deleted", pipe_id=pipe.pipe_id)
    return web.Response(status=204)


@endpoint("messages.send")
async def send_message(request: web.Request) -> web.Response:
    who = authenticate(request)
    body = await read_json(request, "message_send")
    tenant = tenant_for(request, who, body["tenantPhoneNumber"])
    return await _deliver(request, tenant.phone_number, user_number(body["userPhoneNumber"]), body, None)


async def _deliver(request: web.Request, tenant_number: str, user: str, body: JSON, extra: JSON | None) -> web.Response:
    """Queue through the outbox (limits, splitting, public hosts, retries): 202, or 400 if nothing could be."""
    text = body.get("smsMessage", "")
    urls = media_url_list(body.get("smsMediaURL", [])) or []
    queued, errors = await request.app[CONVERSATIONS].deliver(
        tenant_number, user, text, urls, None, id_prefix=new_id("rest:"), error_to=None, job_extra=extra
    )
    if not queued:
        if errors:
            reasons = "; ".join(f"{e.get('mediaURL', '')}: {e['message']}" for e in errors)
            raise ApiError(
                400,
                "nothingToSend",
                f"smsMediaURL: nothing could be sent ({reasons})",
                field="smsMediaURL",
                details=errors,
            )
        bad_request("smsMessage: the text is blank and there is no media", "smsMessage", "nothingToSend")
    answer: JSON = {"messageID": queued[0], "messageIDs": queued}
    if errors:
        answer["warnings"] = errors
    log.info("rest_send_queued", messages=len(queued), refused_media=len(errors), user=user)
    return web.json_response(answer, status=202)


@endpoint("test.provider")
async def provider_test(request: web.Request) -> web.Response:
    who = authenticate(request)
    body = await read_json(request, "test_request")
    tenant = tenant_for(request, who, body["tenantPhoneNumber"])
    sender = request.app[OUTBOX].senders.get(normalise_number(tenant.phone_number))
    if sender is None:
        raise ApiError(502, "providerError", "no SMS provider is configured for this tenant")
    to = user_number(body.get("userPhoneNumber") or tenant.phone_number)
    result = await check_provider(sender, tenant, to)
    if not result.ok:
        log.warning("provider_test_failed", code=result.error_code, error=result.error_message)
        raise ApiError(
            502,
            "providerError",
            f"the provider refused the test message: {result.error_code or 'sendFailed'}: "
            f"{result.error_message or 'send failed'}",
        )
    return web.json_response({"status": "ok", "messageSid": result.provider_message_id})


@endpoint("test.conversation")
async def conversation_test(request: web.Request) -> web.Response:
    who = authenticate(request)
    body = await read_json(request, "test_request")
    tenant = tenant_for(request, who, body["tenantPhoneNumber"])
    user = user_number(body.get("userPhoneNumber") or tenant.phone_number)
    try:
        reply = await check_conversation(request.app[ENGINES], tenant, user)
    except EngineError as exc:
        log.warning("conversation_test_failed", error=str(exc), status=exc.status)
        raise ApiError(502, "conversationError", f"the conversation engine did not answer: {exc}") from exc
    return web.json_response({"status": "ok", "reply": reply.texts})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _warn_open_tenants(app: web.Application) -> None:
    """Name the tenants without control credentials: open to anyone if the operator allowed it, else closed (a
    gateway upgraded from an open API must hear why its callers now get 401)."""
    config = app[CONFIG]
    without = [t.phone_number for t in config.tenants if t.control_credentials is None]
    if not without:
        return
    if config.allow_anonymous_control:
        log.warning(
            "rest_api_open",
            tenants=without,
            reason="controlAPI.allowAnonymous (CTRL_TENANT_ALLOW_ANONYMOUS) is on and these tenants have no "
            "controlCredentials or CTRL_TENANT_* credentials: anyone can open pipes that divert "
            "their users' SMS and send SMS from their numbers",
        )
    else:
        log.warning(
            "rest_api_closed",
            tenants=without,
            reason="no controlCredentials or CTRL_TENANT_* credentials: /sms.gateway refuses every call for "
            "these tenants (401); set credentials, or controlAPI.allowAnonymous to open them to anyone",
        )


def setup(app: web.Application) -> None:
    router = app.router
    router.add_post(f"{BASE}/sessions", create_session)
    router.add_delete(f"{BASE}/sessions/{{smsSessionID}}", delete_session)
    router.add_post(f"{BASE}/smsPipe", create_pipe)
    router.add_post(f"{BASE}/smsPipe/{{smsPipeID}}/messages", send_through_pipe)
    router.add_delete(f"{BASE}/smsPipe/{{smsPipeID}}", delete_pipe)
    router.add_post(f"{BASE}/messages", send_message)
    router.add_post(f"{BASE}/test/provider", provider_test)
    router.add_post(f"{BASE}/test/conversation", conversation_test)
    router.add_get(f"{BASE}/openapi.json", openapi)
    app.on_startup.append(_warn_open_tenants)
