"""The baseline: the least any gateway on our stack must do for a webhook, as a bare aiohttp app.

It parses the same Twilio form (`await request.post()`), checks the same `X-Twilio-Signature` with twilio's
`RequestValidator` on the public URL plus the raw path, and answers the same empty TwiML as text/xml. Nothing is
stored: this is the ceiling of aiohttp + twilio-python on this machine, the figure the gateway is compared with.

With `--engine-url` and `--provider-url` it also runs a bare turn after answering, as a background task: POST the
text to the engine (Watson v1 JSON), POST its answer to the provider (Twilio form), at most `--concurrency` at
once (the gateway's default `workerConcurrency`). No session, no store, no retries: the ceiling for a whole turn.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from benchmarks.common import ACCOUNT_SID, AUTH_TOKEN, EMPTY_TWIML, ENGINE_PASSWORD, ENGINE_USER, WEBHOOK_PATH


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Baseline:
    def __init__(self, public_url: str, engine_url: str | None, provider_url: str | None, concurrency: int) -> None:
        self.public_url = public_url.rstrip("/")
        self.validator = RequestValidator(AUTH_TOKEN)
        self.engine_url = engine_url
        self.provider_url = provider_url
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.http: aiohttp.ClientSession | None = None
        self.turn_errors = 0

    async def webhook(self, request: web.Request) -> web.Response:
        form = await request.post()
        url = self.public_url + request.raw_path
        if not self.validator.validate(url, form, request.headers.get("X-Twilio-Signature", "")):
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        if self.http is not None:
            task = asyncio.create_task(
                self.turn(str(form.get("From", "")), str(form.get("To", "")), str(form.get("Body", "")))
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return web.Response(text=EMPTY_TWIML, content_type="text/xml")

    async def turn(self, user: str, tenant: str, text: str) -> None:
        assert self.http is not None and self.engine_url and self.provider_url
        async with self.slots:
            try:
                body = {"input": {"text": text}, "context": {}, "alternate_intents": False}
                async with self.http.post(
                    self.engine_url,
                    json=body,
                    params={"version": "2021-11-27"},
                    headers={"Authorization": basic(ENGINE_USER, ENGINE_PASSWORD)},
                ) as r:
                    answer: Any = json.loads(await r.read())
                reply = "\n".join(answer["output"]["text"])
                form = [("To", user), ("From", tenant), ("Body", reply)]
                async with self.http.post(
                    self.provider_url, data=form, headers={"Authorization": basic(ACCOUNT_SID, AUTH_TOKEN)}
                ) as r:
                    await r.read()
                    if r.status != 201:
                        self.turn_errors += 1
            except (aiohttp.ClientError, KeyError, ValueError, TypeError):
                self.turn_errors += 1

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready", "turn_errors": self.turn_errors})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post(WEBHOOK_PATH, self.webhook)
        app.router.add_get("/ready", self.health)
        app.router.add_get("/health", self.health)
        if self.engine_url and self.provider_url:
            app.cleanup_ctx.append(self._client)
        return app

    async def _client(self, app: web.Application) -> Any:
        async with aiohttp.ClientSession() as http:
            self.http = http
            yield
            self.http = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-url", help="the base URL the load generator signs (default http://127.0.0.1:PORT)")
    parser.add_argument("--engine-url", help="a Watson v1 message URL: run a bare turn after each webhook")
    parser.add_argument("--provider-url", help="a Twilio Messages.json URL for the bare turn's reply")
    parser.add_argument("--concurrency", type=int, default=64, help="bare turns at once (the gateway's default)")
    args = parser.parse_args()
    public = args.public_url or f"http://127.0.0.1:{args.port}"
    baseline = Baseline(public, args.engine_url, args.provider_url, args.concurrency)
    web.run_app(baseline.app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
