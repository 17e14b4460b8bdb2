"""Error answers: JSON `{"error": {"code", "message"}}`, never a stack trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger("sms_gateway.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


_CODES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    405: "methodNotAllowed",
    413: "payloadTooLarge",
    415: "unsupportedMediaType",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "httpError")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return json_error(exc.status, code, exc.reason, headers)
    except Exception:
        log.exception("request_failed", path=request.path)
        return json_error(500, "internalError", "internal error")
