"""The fake engine and fake provider, in one lean process of their own.

* `POST /v1/workspaces/{ws}/message`: Watson Assistant v1. Answers (after `--engine-delay-ms`) with an echo of
  the input text and the request's context plus `conversation_id`/`system`, as Watson does.
* `POST /2010-04-01/Accounts/{sid}/Messages.json`: Twilio's Messages API. Answers 201 with a message resource
  and records the arrival time (`time.time()`) of the send under the request id found in its Body.
* The feed (`--feed-port`, plain TCP): every connected client gets one line "id engine_arrival send_arrival" per
  send, so the load generator learns when each turn finished without an HTTP request per turn.
* `GET /wait/{id}?t0=&timeout=`: the same by long-poll, for a person with curl; with `t0` (the wall time the
  webhook was posted) the turn latency is kept for `/stats`.
* `GET /stats`: counts, engine call -> send latencies (the gateway's outbox path plus the engine delay) and the
  /wait turn latencies since the last `POST /reset` (`{"engine_delay_ms": N}` optional).

No request is validated against a schema here: the test suite checks the wire format; this process must only
answer at once so that it is never what a benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import Any

from aiohttp import web

from benchmarks.common import BODY_ID_RE, latency_summary

JSONDict = dict[str, Any]


class Fakes:
    def __init__(self, engine_delay_ms: float = 0.0) -> None:
        self.engine_delay = engine_delay_ms / 1000
        self.reset()

    def reset(self) -> None:
        feeds: set[asyncio.StreamWriter] = getattr(self, "feeds", set())
        self.started = time.time()
        self.engine_calls = 0
        self.sends = 0
        self.unmatched = 0  # sends whose Body carried no request id
        self.duplicates = 0  # a second send for the same request id
        self.first_send: float | None = None
        self.last_send: float | None = None
        self.arrivals: dict[str, float] = {}  # id -> arrival, until someone waits for it
        self.seen: set[str] = set()
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.latencies: list[float] = []
        self.wait_timeouts = 0
        self.engine_arrivals: dict[str, float] = {}  # id -> first engine call, until its send arrives
        self.engine_to_send: list[float] = []
        self.feeds: set[asyncio.StreamWriter] = feeds  # kept across resets

    # ---------------------------------------------------------------------------- engine
    async def engine(self, request: web.Request) -> web.Response:
        arrival = time.time()
        self.engine_calls += 1
        body = json.loads(await request.read())
        text = (body.get("input") or {}).get("text", "")
        match = BODY_ID_RE.search(text)
        if match is not None:
            self.engine_arrivals.setdefault(match.group(1), arrival)
        if self.engine_delay:
            await asyncio.sleep(self.engine_delay)
        context = dict(body.get("context") or {})
        if "conversation_id" not in context:
            context["conversation_id"] = str(uuid.uuid4())
        system = dict(context.get("system") or {"dialog_stack": [{"dialog_node": "root"}]})
        system["dialog_turn_counter"] = int(system.get("dialog_turn_counter", 0)) + 1
        system["dialog_request_counter"] = system["dialog_turn_counter"]
        context["system"] = system
        reply = f"echo {text}"
        answer = {
            "intents": [],
            "entities": [],
            "input": {"text": text},
            "output": {
                "generic": [{"response_type": "text", "text": reply}],
                "text": [reply],
                "nodes_visited": ["echo"],
                "log_messages": [],
            },
            "context": context,
        }
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    # ---------------------------------------------------------------------------- provider
    async def send(self, request: web.Request) -> web.Response:
        arrival = time.time()
        form = await request.post()
        body = str(form.get("Body", ""))
        self.sends += 1
        if self.first_send is None:
            self.first_send = arrival
        self.last_send = arrival
        match = BODY_ID_RE.search(body)
        if match is None:
            self.unmatched += 1
        else:
            request_id = match.group(1)
            if request_id in self.seen:
                self.duplicates += 1
            else:
                self.seen.add(request_id)
                engine_at = self.engine_arrivals.pop(request_id, arrival)
                self.engine_to_send.append(arrival - engine_at)
                if self.feeds:
                    line = f"{request_id} {engine_at!r} {arrival!r}\n".encode()
                    for feed in self.feeds:
                        feed.write(line)
                waiter = self.waiters.pop(request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(arrival)
                else:
                    self.arrivals[request_id] = arrival
        media = form.getall("MediaUrl", [])
        sid = "SM" + uuid.uuid4().hex
        now = formatdate(arrival, usegmt=True)
        account = request.match_info["sid"]
        resource = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": None,
            "num_media": str(len(media)),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "to": form.get("To"),
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"},
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        return web.Response(status=201, body=json.dumps(resource).encode(), content_type="application/json")

    # ---------------------------------------------------------------------------- control
    async def wait(self, request: web.Request) -> web.Response:
        request_id = request.match_info["id"]
        t0 = float(request.query.get("t0", "0") or 0)
        timeout = float(request.query.get("timeout", "30"))
        arrival = self.arrivals.pop(request_id, None)
        if arrival is None:
            waiter = self.waiters.get(request_id)
            if waiter is None:
                waiter = asyncio.get_running_loop().create_future()
                self.waiters[request_id] = waiter
            try:
                arrival = await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                self.waiters.pop(request_id, None)
                self.wait_timeouts += 1
                return web.json_response({"error": "timeout"}, status=504)
        if t0:
            self.latencies.append(arrival - t0)
        return web.json_response({"arrival": arrival})

    async def stats(self, request: web.Request) -> web.Response:
        window = (self.last_send - self.first_send) if self.first_send and self.last_send else 0.0
        return web.json_response(
            {
                "engine_calls": self.engine_calls,
                "sends": self.sends,
                "unmatched": self.unmatched,
                "duplicates": self.duplicates,
                "first_send": self.first_send,
                "last_send": self.last_send,
                "sends_per_s": round((self.sends - 1) / window, 1) if window > 0 else None,
                "unwaited": len(self.arrivals),
                "waiting": len(self.waiters),
                "wait_timeouts": self.wait_timeouts,
                "engine_delay_ms": self.engine_delay * 1000,
                "engine_to_send_ms": latency_summary(self.engine_to_send),
                "turn_latency_ms": latency_summary(self.latencies),
                "now": time.time(),
            }
        )

    async def reset_handler(self, request: web.Request) -> web.Response:
        options: JSONDict = {}
        if request.can_read_body:
            options = await request.json()
        for waiter in self.waiters.values():
            waiter.cancel()
        self.reset()
        if "engine_delay_ms" in options:
            self.engine_delay = float(options["engine_delay_ms"]) / 1000
        return web.json_response({"ok": True, "engine_delay_ms": self.engine_delay * 1000})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def feed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.feeds.add(writer)
        try:
            await reader.read()  # until the client goes away
        finally:
            self.feeds.discard(writer)
            writer.close()

    def app(self, host: str, feed_port: int | None) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/v1/workspaces/{ws}/message", self.engine)
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self.send)
        app.router.add_get("/wait/{id}", self.wait)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/reset", self.reset_handler)
        app.router.add_get("/health", self.health)
        if feed_port is not None:
            app.cleanup_ctx.append(self._feed_server(host, feed_port))
        return app

    def _feed_server(self, host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
        async def serve(app: web.Application) -> AsyncIterator[None]:
            server = await asyncio.start_server(self.feed, host, port)
            yield
            server.close()
            for writer in list(self.feeds):
                writer.close()

        return serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--feed-port", type=int, help="serve the arrival feed on this port")
    parser.add_argument("--engine-delay-ms", type=float, default=0.0, help="answer the engine after this (0, 200)")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the fakes listen on loopback only")
    app = Fakes(args.engine_delay_ms).app(args.host, args.feed_port)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
