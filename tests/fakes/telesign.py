"""A fake TeleSign Messaging API (`/v1/omnichannel`, MMS with SMS fallback), for tests.

`POST /v1/omnichannel` checks Basic (`customer_id:api_key`) or Digest (`TSA customer_id:signature`, HMAC-SHA256
keyed with the base64-decoded API key, as `telesign.rest.RestClient.generate_telesign_headers` signs), refuses a
`Date` more than 15 minutes off and a nonce seen before, validates the JSON body with the rules of TeleSign's
Engage OpenAPI `sendAdvancedMessage` (the slice in tests/fixtures/telesign/engage_api_omnichannel.json) and its
documented status codes, records what it accepted and answers `{"reference_id", "status": {"code": 3001, …},
"external_id"}`. `GET /v1/omnichannel/{reference_id}` shows a message's status. The next requests can be scripted
to fail or to be delayed.

Errors answer `{"reference_id", "status": {"code", "description"}, "external_id", "errors": [{"code",
"description"}]}`: TeleSign's documented omnichannel error bodies (`reference_id` only on 400, `status`,
`external_id`) plus the `errors` array TeleSign's status-code page says every response carries; `reference_id`
is null where the OpenAPI shows none. A 401 always has `status.code` 3400 (the only 401 code the endpoint
documents); the reason is in `errors`, under both numberings TeleSign documents for it (e.g. 10004 and -30010 for
a stale `Date`), since which one this endpoint uses is not documented.

Choices where TeleSign documents nothing (each also said where it is made):
- Unknown top-level fields are refused with 400 / 3110 "Invalid request" (TeleSign may ignore them; a fake that
  refuses them catches typos such as the `callback_URL` in TeleSign's own example).
- Problems TeleSign documents as reported later on a channel (3101 bad phone number, 3112 template, 3305/3306
  missing message parameters) are refused at once with 400 and that code, so a test sees them.
- MMS from a sender that is not one of `mms_senders` (US short codes) is accepted like any other request: the MMS
  leg then fails with 3062 "MMS not supported" in the delivery callback, and SMS (if listed next) takes over.
- A request larger than 10 KB is refused before authentication (413 / 3116), as a front proxy would.
- Digest: only the `Date` header is supported (as the SDK sends it), not TeleSign's alternative `x-ts-date`; a
  nonce must be 8 to 128 characters (TeleSign says only "too long or too short"); accepted nonces are remembered
  for the fake's lifetime.

The other direction, what TeleSign POSTs to a gateway, is built from TeleSign's published callback shapes
(tests/fixtures/telesign/): `delivery_callback` / `FakeTeleSign.deliver` (Transaction Callback Service for
Messaging, with `channel_status`), `mo_mms`, `mo_sms`; `sign_callback` signs a body as TeleSign does (base64
HMAC-SHA256 of the raw body keyed with the base64-decoded API key) and `FakeTeleSign.post_callback` serialises,
signs and posts in one go.

In tests::

    async with serve_fake_telesign() as fake:
        config = fake.settings()
        ...
        (sent,) = await fake.wait_for(1)
        status, text = await fake.post_callback(http, gateway_url, fake.deliver(sent, final="mms_timeout"))

Standalone: `python -m tests.fakes.telesign --port 8767`; `GET /_fake/messages` lists what was sent and
`DELETE /_fake/messages` forgets it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import jsonschema
from aiohttp import web

from sms_gateway.providers.telesign.settings import TeleSignConfig
from tests.fakes.scripting import RateLimit, Script, retry_after_header
from tests.fakes.serving import serving

JSON = dict[str, Any]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telesign"
API_FIXTURE = FIXTURES / "engage_api_omnichannel.json"
CALLBACKS_FIXTURE = FIXTURES / "engage_callbacks_messaging.json"

OMNI_PATH = "/v1/omnichannel"
STATUS_PATH = "/v1/omnichannel/{reference_id}"

DEFAULT_CUSTOMER_ID = "FFFFFFFF-EEEE-DDDD-1234-AB1234567890"  # the shape of TeleSign's customer ids
DEFAULT_SHORT_CODE = "12345"
DEFAULT_USER_NUMBER = "12025550143"  # TeleSign writes numbers as digits with the country code, no "+"

MAX_PAYLOAD = 10 * 1024  # "Allowed payload size is limited to 10KB" (3116 / HTTP 413)
DATE_TOLERANCE = 15 * 60  # seconds a Digest `Date` may be off
NONCE_LENGTH = (8, 128)  # our bounds: TeleSign says only "too long or too short" (10003); the SDK sends a uuid4
REFERENCE_TTL = 12 * 3600  # the status GET answers -10004 for reference ids older than this
DEFAULT_FALLBACK = 300  # OmniReqChannelObj.fallback_time default, seconds
FALLBACK_RANGE = (30, 3600)
EXTERNAL_ID_MAX = 100
CHANNELS = ("rcs", "whatsapp", "sms", "mms", "viber", "email")  # OmniReqChannelObj.channel enum
MMS_TEMPLATES = ("image", "video", "audio")
MESSAGE_TYPES = ("ARN", "MKT", "OTP")
LIFECYCLE_EVENTS = ("create", "sign-in", "transact", "update", "delete")
AUTH_METHOD = "HMAC-SHA256"

_REFERENCE_RE = re.compile(r"[0-9A-Fa-f]{32}")
_PHONE_RE = re.compile(r"[1-9][0-9]{6,14}")  # E.164 digits, without "+"
_SHORT_CODE_RE = re.compile(r"[0-9]{5,6}")

# Status texts from TeleSign's "All status and error codes" page (Messaging family) and the Engage OpenAPI.
DESCRIPTIONS: Mapping[int, str] = {
    1500: "Delivered",
    3000: "Delivered",
    3001: "Message in progress",
    3002: "Delivered to Gateway",
    3003: "Delivery error",
    3005: "Message is read",
    3030: "Temporary phone error",
    3031: "Permanent phone error",
    3032: "Gateway/network cannot route message",
    3033: "Message expired before delivery",
    3035: "Invalid/unsupported",
    3041: "Carrier rejected - temporary problem",
    3042: "Carrier rejected - permanent error",
    3050: "Subscriber absent",
    3051: "Suspected spam",
    3055: "Delivery channel not supported by the end user's device",
    3056: "Message failed to deliver in specified fallback time",
    3057: "Invalid source address",
    3061: "Media size exceeds the limit",
    3062: "MMS not supported",
    3101: "Invalid value for parameter phone_number: {}",
    3102: "Invalid value for parameter message_type: {}",
    3103: "Unsupported value for parameter external_id: {}",
    3104: "Invalid value for parameter account_lifecycle_event: {}",
    3105: "Invalid value for parameter originating_ip: {}",
    3106: "Invalid value for parameter callback_url: {}",
    3108: "Invalid value for parameter message",
    3109: "Invalid value for parameter sender_id: {}",
    3110: "Invalid request",
    3112: "Specified template does not exist for selected channel",
    3113: "Invalid value for parameter channel: {}",
    3116: "Payload limit size exceeded",
    3203: "Callback URL parameter not enabled for Customer ID",
    3204: "Rate limit exceeded",
    3206: "Omnichannel Product not enabled for Customer ID",
    3300: "Missing parameter channels",
    3301: "Missing parameter channel",
    3302: "Missing parameter phone_number",
    3303: "Missing parameter message",
    3304: "Missing parameter message_type",
    3305: "Missing template specific parameters",
    3306: "Missing message parameters for specified channel",
    3311: "Invalid value for parameter reference_id",
    3400: "Not authorized",
    3411: "Invalid API Key.",
    3412: "Required 'Authorization' header is not in the correct format",
    3500: "System Unavailable",
    -10001: "Customer ID / Reference ID not found",
    -10004: "ReferenceID expired.",
}
_DEFAULT_CODES = {400: 3110, 401: 3400, 404: -10001, 413: 3116, 429: 3204, 500: 3500, 503: 3500}

# Why a request was not authenticated: (Engage API 401 code, Verify-family code, text). TeleSign documents the
# same conditions under both numberings and does not say which `/v1/omnichannel` uses, so both are listed.
AuthProblem = tuple[int, int | None, str]
MISSING_AUTHORIZATION: AuthProblem = (10009, -30004, "Missing required 'Authorization' header")
BAD_AUTHORIZATION: AuthProblem = (10028, -30005, "Required 'Authorization' header is not in the correct format")
UNKNOWN_CUSTOMER: AuthProblem = (10015, -30000, "Invalid Customer ID.")
WRONG_API_KEY: AuthProblem = (10022, None, "Invalid API Key.")
BAD_SIGNATURE: AuthProblem = (10008, -30006, "Invalid Signature.")
BAD_AUTH_METHOD: AuthProblem = (10006, -30008, "Invalid 'x-ts-auth-method' header.")
MISSING_DATE: AuthProblem = (10007, -30007, "Missing required 'Date' or 'x-ts-date' header")
BAD_DATE: AuthProblem = (10005, -30009, "'Date' or 'x-ts-date' header is not RFC822 compliant")
STALE_DATE: AuthProblem = (10004, -30010, "'Date' or 'x-ts-date' header is not within tolerable range")
BAD_NONCE: AuthProblem = (10003, -30011, "'x-ts-nonce' header value is either too long or too short")
REUSED_NONCE: AuthProblem = (10002, -30012, "'x-ts-nonce' header value has been used recently")

Outcome = Literal["delivered", "mms_timeout", "mms_unsupported", "device_unsupported", "failed"]


def new_reference_id() -> str:
    """A reference id as TeleSign makes them: 32 upper-case hex digits."""
    return secrets.token_hex(16).upper()


def new_api_key() -> str:
    """An API key as TeleSign issues them: base64 of 64 random bytes."""
    return base64.b64encode(secrets.token_bytes(64)).decode("ascii")


def digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def rfc3339(at: float | None = None) -> str:
    """`2024-11-12T13:12:29.551105Z`, one of the two timestamp formats TeleSign's messaging payloads use."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def legacy_timestamp(at: float | None = None) -> str:
    """`2020-05-04 22:07:01:226`, the other one (milliseconds after a colon)."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S:") + f"{moment.microsecond // 1000:03d}"


def description(code: int, value: object = "") -> str:
    return DESCRIPTIONS.get(code, f"Status {code}").format(value)


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# ------------------------------------------------------------------------------ signing


def decode_api_key(api_key: str) -> bytes:
    """The HMAC key: the API key base64-decoded as the SDK does (`b64decode`, which skips non-base64 characters
    such as the dashes in the SDK's example key)."""
    return base64.b64decode(api_key)


def digest_string_to_sign(method: str, content_type: str, date: str, nonce: str, body: str, resource: str) -> str:
    """What TeleSign's Digest scheme signs; the body line only when both content type and body are non-empty."""
    lines = [method, content_type, date, f"x-ts-auth-method:{AUTH_METHOD}", f"x-ts-nonce:{nonce}"]
    if content_type and body:
        lines.append(body)
    lines.append(resource)
    return "\n".join(lines)


def digest_signature(api_key: str, string_to_sign: str) -> str:
    mac = hmac.new(decode_api_key(api_key), string_to_sign.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def digest_headers(
    customer_id: str,
    api_key: str,
    method: str,
    resource: str,
    body: str = "",
    *,
    content_type: str | None = None,
    date: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers a client sends with Digest auth (as `RestClient.generate_telesign_headers` builds them).

    `content_type` defaults to `application/json` with a body, else empty (a GET).
    """
    content_type = ("application/json" if body else "") if content_type is None else content_type
    date = format_http_date(time.time()) if date is None else date
    nonce = secrets.token_hex(16) if nonce is None else nonce
    signature = digest_signature(api_key, digest_string_to_sign(method, content_type, date, nonce, body, resource))
    return {
        "Authorization": f"TSA {customer_id}:{signature}",
        "Date": date,
        "Content-Type": content_type,
        "x-ts-auth-method": AUTH_METHOD,
        "x-ts-nonce": nonce,
    }


def basic_authorization(customer_id: str, api_key: str) -> str:
    return "Basic " + base64.b64encode(f"{customer_id}:{api_key}".encode()).decode("ascii")


def format_http_date(at: float) -> str:
    """RFC 822/2616 GMT, e.g. `Tue, 31 Jan 2024 11:36:42 GMT`, as the SDK writes `Date`."""
    return formatdate(at, usegmt=True)


def sign_callback(api_key: str, body: bytes) -> str:
    """A callback's signature: base64 HMAC-SHA256 of the raw body, keyed with the base64-decoded API key."""
    return base64.b64encode(hmac.new(decode_api_key(api_key), body, hashlib.sha256).digest()).decode("ascii")


# ------------------------------------------------------------------------------ the OpenAPI slices


@cache
def _fixture(path: Path) -> JSON:
    data: JSON = json.loads(path.read_text(encoding="utf-8"))
    return data


def _to_json_schema(node: Any, components: Mapping[str, Any]) -> Any:
    """OpenAPI 3.0 schema -> plain JSON Schema: `$ref`s inlined, `nullable: true` as an added null type."""
    if isinstance(node, list):
        return [_to_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _to_json_schema(components[node["$ref"].rsplit("/", 1)[-1]], components)
    out = {key: _to_json_schema(value, components) for key, value in node.items()}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _allow_null_external_id(schema: JSON) -> JSON:
    # The OpenAPI types external_id as a string but says it is null when the request had none.
    prop = schema.get("properties", {}).get("external_id")
    if prop is not None and isinstance(prop.get("type"), str):
        prop["type"] = [prop["type"], "null"]
    return schema


def _api_schema(node: Any) -> JSON:
    schema: JSON = _to_json_schema(node, _fixture(API_FIXTURE)["components"]["schemas"])
    return schema


def _callbacks_schema(node: Any) -> JSON:
    schema: JSON = _to_json_schema(node, _fixture(CALLBACKS_FIXTURE)["components"]["schemas"])
    return schema


@cache
def request_schema() -> JSON:
    """`sendAdvancedMessage`'s request body as JSON Schema."""
    operation = _fixture(API_FIXTURE)["paths"][OMNI_PATH]["post"]
    return _api_schema(operation["requestBody"]["content"]["application/json"]["schema"])


def response_schema(status: int) -> JSON:
    """The schema of `POST /v1/omnichannel`'s answer with this HTTP status (external_id may be null)."""
    response = _fixture(API_FIXTURE)["paths"][OMNI_PATH]["post"]["responses"][str(status)]
    return _allow_null_external_id(_api_schema(response["content"]["application/json"]["schema"]))


def status_schema(status: int = 200) -> JSON:
    """The schema of `GET /v1/omnichannel/{reference_id}`'s answer with this HTTP status."""
    response = _fixture(API_FIXTURE)["paths"][STATUS_PATH]["get"]["responses"][str(status)]
    return _allow_null_external_id(_api_schema(response["content"]["application/json"]["schema"]))


@cache
def delivery_callback_schema() -> JSON:
    """A Messaging delivery callback: the general `DeliveryStatusNotification` plus, from the status GET's schema
    (TeleSign documents the callback as the general schema with `status.last_channel` and `channel_status`),
    `status` and `channel_status`; `reference_id` and `channel_status` required, `external_id` string or null."""
    get = status_schema(200)
    return {
        "allOf": [
            _callbacks_schema({"$ref": "#/components/schemas/DeliveryStatusNotification"}),
            {
                "type": "object",
                "properties": {
                    "status": get["properties"]["status"],
                    "channel_status": get["properties"]["channel_status"],
                    "external_id": {"type": ["string", "null"]},
                },
                "required": ["reference_id", "channel_status"],
            },
        ]
    }


def _callback_operation_schema(path: str) -> JSON:
    operation = _fixture(CALLBACKS_FIXTURE)["paths"][path]["post"]
    return _callbacks_schema(operation["requestBody"]["content"]["application/json"]["schema"])


@cache
def mo_mms_schema() -> JSON:
    """`MMSCallbacks` (inbound MMS) as JSON Schema."""
    return _callback_operation_schema("/mms_callback_endpoint")


@cache
def mo_sms_schema() -> JSON:
    """`MsgSMSCallbacks` (inbound SMS) as JSON Schema, without `user_response.price` among the required fields:
    TeleSign lists it as required but says it is sent only when its price feature is enabled."""
    schema = _callback_operation_schema("/messaging_sms_callback_endpoint")
    for part in schema["allOf"]:
        user_response = part.get("properties", {}).get("user_response")
        if user_response is not None:
            user_response["required"] = [name for name in user_response["required"] if name != "price"]
    return schema


# ------------------------------------------------------------------------------ errors


@dataclass(frozen=True, slots=True)
class TeleSignError:
    """One error answer."""

    status: int  # HTTP
    code: int  # status.code
    description: str
    errors: tuple[tuple[int, str], ...] = ()
    reference_id: str | None = None
    external_id: str | None = None
    retry_after: str | None = None
    raw_body: str | None = None  # answer this instead of TeleSign's JSON (e.g. a proxy's HTML page)
    signature_string: str | None = None  # what the fake signed, on a bad signature (as TeleSign's 401s show)
    slim: bool = False  # the status GET's error shape: {"status": {...}} only

    def body(self) -> JSON:
        body: JSON = {} if self.slim else {"reference_id": self.reference_id}
        body["status"] = {"code": self.code, "description": self.description}
        if not self.slim:
            body["external_id"] = self.external_id
        if self.errors or not self.slim:
            body["errors"] = [{"code": code, "description": text} for code, text in self.errors]
        if self.signature_string is not None:
            body["signature_string"] = self.signature_string
        return body

    def response(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        if self.raw_body is not None:
            return web.Response(status=self.status, text=self.raw_body, content_type="text/html", headers=headers)
        return web.json_response(self.body(), status=self.status, headers=headers)


def _invalid(code: int, value: object = "", *, external_id: str | None = None) -> TeleSignError:
    return TeleSignError(400, code, description(code, value), reference_id=new_reference_id(), external_id=external_id)


def _unauthorized(problem: AuthProblem | None, *, slim: bool = False, code: int = 3400) -> TeleSignError:
    errors: tuple[tuple[int, str], ...] = ()
    if problem is not None:
        errors = tuple((code, problem[2]) for code in problem[:2] if code is not None)
    return TeleSignError(401, code, description(code), errors=errors, slim=slim)


# ------------------------------------------------------------------------------ request validation


def validate_omnichannel(body: Any) -> TeleSignError | None:
    """None when TeleSign would accept this `/v1/omnichannel` body, else the 400 it would answer.

    The documented codes first, in the order TeleSign's table lists the missing-parameter ones, then the
    OpenAPI request schema for anything else (3110).
    """
    if not isinstance(body, dict):
        return _invalid(3110)
    external = body.get("external_id")
    echo = external if isinstance(external, str) else None
    problem = _body_problem(body)
    if problem is not None:
        code, value = problem
        return _invalid(code, value, external_id=echo)
    errors = sorted(jsonschema.Draft7Validator(request_schema()).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        return _invalid(3110, external_id=echo)
    return None


def _body_problem(body: Mapping[str, Any]) -> tuple[int, object] | None:
    unknown = sorted(set(body) - set(request_schema()["properties"]))
    if unknown:
        return 3110, unknown[0]  # our choice: TeleSign does not document unknown fields
    return (
        _channels_problem(body.get("channels"))
        or _recipient_problem(body)
        or _message_problem(body)
        or _options_problem(body)
    )


def _channels_problem(channels: Any) -> tuple[int, object] | None:
    if channels is None:
        return 3300, ""
    if not isinstance(channels, list) or not channels or not all(isinstance(item, dict) for item in channels):
        return 3113, json.dumps(channels)
    if any(item.get("channel") is None for item in channels):
        return 3301, ""
    names = [item["channel"] for item in channels]
    # An unknown channel is documented as 3100 on the channel (skipped later); refused here so a test sees it.
    if any(name not in CHANNELS for name in names) or len(set(names)) != len(names):
        return 3113, json.dumps(channels)
    for item in channels:
        fallback = item.get("fallback_time")
        if fallback is not None and (
            isinstance(fallback, bool)
            or not isinstance(fallback, int)
            or not FALLBACK_RANGE[0] <= fallback <= FALLBACK_RANGE[1]
        ):
            return 3113, json.dumps(channels)
    return None


def recipient_number(body: Mapping[str, Any]) -> Any:
    """`recipient.phone_number`, else the deprecated top-level `phone_number`."""
    recipient = body.get("recipient")
    if isinstance(recipient, dict) and recipient.get("phone_number") is not None:
        return recipient["phone_number"]
    return body.get("phone_number")


def _recipient_problem(body: Mapping[str, Any]) -> tuple[int, object] | None:
    names = [item["channel"] for item in body["channels"]]
    if names == ["email"]:
        return None
    number = recipient_number(body)
    if number is None or number == "":
        return 3302, ""
    # 3101 is documented as reported on the channel; refused here. Digits only, with the country code, no "+".
    if not isinstance(number, str) or not _PHONE_RE.fullmatch(number):
        return 3101, number
    return None


def _message_problem(body: Mapping[str, Any]) -> tuple[int, object] | None:
    message = body.get("message")
    if message is None:
        return 3303, ""
    if not isinstance(message, dict) or not all(isinstance(value, dict) for value in message.values()):
        return 3108, ""
    for item in body["channels"]:
        name = item["channel"]
        details = message.get(name) or message.get("default")
        if details is None:
            return 3306, name
        template = details.get("template")
        parameters = details.get("parameters")
        if not isinstance(parameters, dict):
            return 3305, name
        if name == "mms":
            if template not in MMS_TEMPLATES:
                return 3112, template
            if "url" not in parameters:
                return 3305, name
            if not _is_http_url(parameters["url"]):
                return 3108, ""
        elif name == "sms":
            if template != "text":
                return 3112, template
            if not isinstance(parameters.get("text"), str) or not parameters["text"]:
                return 3305, name
    return None


def _options_problem(body: Mapping[str, Any]) -> tuple[int, object] | None:
    message_type = body.get("message_type")
    if message_type is None:
        return 3304, ""
    if message_type not in MESSAGE_TYPES:
        return 3102, message_type
    external = body.get("external_id")
    if external is not None and not (
        isinstance(external, str) and external.isascii() and len(external) <= EXTERNAL_ID_MAX
    ):
        return 3103, external
    if "callback_url" in body:
        # Documented: 3106 for an empty value. Also refused (our choice): anything but an absolute http(s) URL.
        if not _is_http_url(body["callback_url"]):
            return 3106, body["callback_url"]
    event = body.get("account_lifecycle_event")
    if event is not None and event not in LIFECYCLE_EVENTS:
        return 3104, event
    ip = body.get("originating_ip")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return 3105, ip
    sender = body.get("sender_id")
    if sender is not None and (not isinstance(sender, str) or not sender):
        return 3109, sender
    return None


# ------------------------------------------------------------------------------ state


@dataclass(slots=True)
class TeleSignSent:
    """One message the fake accepted."""

    reference_id: str
    body: JSON = field(repr=False)  # the parsed request, as sent
    phone_number: str
    channels: list[str]  # in the order TeleSign tries them
    fallback_time: int | None  # the first channel's, as sent (TeleSign's default when absent: 300 s)
    mms_template: str | None  # image, video or audio
    mms_url: str | None
    sms_text: str | None  # message.sms's text, else message.default's when sms is a channel
    message_type: str
    external_id: str | None
    sender_id: str | None  # as sent (None: the account's default sender)
    accepted_at: float  # epoch seconds
    callback_url: str | None = None
    mms_supported: bool = True  # False: MMS from a sender that is not a short code of `mms_senders` (3062)
    report: JSON | None = field(default=None, repr=False)  # the last delivery callback built by FakeTeleSign.deliver

    def to_json(self) -> JSON:
        return asdict(self)


def _parameters(message: Mapping[str, Any], channel: str) -> Mapping[str, Any]:
    details = message.get(channel) or message.get("default") or {}
    parameters: Mapping[str, Any] = details.get("parameters") or {}
    return parameters


def delivery_callback(
    sent: TeleSignSent,
    *,
    final: Outcome | None = None,
    failure_code: int = 3031,
) -> JSON:
    """The delivery callback TeleSign's Transaction Callback Service sends for `sent`, shaped like
    tests/fixtures/telesign/callback_*.json.

    `final`:
    - "delivered": the first channel delivers (3000).
    - "mms_timeout": MMS is not confirmed within its fallback time (3056) and the next channel delivers.
    - "mms_unsupported": 3062 "MMS not supported" on MMS, the next channel delivers.
    - "device_unsupported": 3055 "channel not supported by device" on MMS, the next channel delivers.
    - "failed": every channel fails: the earlier ones time out (3056), the last one fails with `failure_code`
      (3031 "Permanent phone error" by default); the message's status is 3003 "Delivery error".
    - None: "delivered", or "mms_unsupported" when the message's MMS leg is doomed (not from an MMS short code).
    A doomed MMS leg is always 3062, whatever `final` says. The MMS outcomes need `mms` as the first channel;
    without a channel after it the message ends with 3003 "Delivery error" on the MMS leg.
    Timestamps: the last leg and `status.updated_on` as `2020-05-04 22:07:01:226`, earlier legs in RFC 3339, as
    TeleSign's examples mix them; earlier legs end at the first channel's fallback time after acceptance.
    """
    channels = sent.channels
    doomed = "mms" in channels and not sent.mms_supported
    outcome: Outcome = final or ("mms_unsupported" if doomed else "delivered")
    if doomed and outcome != "failed":
        outcome = "mms_unsupported"
    if outcome in ("mms_timeout", "mms_unsupported", "device_unsupported") and channels[0] != "mms":
        raise ValueError(f"outcome {outcome!r} needs mms as the first channel, not {channels}")
    first_code = {"mms_timeout": 3056, "mms_unsupported": 3062, "device_unsupported": 3055}.get(outcome)

    legs: list[tuple[str, int]]
    if outcome == "delivered":
        legs = [(channels[0], 3000)]
    elif outcome == "failed":
        legs = [(name, 3062 if name == "mms" and doomed else 3056) for name in channels[:-1]]
        legs.append((channels[-1], 3062 if channels[-1] == "mms" and doomed else failure_code))
    else:
        assert first_code is not None
        legs = [("mms", first_code)] + ([(channels[1], 3000)] if len(channels) > 1 else [])
    delivered = legs[-1][1] == 3000

    fallback = sent.fallback_time or DEFAULT_FALLBACK
    last_at = sent.accepted_at + (fallback + 3.226 if len(legs) > 1 else 2.5)
    channel_status: list[JSON] = []
    for index, (name, code) in enumerate(legs):
        is_last = index == len(legs) - 1
        at = last_at if is_last else sent.accepted_at + fallback * (index + 1) - 0.114
        channel_status.append(
            {
                name: {
                    "code": code,
                    "description": description(code),
                    "reference_id": new_reference_id(),
                    "updated_on": legacy_timestamp(at) if is_last else rfc3339(at),
                }
            }
        )
    overall = 3000 if delivered else 3003
    return {
        "reference_id": sent.reference_id,
        "external_id": sent.external_id,
        "status": {
            "code": overall,
            "description": description(overall),
            "last_channel": legs[-1][0],
            "updated_on": legacy_timestamp(last_at),
        },
        "channel_status": channel_status,
    }


def _mo_status(at: float) -> JSON:
    return {"code": 1500, "description": description(1500), "updated_on": rfc3339(at)}


def mo_mms(
    phone_number: str,
    *,
    texts: Sequence[str] = (),
    subject: str | None = None,
    images: Sequence[str] = (),
    videos: Sequence[str] = (),
    audios: Sequence[str] = (),
    reference_id: str | None = None,
) -> JSON:
    """An inbound MMS callback (Engage callbacks `MMSCallbacks`), shaped like tests/fixtures/telesign/mo_mms.json:
    `content` numbers each part (`text_1`, `text_2`…, `subject`, `url_image_1`…, `url_video_1`…, `url_audio_1`…)."""
    if not (texts or images or videos or audios or subject):
        raise ValueError("an inbound MMS needs some content")
    content: JSON = {f"text_{i}": text for i, text in enumerate(texts, 1)}
    if subject is not None:
        content["subject"] = subject
    for kind, urls in (("image", images), ("video", videos), ("audio", audios)):
        content.update({f"url_{kind}_{i}": url for i, url in enumerate(urls, 1)})
    return {
        "reference_id": reference_id or new_reference_id(),
        "status": _mo_status(time.time()),
        "phone_number": digits(phone_number),
        "sub_resource": "mo_mms",
        "content": content,
    }


# TeleSign's default keyword-to-action mapping (its "Inbound SMS - Action-to-keyword mapping" page), abridged.
_KEYWORDS = {
    "stop": ("stop", "end", "cancel", "unsubscribe", "quit", "stopall", "arret"),
    "start": ("start", "unstop", "yes"),
    "help": ("help", "info"),
}


def mo_sms(
    phone_number: str,
    text: str,
    *,
    sender_id: str = DEFAULT_SHORT_CODE,
    reference_id: str | None = None,
    iso_country_code: str = "US",
) -> JSON:
    """An inbound SMS callback (Engage callbacks `MsgSMSCallbacks`), shaped like tests/fixtures/telesign/mo_sms.json.

    `action`/`keyword` from the message's first word (start, stop, help), else `generic` with an empty keyword;
    `errors` is `{}` ("for now, this field will always be empty"); no `price` (a feature TeleSign enables).
    """
    now = time.time()
    word = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    action = next((name for name, words in _KEYWORDS.items() if word in words), "generic")
    return {
        "reference_id": reference_id or new_reference_id(),
        "status": _mo_status(now),
        "user_response": {
            "sender_id": sender_id,
            "iso_country_code": iso_country_code,
            "action": action,
            "keyword": word if action != "generic" else "",
            "phone_number": digits(phone_number),
            "mo_message": text,
        },
        "sub_resource": "mo_sms",
        "errors": {},
        "submit_timestamp": rfc3339(now - 0.336),
    }


def serialize(payload: Mapping[str, Any]) -> bytes:
    """A callback body: JSON, UTF-8 (the exact bytes that are signed and posted)."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


class FakeTeleSign:
    """State and behaviour of one fake TeleSign account with Messaging. Build the app with `make_app()`."""

    def __init__(
        self,
        customer_id: str = DEFAULT_CUSTOMER_ID,
        api_key: str | None = None,
        *,
        mms_senders: Iterable[str] = (DEFAULT_SHORT_CODE,),
        default_sender: str | None = DEFAULT_SHORT_CODE,
    ) -> None:
        self.customer_id = customer_id
        self.api_key = api_key if api_key is not None else new_api_key()
        self.mms_senders = set(mms_senders)  # the account's US short codes, the only senders MMS goes from
        self.default_sender = default_sender  # what TeleSign sends from when a request has no sender_id
        self.messages: list[TeleSignSent] = []
        self.rejected: list[TeleSignError] = []  # every error answered, scripted or not
        self.request_count = 0  # every POST /v1/omnichannel, including rejected ones
        self.status_requests = 0  # every GET /v1/omnichannel/{reference_id}
        self.nonces: dict[str, float] = {}  # Digest nonces accepted -> when
        self.arrived = asyncio.Event()  # set on each accepted message
        self.base_url: str | None = None  # set by serve_fake_telesign()
        self._script: Script[TeleSignError] = Script()
        self.rate_limit: RateLimit | None = None

    # -- scripting

    def fail_next(
        self,
        count: int = 1,
        status: int = 503,
        *,
        code: int | None = None,
        description: str | None = None,
        retry_after: str | float | None = None,
        raw_body: str | None = None,
    ) -> None:
        """Answer the next `count` authenticated POSTs with this error instead of sending.

        `code` defaults by status (400 3110, 401 3400, 429 3204, 500/503 3500).
        """
        code = _DEFAULT_CODES.get(status, 3500) if code is None else code
        error = TeleSignError(
            status=status,
            code=code,
            description=description or DESCRIPTIONS.get(code, f"Scripted failure ({status})").format(""),
            reference_id=new_reference_id() if status == 400 else None,
            retry_after=retry_after_header(retry_after),
            raw_body=raw_body,
        )
        self._script.fail(error, count)

    def limit_rate(self, per_second: int, retry_after: float | None = 1.0) -> RateLimit:
        """Take at most `per_second` sends a second; answer the others as TeleSign answers requests over the
        Omnichannel API's rate: HTTP 429, status code 3204 "Rate limit exceeded", `retry_after` as Retry-After."""
        self.rate_limit = RateLimit(per_second, retry_after)
        return self.rate_limit

    def delay_next(self, count: int = 1, seconds: float = 1.0) -> None:
        """Wait `seconds` before answering each of the next `count` POSTs (see `Script.delay`)."""
        self._script.delay(seconds, count)

    def reset(self) -> None:
        self.messages.clear()
        self.rejected.clear()
        self.nonces.clear()
        self.request_count = self.status_requests = 0
        self._script.clear()
        self.arrived.clear()
        self.rate_limit = None

    # -- helpers for tests

    def settings(self, **overrides: Any) -> TeleSignConfig:
        """A TeleSignConfig pointing at this fake, with its customer id and API key, sender id "12345"."""
        values: JSON = {
            "url": self._require_base_url(),
            "customer_id": self.customer_id,
            "api_key": self.api_key,
            "sender_id": DEFAULT_SHORT_CODE,
        }
        values.update(overrides)
        return TeleSignConfig(**values)

    @property
    def send_url(self) -> str:
        return f"{self._require_base_url()}{OMNI_PATH}"

    def status_url(self, reference_id: str) -> str:
        return f"{self._require_base_url()}{OMNI_PATH}/{reference_id}"

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[TeleSignSent]:
        """Wait until at least `count` messages were accepted; the first `count` of them."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise TimeoutError(f"fake TeleSign accepted {len(self.messages)} message(s), expected {count}") from None
        return self.messages[:count]

    def deliver(self, sent: TeleSignSent, final: Outcome | None = None, *, failure_code: int = 3031) -> JSON:
        """The delivery callback for `sent` (see `delivery_callback`); the status GET shows it from now on."""
        payload = delivery_callback(sent, final=final, failure_code=failure_code)
        sent.report = payload
        return payload

    def status_json(self, sent: TeleSignSent) -> JSON:
        """What `GET /v1/omnichannel/{reference_id}` answers for `sent`: its last delivery callback, else "in
        progress" on the first channel (without a channel reference_id: "in case of channel status code 3001,
        reference_id will not be returned"). `additional_info` is empty: no optional feature is enabled."""
        if sent.report is not None:
            report = sent.report
            return {
                "reference_id": report["reference_id"],
                "external_id": report["external_id"],
                "status": report["status"],
                "additional_info": {},
                "channel_status": report["channel_status"],
            }
        updated_on = rfc3339(sent.accepted_at)
        first = sent.channels[0]
        return {
            "reference_id": sent.reference_id,
            "external_id": sent.external_id,
            "status": {"code": 3001, "description": description(3001), "last_channel": first, "updated_on": updated_on},
            "additional_info": {},
            "channel_status": [{first: {"code": 3001, "description": description(3001), "updated_on": updated_on}}],
        }

    async def post_callback(
        self,
        http: aiohttp.ClientSession,
        url: str,
        payload: Mapping[str, Any] | bytes | str,
        *,
        signature: str | None = None,
        as_tsa: bool = True,
        api_key: str | None = None,
    ) -> tuple[int, str]:
        """POST a callback as TeleSign does: serialised once, those exact bytes signed; (status, response text).

        `Authorization: TSA {customer_id}:{signature}`, or the bare signature with `as_tsa=False` (TeleSign does
        not document the header's format; its SDK's verifier takes the bare signature). `signature` replaces the
        computed one; `api_key` signs with another key.
        """
        if isinstance(payload, bytes):
            raw = payload
        elif isinstance(payload, str):
            raw = payload.encode("utf-8")
        else:
            raw = serialize(payload)
        if signature is None:
            signature = sign_callback(self.api_key if api_key is None else api_key, raw)
        headers = {
            "Authorization": f"TSA {self.customer_id}:{signature}" if as_tsa else signature,
            "Content-Type": "application/json",
        }
        async with http.post(url, data=raw, headers=headers) as response:
            return response.status, await response.text()

    def _require_base_url(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the fake is not serving; use serve_fake_telesign()")
        return self.base_url

    # -- the app

    def make_app(self) -> web.Application:
        # Room above the 10 KB limit, so the fake answers TeleSign's 413 rather than aiohttp's.
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(OMNI_PATH, self._send)
        app.router.add_get(STATUS_PATH, self._status)
        app.router.add_get("/_fake/messages", self._dump_messages)
        app.router.add_delete("/_fake/messages", self._reset)
        return app

    def _error(self, error: TeleSignError) -> web.Response:
        self.rejected.append(error)
        return error.response()

    def _authenticate(self, request: web.Request, raw: bytes) -> tuple[AuthProblem, str | None] | None:
        """None when the request is authenticated, else why not (and, for a bad signature, what was signed)."""
        header = request.headers.get("Authorization")
        if not header:
            return MISSING_AUTHORIZATION, None
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                customer_id, sep, api_key = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return BAD_AUTHORIZATION, None
            if not sep:
                return BAD_AUTHORIZATION, None
            if not hmac.compare_digest(customer_id.encode(), self.customer_id.encode()):
                return UNKNOWN_CUSTOMER, None
            if not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
                return WRONG_API_KEY, None
            return None
        if scheme != "TSA":
            return BAD_AUTHORIZATION, None
        return self._check_digest(request, raw, credentials)

    def _check_digest(
        self, request: web.Request, raw: bytes, credentials: str
    ) -> tuple[AuthProblem, str | None] | None:
        customer_id, sep, signature = credentials.strip().rpartition(":")
        if not sep or not customer_id or not signature:
            return BAD_AUTHORIZATION, None
        if not hmac.compare_digest(customer_id.encode(), self.customer_id.encode()):
            return UNKNOWN_CUSTOMER, None
        if request.headers.get("x-ts-auth-method", "").upper() != AUTH_METHOD:
            return BAD_AUTH_METHOD, None
        date = request.headers.get("Date")
        if not date:
            return MISSING_DATE, None
        try:
            moment = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return BAD_DATE, None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if abs(moment.timestamp() - time.time()) > DATE_TOLERANCE:
            return STALE_DATE, None
        nonce = request.headers.get("x-ts-nonce", "")
        if not NONCE_LENGTH[0] <= len(nonce) <= NONCE_LENGTH[1]:
            return BAD_NONCE, None
        if nonce in self.nonces:
            return REUSED_NONCE, None
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return BAD_SIGNATURE, None
        content_type = request.headers.get("Content-Type", "")
        signed = digest_string_to_sign(request.method, content_type, date, nonce, body, request.path)
        if not hmac.compare_digest(digest_signature(self.api_key, signed).encode(), signature.encode()):
            return BAD_SIGNATURE, signed
        self.nonces[nonce] = time.time()
        return None

    async def _send(self, request: web.Request) -> web.Response:
        self.request_count += 1
        raw = await request.read()  # read first: the send happens even if the client gives up waiting
        await self._script.wait()
        body, external_id = _lenient_json(raw)
        if len(raw) > MAX_PAYLOAD:
            return self._error(TeleSignError(413, 3116, description(3116), external_id=external_id))
        failure = self._authenticate(request, raw)
        if failure is not None:
            problem, signed = failure
            return self._error(replace(_unauthorized(problem), external_id=external_id, signature_string=signed))
        scripted = self._script.next_error()
        if scripted is not None:
            return self._error(replace(scripted, external_id=external_id))
        if body is None or request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._error(_invalid(3110, external_id=external_id))
        invalid = validate_omnichannel(body)
        if invalid is not None:
            return self._error(invalid)
        if self.rate_limit is not None and not self.rate_limit.take():
            return self._error(
                TeleSignError(
                    429,
                    3204,
                    description(3204),
                    external_id=body.get("external_id"),
                    retry_after=retry_after_header(self.rate_limit.retry_after),
                )
            )
        sent = self._accept(body)
        self.messages.append(sent)
        self.arrived.set()
        return web.json_response(
            {
                "reference_id": sent.reference_id,
                "status": {"code": 3001, "description": description(3001)},
                "external_id": sent.external_id,
            }
        )

    def _accept(self, body: JSON) -> TeleSignSent:
        channels = [item["channel"] for item in body["channels"]]
        message = body["message"]
        mms = _parameters(message, "mms") if "mms" in channels else {}
        mms_details = (message.get("mms") or message.get("default") or {}) if "mms" in channels else {}
        sms = _parameters(message, "sms") if "sms" in channels else {}
        sender = body.get("sender_id")
        effective_sender = sender or self.default_sender
        # MMS goes only from the account's US short codes; anything else is accepted and fails later (3062).
        mms_ok = effective_sender in self.mms_senders and bool(_SHORT_CODE_RE.fullmatch(effective_sender or ""))
        return TeleSignSent(
            reference_id=new_reference_id(),
            body=body,
            phone_number=recipient_number(body) or "",
            channels=channels,
            fallback_time=body["channels"][0].get("fallback_time"),
            mms_template=mms_details.get("template"),
            mms_url=mms.get("url"),
            sms_text=sms.get("text"),
            message_type=body["message_type"],
            external_id=body.get("external_id"),
            sender_id=sender,
            accepted_at=time.time(),
            callback_url=body.get("callback_url"),
            mms_supported=mms_ok or "mms" not in channels,
        )

    async def _status(self, request: web.Request) -> web.Response:
        self.status_requests += 1
        raw = await request.read()
        failure = self._authenticate(request, raw)
        if failure is not None:
            # The status GET documents 3412 for a malformed header and 3411 for a wrong key, 3400 otherwise.
            code = {BAD_AUTHORIZATION: 3412, WRONG_API_KEY: 3411}.get(failure[0], 3400)
            return self._error(_unauthorized(failure[0], slim=True, code=code))
        reference_id = request.match_info["reference_id"]
        if not _REFERENCE_RE.fullmatch(reference_id):
            return self._error(TeleSignError(400, 3311, description(3311), slim=True))
        sent = next((m for m in self.messages if m.reference_id == reference_id.upper()), None)
        if sent is None:
            # Not documented for this endpoint; the code TeleSign's Verify API answers for an unknown id.
            return self._error(TeleSignError(404, -10001, description(-10001), slim=True))
        if time.time() - sent.accepted_at > REFERENCE_TTL:
            return self._error(TeleSignError(404, -10004, description(-10004), slim=True))
        return web.json_response(self.status_json(sent))

    async def _dump_messages(self, request: web.Request) -> web.Response:
        return web.json_response([sent.to_json() for sent in self.messages])

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)


def _lenient_json(raw: bytes) -> tuple[Any, str | None]:
    """(parsed body or None, its external_id when a string): for echoing external_id even in error answers."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None
    external = body.get("external_id") if isinstance(body, dict) else None
    return body, external if isinstance(external, str) else None


# ------------------------------------------------------------------------------ running it


def serve_fake_telesign(
    fake: FakeTeleSign | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[FakeTeleSign]:
    """Serve a FakeTeleSign on `host:port` (0 = a free port) for the duration of the block."""
    return serving(fake or FakeTeleSign(), host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake TeleSign Messaging API (/v1/omnichannel).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--customer-id", default=DEFAULT_CUSTOMER_ID)
    parser.add_argument("--api-key", default=None, help="base64; a random one when not given")
    args = parser.parse_args(argv)
    fake = FakeTeleSign(args.customer_id, args.api_key)
    fake.base_url = f"http://{args.host}:{args.port}"
    print(f"fake TeleSign: customer {fake.customer_id}, API key {fake.api_key}, send URL {fake.send_url}", flush=True)
    web.run_app(fake.make_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
