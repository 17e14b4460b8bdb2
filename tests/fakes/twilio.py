"""A fake Twilio REST API (the parts the gateway uses), for tests and local runs.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` checks HTTP Basic auth, validates the form against
the `CreateMessageRequest` schema from Twilio's OpenAPI spec (the slice in
tests/fixtures/twilio_create_message_request.json) and Twilio's documented limits, records what it accepted
and answers 201 with an `api.v2010.account.message` body.
It can be scripted to fail or delay the next requests.

In tests::

    async with serve_fake_twilio() as fake:
        config = fake.provider_config()
        ...
        assert fake.messages[0].media_urls == [...]

Standalone: `python -m tests.fakes.twilio --port 8765`; then `GET /_fake/messages` lists what was sent,
`DELETE /_fake/messages` forgets it, `POST /_fake/failures` (`{"count", "status", "code", "message",
"retryAfter"}`) and `POST /_fake/delays` (`{"count", "seconds"}`) script the next requests.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import math
import re
import uuid
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from sms_gateway.providers.twilio import TwilioConfig
from tests.fakes.scripting import RateLimit, Script, retry_after_header
from tests.fakes.serving import serving

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "twilio_create_message_request.json"
MESSAGES_PATH = "/2010-04-01/Accounts/{AccountSid}/Messages.json"

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token-0000"

MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
_E164_RE = re.compile(r"^\+?[1-9][0-9]{6,14}$")
_DEFAULT_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
_JSON = dict[str, Any]


# ------------------------------------------------------------------------------ the spec slice


@cache
def _fixture() -> _JSON:
    data: _JSON = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return data


def _to_json_schema(node: Any, components: Mapping[str, Any]) -> Any:
    """OpenAPI 3.0 schema -> plain JSON Schema: `$ref`s inlined, `nullable: true` as an added null type."""
    if isinstance(node, list):
        return [_to_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        resolved = _to_json_schema(components[node["$ref"].rsplit("/", 1)[-1]], components)
        return {"anyOf": [resolved, {"type": "null"}]} if node.get("nullable") else resolved
    out = {key: _to_json_schema(value, components) for key, value in node.items()}
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def create_message_operation() -> _JSON:
    operation: _JSON = _fixture()["paths"][MESSAGES_PATH]["post"]
    return operation


@cache
def create_message_request_schema() -> _JSON:
    """The `CreateMessageRequest` form schema as JSON Schema."""
    components = _fixture()["components"]["schemas"]
    raw = create_message_operation()["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    schema: _JSON = _to_json_schema(raw, components)
    return schema


@cache
def message_schema() -> _JSON:
    """`api.v2010.account.message` (the 201 body) as JSON Schema."""
    components = _fixture()["components"]["schemas"]
    schema: _JSON = _to_json_schema(components["api.v2010.account.message"], components)
    return schema


def coerce_form(form: MultiDictProxy[str], schema: Mapping[str, Any]) -> tuple[_JSON, list[str]]:
    """Form fields typed per the schema (arrays gather repeated keys); problems that typing cannot express."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    data: _JSON = {}
    problems: list[str] = []
    for name in dict.fromkeys(form.keys()):
        values = form.getall(name)
        prop = properties.get(name)
        if prop is None:
            problems.append(f"Unknown parameter: {name}")
        elif prop.get("type") == "array":
            item_type = prop.get("items", {}).get("type", "string")
            data[name] = [_coerce_scalar(value, item_type) for value in values]
        elif len(values) > 1:
            problems.append(f"Parameter {name} was given more than once")
        else:
            data[name] = _coerce_scalar(values[0], prop.get("type", "string"))
    return data, problems


