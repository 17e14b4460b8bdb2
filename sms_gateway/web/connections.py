"""Connections a slow or broken client cannot hold: deadlines for each request's head and body, and our JSON
error for a request aiohttp cannot parse.

aiohttp bounds only idle keep-alive (`keepalive_timeout`, which also covers a head still being sent, since the
connection looks idle until the head is complete); a body is read by the handler without any deadline. Here:

* the head of a request must be complete `header_timeout_s` after the connection opened (first request) or
  after its first byte arrived (later requests on a kept-alive connection), else the connection is closed;
* the body must be complete `body_timeout_s` after its head: the handler's read then fails with
  `RequestBodyTimeout` (answered 408 by the error middleware) and the connection is closed;
* an idle kept-alive connection is closed after `keepalive_timeout_s` (aiohttp's own timer).

Built only on aiohttp's public surface: `web.RequestHandler` (its constructor, the asyncio protocol methods,
`force_close`, `handle_error`), `web.Server.request_factory` / `request_handler`, and `StreamReader`'s
`is_eof`, `on_eof` and `set_exception`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader

from sms_gateway.config.model import Config
from sms_gateway.web.errors import RequestBodyTimeout, error_code, json_error

log = structlog.get_logger("sms_gateway.web.connections")

# After a body deadline the handler answers 408 and aiohttp closes the connection; a handler that is not reading
# the body (so never hears of the deadline) gets this long before the connection is closed under it.
BODY_DEADLINE_GRACE_S = 1.0
_MAX_PARSE_ERROR_CHARS = 200

RequestFactory = Callable[..., web.BaseRequest]
RequestHandlerFunction = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ConnectionDeadlines:
    head_s: float = 10.0
    body_s: float = 30.0
    keepalive_s: float = 30.0

    @classmethod
    def from_config(cls, config: Config) -> ConnectionDeadlines:
        return cls(config.header_timeout_s, config.body_timeout_s, config.keepalive_timeout_s)


class DeadlineRequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1 protocol with head and body deadlines, answering unparsable requests in JSON."""

    __slots__ = (
        "_awaiting_head",
        "_body_pending",
        "_body_timer",
        "_deadline_loop",
        "_deadlines",
        "_handler_done",
        "_head_timer",
    )

    def __init__(
        self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, deadlines: ConnectionDeadlines, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=deadlines.keepalive_s, **kwargs)
        self._deadlines = deadlines
        self._deadline_loop = loop
        self._awaiting_head = True  # between requests: the next bytes start a head
        self._handler_done = False
        self._body_pending = False  # the body of the current request is still arriving
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # asyncio protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()  # also bounds a connection that never sends a byte

    def data_received(self, data: bytes) -> None:
        if data and self._awaiting_head and self._head_timer is None:
            self._arm_head_deadline()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_deadline()
        self._cancel_body_deadline()
        super().connection_lost(exc)

    # request boundaries, told by the wrappers `deadline_protocol_factory` installs on the server ----------
    def request_started(self, payload: StreamReader) -> None:
        """The head is complete and the handler about to run; the body may still be arriving."""
        self._awaiting_head = self._handler_done = False
        self._cancel_head_deadline()
        self._body_pending = not payload.is_eof()
        if self._body_pending:
            self._body_timer = self._deadline_loop.call_later(self._deadlines.body_s, self._body_overdue, payload)
            payload.on_eof(self._body_complete)

    def request_finished(self) -> None:
        """The handler returned. The next bytes start a head only once this request's body is complete: a
        handler that answers without reading it (a 404) leaves aiohttp to read and drop the rest."""
        self._handler_done = True
        self._awaiting_head = not self._body_pending

    def _body_complete(self) -> None:
        self._body_pending = False
        self._cancel_body_deadline()
        self._awaiting_head = self._handler_done

    # answers ---------------------------------------------------------------------------------------------
    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request aiohttp itself could not take (bad request line or header, unsupported Content-Encoding):
        our JSON error instead of aiohttp's text/plain, logged without a traceback when it is the client's."""
        if request.writer.output_size > 0:  # as aiohttp's: an answer was already under way
            raise ConnectionError("the response was already started, cannot send an error")
        if status >= 500:
            log.error("request_failed", path=request.path, exc_info=exc)
            response = json_error(status, "internalError", "internal error")
        else:
            text = _one_line(message) or _phrase(status)
            log.info("bad_http_request", status=status, reason=text, peer=request.remote)
            response = json_error(status, error_code(status), text)
        response.force_close()
        return response

    # deadlines -------------------------------------------------------------------------------------------
    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_timer = self._deadline_loop.call_later(self._deadlines.head_s, self._head_overdue)

    def _cancel_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_deadline(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._awaiting_head and self.transport is not None:
            log.info("http_head_timeout", timeout_s=self._deadlines.head_s, peer=self._peer())
            self.force_close()

    def _body_overdue(self, payload: StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof() or self.transport is None:
            return
        log.info("http_body_timeout", timeout_s=self._deadlines.body_s, peer=self._peer())
        deadline = f"{self._deadlines.body_s:g} s"
        payload.set_exception(RequestBodyTimeout(f"the request body was not complete within {deadline}"))
        self._body_timer = self._deadline_loop.call_later(BODY_DEADLINE_GRACE_S, self.force_close)

    def _peer(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _one_line(text: str | None) -> str:
    """aiohttp's parse errors span lines (the bad bytes, a caret under them)."""
    return " ".join((text or "").split())[:_MAX_PARSE_ERROR_CHARS]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "bad request"


def deadline_protocol_factory(
    server: web.Server, deadlines: ConnectionDeadlines, *, loop: asyncio.AbstractEventLoop, **handler_args: Any
) -> Callable[[], web.RequestHandler]:
    """The asyncio protocol factory for `server` (an AppRunner's) with deadlines on every connection.

    `server`'s request factory and handler are wrapped to tell each connection where its requests start and
    end; do it once, before the first connection."""
    server.request_factory = _announcing_starts(server.request_factory)
    server.request_handler = _announcing_ends(server.request_handler)

    def make() -> web.RequestHandler:
        return DeadlineRequestHandler(server, loop=loop, deadlines=deadlines, **handler_args)

    return make


def _announcing_starts(make_request: RequestFactory) -> RequestFactory:
    def factory(message: Any, payload: StreamReader, protocol: web.RequestHandler, *args: Any) -> web.BaseRequest:
        if isinstance(protocol, DeadlineRequestHandler):
            protocol.request_started(payload)
        return make_request(message, payload, protocol, *args)

    return factory


def _announcing_ends(handle: RequestHandlerFunction) -> RequestHandlerFunction:
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handle(request)
        finally:
            protocol = request.protocol
            if isinstance(protocol, DeadlineRequestHandler):
                protocol.request_finished()

    return handler
