"""Error answers: JSON `{"error": {"code", "message"}}`, never a stack trace.

A request the client broke (a body that does not decode, a body that stops arriving, a client that hangs up)
is answered 4xx and logged at info: it is not the gateway's error."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger("sms_gateway.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_MAX_REASON_CHARS = 200
_STATUS_PREFIX = re.compile(r"^\d{3}, message: ")  # how aiohttp's HttpProcessingError prints


class RequestBodyTimeout(TimeoutError):
    """The request's body did not arrive within its deadline (raised by the handler's read of the body).

    A TimeoutError, so aiohttp's discarding of an unread body after the answer stops on it quietly."""


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


_CODES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "notFound",
    405: "methodNotAllowed",
    408: "requestTimeout",
    413: "payloadTooLarge",
    415: "unsupportedMediaType",
    431: "requestHeaderFieldsTooLarge",
}


def error_code(status: int) -> str:
    return _CODES.get(status, "httpError")


def _closing(response: web.Response) -> web.Response:
    """The rest of the request cannot be read: the connection is not reused."""
    response.force_close()
    return response


def _client_is_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return json_error(exc.status, error_code(exc.status), exc.reason, headers)
    except RequestBodyTimeout as exc:
        return _closing(json_error(408, error_code(408), str(exc)))
    except web.RequestPayloadError as exc:  # e.g. `Content-Encoding: gzip` on a body that is not gzip
        reason = _STATUS_PREFIX.sub("", " ".join(str(exc).split()))[:_MAX_REASON_CHARS]
        log.info("bad_request_body", path=request.path, reason=reason)
        return _closing(json_error(400, error_code(400), f"the body could not be read: {reason}"))
    except ConnectionError as exc:
        if not _client_is_gone(request):
            log.exception("request_failed", path=request.path)
            return json_error(500, "internalError", "internal error")
        # The client hung up (mid-body, typically): nobody is left to answer, and it is not the gateway's error.
        log.info("client_disconnected", path=request.path, error=f"{type(exc).__name__}: {exc}")
        return _closing(json_error(400, "clientDisconnected", "the client closed the connection"))
    except Exception:
        log.exception("request_failed", path=request.path)
        return json_error(500, "internalError", "internal error")