def _coerce_scalar(value: str, kind: Any) -> Any:
    """Leave the string as is when it does not convert, so schema validation reports it."""
    if kind == "integer" and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def validate_create_message(form: MultiDictProxy[str]) -> tuple[_JSON, TwilioError | None]:
    """(typed form, None) when Twilio would accept the request, else (…, the error Twilio would answer)."""
    schema = create_message_request_schema()
    data, problems = coerce_form(form, schema)
    if problems:
        return data, TwilioError(400, 20001, problems[0])
    if not data.get("To"):
        return data, TwilioError(400, 21604, "A 'To' phone number is required.")
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(part) for part in errors[0].path) or "request"
        return data, TwilioError(400, 20001, f"Invalid parameter {where}: {errors[0].message}")
    return data, _twilio_rules(data)


def _twilio_rules(data: Mapping[str, Any]) -> TwilioError | None:
    """`x-twilio.conditional` and the documented limits (error codes from Twilio's error catalogue)."""
    if not (data.get("From") or data.get("MessagingServiceSid")):
        return TwilioError(400, 21603, "A 'From' phone number is required.")
    media = data.get("MediaUrl") or []
    if not (data.get("Body") or media or data.get("ContentSid")):
        return TwilioError(400, 21602, "Message body is required.")
    if not _is_address(str(data["To"])):
        return TwilioError(400, 21211, f"The 'To' number {data['To']} is not a valid phone number.")
    if len(str(data.get("Body") or "")) > MAX_BODY_CHARS:
        return TwilioError(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    if len(media) > MAX_MEDIA:
        return TwilioError(400, 21623, "The number of media files exceeds the allowed limit of 10.")
    if not all(_is_http_url(url) for url in media):
        return TwilioError(400, 21620, "Invalid media URL(s).")
    callback = data.get("StatusCallback")
    if callback is not None and not (_is_http_url(callback) and "_" not in (urlsplit(callback).hostname or "")):
        return TwilioError(400, 21609, "Invalid StatusCallback URL.")
    return None


def _is_address(value: str) -> bool:
    """E.164, optionally behind a channel prefix such as `whatsapp:`."""
    return bool(_E164_RE.fullmatch(value.rsplit(":", 1)[-1]))


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# ------------------------------------------------------------------------------ state


@dataclass(frozen=True, slots=True)
class TwilioError:
    status: int
    code: int | None
    message: str
    retry_after: str | None = None
    raw_body: str | None = None  # answer this instead of Twilio's error JSON (e.g. a proxy's HTML page)

    def body(self) -> _JSON:
        body: _JSON = {"message": self.message, "status": self.status}
        if self.code is not None:
            body["code"] = self.code
            body["more_info"] = f"https://www.twilio.com/docs/errors/{self.code}"
        return body

    def response(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        if self.raw_body is not None:
            return web.Response(status=self.status, text=self.raw_body, content_type="text/html", headers=headers)
        return web.json_response(self.body(), status=self.status, headers=headers)


@dataclass(slots=True)
class SentMessage:
    """One message the fake accepted."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str | None
    media_urls: list[str]
    status_callback: str | None
    messaging_service_sid: str | None
    auth: tuple[str, str]
    form: list[tuple[str, str]]
    response: _JSON = field(repr=False)

    def to_json(self) -> _JSON:
        data = asdict(self)
        data["from"] = data.pop("from_")
        data["auth"] = {"username": self.auth[0]}  # never echo the token
        return data


class FakeTwilio:
    """State and behaviour of one fake Twilio account. Build the app with `make_app()`."""

    def __init__(self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[SentMessage] = []
        self.request_count = 0  # every POST to Messages.json, including rejected ones
        self.list_count = 0  # every GET of Messages.json (ListMessage)
        self.rejected: list[TwilioError] = []  # every error answered, scripted or not
        self.base_url: str | None = None  # set by serve_fake_twilio()
        self._script: Script[TwilioError] = Script()
        self.rate_limit: RateLimit | None = None

    # -- scripting

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        code: int | None = None,
        message: str | None = None,
        retry_after: str | float | None = None,
        raw_body: str | None = None,
    ) -> None:
        """Answer the next `count` authenticated requests with this error instead of processing them."""
        error = TwilioError(
            status=status,
            code=code if code is not None else _DEFAULT_CODES.get(status),
            message=message or f"Scripted failure ({status})",
            retry_after=None if retry_after is None else str(retry_after),
            raw_body=raw_body,
        )
        self._script.fail(error, count)

    def limit_rate(self, per_second: int, retry_after: float | None = 1.0) -> RateLimit:
        """Take at most `per_second` sends a second; answer the others as Twilio answers a sender over its rate:
        HTTP 429, code 20429 ("Too Many Requests"), with `retry_after` as Retry-After."""
        self.rate_limit = RateLimit(per_second, retry_after)
        return self.rate_limit

    def delay_next(self, count: int = 1, seconds: float = 1.0) -> None:
        """Wait `seconds` before handling each of the next `count` requests (see `Script.delay`)."""
        self._script.delay(seconds, count)

    def reset(self) -> None:
        self.messages.clear()
        self.rejected.clear()
        self.request_count = 0
        self._script.clear()
        self.rate_limit = None

    # -- helpers for tests

    @property
    def send_url(self) -> str:
        return f"{self._require_base_url()}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def provider_config(self, **overrides: Any) -> TwilioConfig:
        config = TwilioConfig(url=self._require_base_url(), username=self.account_sid, password=self.auth_token)
        return replace(config, **overrides)

    def _require_base_url(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the fake is not serving; use serve_fake_twilio()")
        return self.base_url

    # -- the app

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(MESSAGES_PATH, self._create_message)
        app.router.add_get(MESSAGES_PATH, self._list_account_messages)
        app.router.add_get("/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json", self._fetch_message)
        app.router.add_get("/2010-04-01/Accounts/{AccountSid}.json", self._fetch_account)
        app.router.add_get("/_fake/messages", self._list_messages)
        app.router.add_delete("/_fake/messages", self._reset)
        app.router.add_post("/_fake/failures", self._script_failures)
        app.router.add_post("/_fake/delays", self._script_delays)
        return app

    def _authenticate(self, request: web.Request) -> tuple[str, str] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        ok = (
            bool(sep)
            and hmac.compare_digest(username.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self.auth_token.encode())
            and request.match_info["AccountSid"] == self.account_sid
        )
        return (username, password) if ok else None

    def _error(self, error: TwilioError) -> web.Response:
        self.rejected.append(error)
        return error.response()

    async def _create_message(self, request: web.Request) -> web.Response:
        self.request_count += 1
        if self._script.delaying:
            await request.post()  # read it first: the send happens even if the client gives up waiting
            await self._script.wait()
        auth = self._authenticate(request)
        if auth is None:
            return self._error(TwilioError(401, 20003, "Authenticate"))
        scripted = self._script.next_error()
        if scripted is not None:
            return self._error(scripted)
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error(TwilioError(400, 20001, "Expected an application/x-www-form-urlencoded body"))
        form = await request.post()
        text_form = MultiDictProxy(_text_only(form))
        data, error = validate_create_message(text_form)
        if error is not None:
            return self._error(error)
        if self.rate_limit is not None and not self.rate_limit.take():
            return self._error(
                TwilioError(
                    429, 20429, "Too Many Requests", retry_after=retry_after_header(self.rate_limit.retry_after)
                )
            )
        message = self._accept(data, auth, list(text_form.items()))
        self.messages.append(message)
        return web.json_response(message.response, status=201)

    def _accept(self, data: Mapping[str, Any], auth: tuple[str, str], form: list[tuple[str, str]]) -> SentMessage:
        media = list(data.get("MediaUrl") or [])
        sid = ("MM" if media else "SM") + uuid.uuid4().hex
        return SentMessage(
            sid=sid,
            account_sid=self.account_sid,
            to=data["To"],
            from_=data.get("From"),
            body=data.get("Body"),
            media_urls=media,
            status_callback=data.get("StatusCallback"),
            messaging_service_sid=data.get("MessagingServiceSid"),
            auth=auth,
            form=form,
            response=self._message_json(sid, data, media),
        )

    def _message_json(self, sid: str, data: Mapping[str, Any], media: list[str]) -> _JSON:
        now = format_datetime(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        body = data.get("Body") or ""
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": data.get("From"),
            "messaging_service_sid": data.get("MessagingServiceSid"),
            "num_media": str(len(media)),
            "num_segments": str(1 if media else _segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if data.get("MessagingServiceSid") else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": data["To"],
            "uri": f"{uri}.json",
        }

    async def _list_account_messages(self, request: web.Request) -> web.Response:
        """`ListMessage`: newest first, filtered by `To` and `From`, one page of `PageSize` (default 50)."""
        self.list_count += 1
        if self._authenticate(request) is None:
            return self._error(TwilioError(401, 20003, "Authenticate"))
        to, from_ = request.query.get("To"), request.query.get("From")
        try:
            size = min(max(int(request.query.get("PageSize", "50")), 1), 1000)
        except ValueError:
            return self._error(TwilioError(400, 20001, "Invalid PageSize"))
        found = [
            m.response
            for m in reversed(self.messages)
            if (to is None or m.to == to) and (from_ is None or m.from_ == from_)
        ][:size]
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        return web.json_response(
            {
                "messages": found,
                "end": len(found) - 1,
                "first_page_uri": f"{uri}?PageSize={size}&Page=0",
                "next_page_uri": None,
                "page": 0,
                "page_size": size,
                "previous_page_uri": None,
                "start": 0,
                "uri": f"{uri}?PageSize={size}&Page=0",
            }
        )

    async def _fetch_message(self, request: web.Request) -> web.Response:
        if self._authenticate(request) is None:
            return self._error(TwilioError(401, 20003, "Authenticate"))
        for message in self.messages:
            if message.sid == request.match_info["Sid"]:
                return web.json_response(message.response)
        return self._error(TwilioError(404, 20404, "The requested resource was not found"))

    async def _fetch_account(self, request: web.Request) -> web.Response:
        if self._authenticate(request) is None:
            return self._error(TwilioError(401, 20003, "Authenticate"))
        return web.json_response(
            {"sid": self.account_sid, "friendly_name": "Fake account", "status": "active", "type": "Full"}
        )

    async def _list_messages(self, request: web.Request) -> web.Response:
        return web.json_response([message.to_json() for message in self.messages])

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)

    async def _script_failures(self, request: web.Request) -> web.Response:
        spec = await _json_object(request)
        self.fail_next(
            int(spec.get("count", 1)),
            status=int(spec.get("status", 500)),
            code=spec.get("code"),
            message=spec.get("message"),
            retry_after=spec.get("retryAfter"),
        )
        return web.Response(status=204)

    async def _script_delays(self, request: web.Request) -> web.Response:
        spec = await _json_object(request)
        self.delay_next(int(spec.get("count", 1)), float(spec.get("seconds", 1.0)))
        return web.Response(status=204)


def _text_only(form: MultiDictProxy[Any]) -> MultiDict[str]:
    return MultiDict((key, value) for key, value in form.items() if isinstance(value, str))


async def _json_object(request: web.Request) -> _JSON:
    try:
        data = await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text="expected a JSON object") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


def _segments(body: str) -> int:
    """Rough segment count: GSM-7 160/153 characters, else UCS-2 70/67."""
    single, multi = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else math.ceil(len(body) / multi)


# ------------------------------------------------------------------------------ running it


def serve_fake_twilio(
    fake: FakeTwilio | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[FakeTwilio]:
    """Serve a FakeTwilio on `host:port` (0 = a free port) for the duration of the block."""
    return serving(fake or FakeTwilio(), host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Twilio Messages API for local testing.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    args = parser.parse_args(argv)
    fake = FakeTwilio(args.account_sid, args.auth_token)
    fake.base_url = f"http://{args.host}:{args.port}"
    print(f"fake Twilio for {fake.account_sid}: send URL {fake.send_url}", flush=True)
    web.run_app(fake.make_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
