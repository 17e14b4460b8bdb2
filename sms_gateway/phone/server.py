"""The phone's web server: the page and its static files, the simulator's HTTP API, live updates as server-sent
events, and the pictures users attach (served back at /media/{id})."""

from __future__ import annotations

import asyncio
import json
import mimetypes
from importlib import resources
from typing import Any

from aiohttp import web

from sms_gateway.phone.gateway import Gateway
from sms_gateway.providers.sandbox import UserMedia
from sms_gateway.web.errors import error_code, error_middleware, json_error

GATEWAY = web.AppKey("gateway", Gateway)
MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # an MMS carries a few MB at most
MAX_TEXT_CHARS = 1600
# What a user may attach, as a phone's MMS would carry it; served back as that type, never sniffed.
UPLOAD_TYPES = ("image/", "video/", "audio/")
HEARTBEAT_SECONDS = 15.0
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' http: https: data: blob:; "
    "media-src 'self' http: https:; object-src 'none'",
}


def create_phone_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 64 * 1024, middlewares=[_headers, error_middleware])
    app[GATEWAY] = gateway
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/send", send)
    app.router.add_post("/api/upload", upload)
    app.router.add_post("/api/fail-next-send", fail_next_send)
    app.router.add_post("/api/time-out", time_out)
    app.router.add_get("/media/{media_id}", media)
    app.on_shutdown.append(_end_event_streams)
    return app


async def _end_event_streams(app: web.Application) -> None:
    """Open pages' event streams end at once, so stopping does not wait for them."""
    app[GATEWAY].simulator.close_subscribers()


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# Errors in the gateway's own shape, {"error": {"code", "message"}}: returned, or raised from the helpers that
# read a request (error_middleware answers those, and anything unexpected, as JSON).
def bad_request(message: str, status: int = 400) -> web.Response:
    return json_error(status, error_code(status), message)


def _refuse(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(reason=message)


STATIC_FILES = {"index.html": "text/html", "phone.css": "text/css", "phone.js": "text/javascript"}


def _static(name: str) -> web.Response:
    body = resources.files("sms_gateway.phone").joinpath("static", name).read_bytes()
    return web.Response(
        body=body, content_type=STATIC_FILES[name], charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


async def index(request: web.Request) -> web.Response:
    return _static("index.html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return _static(name)


async def state(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    snapshot = gateway.simulator.snapshot()
    snapshot["failNextSend"] = {kind: sandbox.fail_next_send for kind, sandbox in gateway.sandboxes.items()}
    return web.json_response(snapshot)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each change to a bubble or a turn, as JSON."""
    simulator = request.app[GATEWAY].simulator
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    queue = simulator.subscribe()  # before the page learns it is connected (and loads the state): nothing missed
    try:
        await response.prepare(request)
        await response.write(b": connected\n\n")
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if event is None:  # the server stops
                break
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
    except ConnectionResetError:  # the page went away
        pass
    finally:
        simulator.unsubscribe(queue)
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _refuse("the body must be JSON") from None
    if not isinstance(body, dict):
        raise _refuse("the body must be a JSON object")
    try:  # JSON may escape a lone surrogate, which no webhook can carry on
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse("the body contains an unpaired surrogate (invalid Unicode)") from None
    return body


def _user_and_tenant(gateway: Gateway, body: dict[str, Any]) -> tuple[str, str]:
    user, tenant = body.get("user"), body.get("tenant")
    if not isinstance(user, str) or not any(ch.isdigit() for ch in user):
        raise _refuse("user must be a phone number")
    view = gateway.simulator.tenant(tenant) if isinstance(tenant, str) else None
    if view is None:
        raise _refuse("tenant must be one of the configured numbers")
    return gateway.simulator.user(user), view.number


def _media(body: dict[str, Any]) -> list[UserMedia]:
    items = body.get("media", [])
    if not isinstance(items, list) or len(items) > 10:
        raise _refuse("media must be a list of at most 10 items")
    media: list[UserMedia] = []
    for item in items:
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
            raise _refuse("each media needs an http(s) url")
        content_type = item.get("contentType") or mimetypes.guess_type(url)[0] or "image/jpeg"
        media.append(UserMedia(url, str(content_type)))
    return media


async def send(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    body = await _json_body(request)
    user, tenant = _user_and_tenant(gateway, body)
    text = body.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return bad_request(f"text must be a string of at most {MAX_TEXT_CHARS} characters")
    media = _media(body)
    if not text.strip() and not media:
        return bad_request("type a text or attach a picture")
    bubble = await gateway.send(user, tenant, text, media)
    return web.json_response({"bubble": bubble.bubble_id, "status": bubble.status, "detail": bubble.detail})


async def upload(request: web.Request) -> web.Response:
    """A picture a user attaches (multipart field `file`): kept in memory, served at /media/{id}."""
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return bad_request(f"the file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB", 413)
    except ValueError:
        return bad_request("send the file as multipart/form-data, field 'file'")
    field = form.get("file")
    if not isinstance(field, web.FileField):
        return bad_request("send the file as multipart/form-data, field 'file'")
    content_type = field.content_type.split(";")[0].strip().lower()
    if not content_type.startswith(UPLOAD_TYPES):
        return bad_request("only pictures, video and audio can be attached", 415)
    body = field.file.read(MAX_UPLOAD_BYTES + 1)
    if len(body) > MAX_UPLOAD_BYTES:
        return bad_request(f"the file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB", 413)
    media_id = request.app[GATEWAY].simulator.media.add(content_type, body)
    url = f"{request.scheme}://{request.host}/media/{media_id}"
    return web.json_response({"url": url, "contentType": content_type}, status=201)


async def media(request: web.Request) -> web.Response:
    stored = request.app[GATEWAY].simulator.media.get(request.match_info["media_id"])
    if stored is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=stored.body,
        content_type=stored.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline",
            "Cache-Control": "private, max-age=3600",
        },
    )


async def fail_next_send(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    body = await _json_body(request)
    tenant = body.get("tenant")
    sandbox = gateway.sandbox_of(tenant) if isinstance(tenant, str) else None
    if sandbox is None:
        return bad_request("tenant must be one of the configured numbers")
    sandbox.fail_next_send = bool(body.get("on", True))
    return web.json_response({"failNextSend": sandbox.fail_next_send})


async def time_out(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    user, tenant = _user_and_tenant(gateway, await _json_body(request))
    session_id = await gateway.time_out(user, tenant)
    if session_id is None:
        return bad_request("this user has no session with this tenant yet", 404)
    return web.json_response({"smsSessionID": session_id})
