"""A fake Sinch: the OAuth2 token endpoint and the Conversation API calls an MMS gateway makes, for tests.

`POST /oauth2/token` issues bearer tokens to HTTP Basic `key_id:key_secret` (OAuth2 client credentials).
`POST /v1/projects/{project_id}/messages:send` checks the bearer token, validates the body with the Sinch SDK's
own `SendMessageRequest` model plus the rules Sinch documents, records what it accepted and answers
`{"message_id", "accepted_time"}`. Errors carry Sinch's body `{"error": {"code", "message", "status",
"details"}}`. `GET /v1/projects/{project_id}/messages` (ListMessages) and `GET .../messages/{message_id}` show
what was sent. The next requests can be scripted to fail or to be delayed.

The other direction, what Sinch POSTs to a gateway, is built from the shapes of Sinch's published callbacks
(tests/fixtures/sinch/): `inbound_event`, `delivery_report`, `FakeSinch.deliver`; `sign_webhook` signs a body
the way Sinch does, and `FakeSinch.post_webhook` serialises, signs and posts in one go.

In tests::

    async with serve_fake_sinch() as fake:
        config = fake.settings(mms_sender="12345")
        ...
        (sent,) = await fake.wait_for(1)
        status, text = await fake.post_webhook(http, gateway_url, fake.deliver(sent))

Standalone: `python -m tests.fakes.sinch --port 8766`; `GET /_fake/messages` lists what was sent and
`DELETE /_fake/messages` forgets it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ValidationError

from sms_gateway.providers.sinch.settings import SinchConfig
from tests.fakes.scripting import RateLimit, Script, retry_after_header
from tests.fakes.serving import serving

JSON = dict[str, Any]

TOKEN_PATH = "/oauth2/token"
SEND_PATH = "/v1/projects/{project_id}/messages:send"
LIST_PATH = "/v1/projects/{project_id}/messages"
MESSAGE_PATH = "/v1/projects/{project_id}/messages/{message_id}"

DEFAULT_PROJECT_ID = "3f7a1c2e-9b4d-4e8a-b5c6-0d1e2f3a4b5c"
DEFAULT_APP_ID = "01HZX3K9Q7V2M8N4P6R5T1W0YB"
DEFAULT_KEY_ID = "5c6f8b2a-7d1e-4f3a-9b0c-2e4d6f8a0b1c"
DEFAULT_KEY_SECRET = "fake-sinch-key-secret-0000"
DEFAULT_WEBHOOK_SECRET = "fake-sinch-webhook-secret-0000"
DEFAULT_USER_IDENTITY = "12025550143"  # Sinch gives MSISDNs as digits without "+"
DEFAULT_TOKEN_LIFETIME = 3600  # seconds; what auth.sinch.com answers in expires_in

SIGNATURE_HEADER = "x-sinch-webhook-signature"
NONCE_HEADER = "x-sinch-webhook-signature-nonce"
TIMESTAMP_HEADER = "x-sinch-webhook-signature-timestamp"
ALGORITHM_HEADER = "x-sinch-webhook-signature-algorithm"
_DIGESTS = {"HmacSHA256": hashlib.sha256, "HmacSHA384": hashlib.sha384, "HmacSHA512": hashlib.sha512}

MAX_MESSAGE_METADATA = 1024
MAX_CONVERSATION_METADATA = 2048
MAX_CORRELATION_ID = 128
MAX_MMS_SUBJECT = 80  # a card's title becomes the MMS Subject
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000

# Google RPC status names, as Sinch puts them in `error.status`.
_SINCH_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_OAUTH_ERRORS = {400: "invalid_request", 401: "invalid_client", 503: "temporarily_unavailable"}
_EXPIRED_CHALLENGE = 'Bearer error="invalid_token", error_description="token expired"'
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TTL_RE = re.compile(r"[0-9]+(\.[0-9]{1,9})?s")
MESSAGE_SOURCES = ("CONVERSATION_SOURCE", "DISPATCH_SOURCE")
DIRECTIONS = ("TO_APP", "TO_CONTACT")
VIEWS = ("WITH_METADATA", "WITHOUT_METADATA")


def new_ulid(at: float | None = None) -> str:
    """A 26-character ULID (48-bit milliseconds + 80 random bits, Crockford base32), like Sinch's ids."""
    millis = int((time.time() if at is None else at) * 1000)
    value = (millis << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def iso_z(at: float | None = None, *, timespec: str = "milliseconds") -> str:
    """ISO-8601 UTC with a `Z`, as Sinch writes times."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


# ------------------------------------------------------------------------------ the SDK models


@cache
def _sdk() -> Any:
    """The Sinch SDK's request models, imported on first use (the SDK takes a while to import)."""
    from sinch.core.models.internal.base_model_config import transform_kwargs_casing_scope
    from sinch.domains.conversation.models.v1.messages.internal.request.send_message_request import (
        SendMessageRequest,
    )
    from sinch.domains.conversation.models.v1.messages.internal.request.send_message_request_body import (
        SendMessageRequestBody,
    )
    from sinch.domains.conversation.models.v1.messages.types.conversation_channel_type import (
        ConversationChannelType,
    )

    class Sdk:
        request = SendMessageRequest
        message_kinds = tuple(SendMessageRequestBody.model_fields)
        channels = _literal_values(ConversationChannelType)
        casing_scope = staticmethod(transform_kwargs_casing_scope)

    return Sdk


def _literal_values(annotation: Any) -> tuple[str, ...]:
    """The `Literal[...]` values inside an SDK enum type such as `Union[Literal[...], StrictStr]`."""
    if get_origin(annotation) is Literal:
        return tuple(str(value) for value in get_args(annotation))
    if get_origin(annotation) is Union:
        return tuple(value for arg in get_args(annotation) for value in _literal_values(arg))
    return ()


def message_kinds() -> tuple[str, ...]:
    """`text_message`, `card_message`, … : the fields of the SDK's `SendMessageRequestBody`."""
    kinds: tuple[str, ...] = _sdk().message_kinds
    return kinds


def channels() -> tuple[str, ...]:
    """The channel names Sinch knows (the SDK's `ConversationChannelType`)."""
    names: tuple[str, ...] = _sdk().channels
    return names


# ------------------------------------------------------------------------------ errors


@dataclass(frozen=True, slots=True)
class SinchError:
    """One error answer of the Conversation API."""

    status: int
    message: str
    sinch_status: str | None = None  # default: the Google RPC name for `status`
    retry_after: str | None = None
    raw_body: str | None = None  # answer this instead of Sinch's error JSON (e.g. a proxy's HTML page)
    www_authenticate: str | None = None

    @property
    def rpc_status(self) -> str:
        return self.sinch_status or _SINCH_STATUS.get(self.status, "UNKNOWN")

    def body(self) -> JSON:
        return {"error": {"code": self.status, "message": self.message, "status": self.rpc_status, "details": []}}

    def response(self) -> web.Response:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        if self.www_authenticate is not None:
            headers["WWW-Authenticate"] = self.www_authenticate
        if self.raw_body is not None:
            return web.Response(status=self.status, text=self.raw_body, content_type="text/html", headers=headers)
        return web.json_response(self.body(), status=self.status, headers=headers)


@dataclass(frozen=True, slots=True)
class OAuthError:
    """One error answer of the token endpoint (RFC 6749 §5.2 body)."""

    status: int
    error: str
    description: str
    retry_after: str | None = None

    def response(self) -> web.Response:
        headers: dict[str, str] = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="sinch"'
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        body = {"error": self.error, "error_description": self.description}
        return web.json_response(body, status=self.status, headers=headers)


def _invalid(message: str) -> SinchError:
    return SinchError(400, message)


# ------------------------------------------------------------------------------ messages:send validation


def validate_send_message(body: Mapping[str, Any], *, app_id: str | None = None) -> SinchError | None:
    """None when Sinch would accept this `messages:send` body, else the 400 it would answer.

    First the SDK's `SendMessageRequest` model (types, required fields), then what the model lets through
    but Sinch rejects: unknown fields, enum values, the oneofs, and the documented limits.
    `app_id`: the only app of the project (None: any).
    """
    sdk = _sdk()
    try:
        # Keep unknown keys as sent, so the error names them as the client spelled them.
        with sdk.casing_scope(False):
            model = sdk.request.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        return _invalid(f"Invalid value at '{_path(first['loc'])}': {first['msg']}")
    unknown = _first_unknown_field(model, "")
    for name, info in type(model).model_fields.items():
        if info.alias and info.alias != name and name in body:
            unknown = (name, "request")  # the model also takes the Python name; the JSON API knows only the alias
    if unknown is not None:
        name, where = unknown
        return _invalid(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")
    return _sinch_rules(body, app_id)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "request"


# Fields of Sinch's AppMessage that the SDK's SendMessageRequestBody does not declare (they are in its
# AppMessageCommonProps): valid in `message` next to the message kind.
_MESSAGE_OVERRIDES = frozenset(
    {"explicit_channel_message", "explicit_channel_omni_message", "channel_specific_message", "agent"}
)


def _first_unknown_field(value: Any, where: str) -> tuple[str, str] | None:
    """The first key the SDK model kept as an "extra" (the models allow them; Sinch's API does not)."""
    if isinstance(value, BaseModel):
        for name in value.model_extra or {}:
            if not (where == "message" and name in _MESSAGE_OVERRIDES):
                return name, where or "request"
        for name, info in type(value).model_fields.items():
            key = info.alias or name
            found = _first_unknown_field(getattr(value, name), f"{where}.{key}" if where else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_unknown_field(item, f"{where}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            found = _first_unknown_field(item, f"{where}.{key}")
            if found is not None:
                return found
    return None


def _sinch_rules(body: Mapping[str, Any], app_id: str | None) -> SinchError | None:
    if app_id is not None and body["app_id"] != app_id:
        return _invalid(f"unknown app: no app with app_id '{body['app_id']}' in this project")
    problem = _recipient_problem(body["recipient"])
    if problem is None:
        problem = _message_problem(body["message"])
    if problem is None:
        problem = _options_problem(body)
    return None if problem is None else _invalid(problem)


def _recipient_problem(recipient: Mapping[str, Any]) -> str | None:
    has_contact = recipient.get("contact_id") is not None
    identified = recipient.get("identified_by")
    if has_contact and identified is not None:
        return "recipient: only one of contact_id and identified_by may be set"
    if has_contact:
        # Contacts exist only in CONVERSATION processing mode; this fake keeps none.
        return f"recipient.contact_id: contact '{recipient['contact_id']}' not found; use recipient.identified_by"
    if identified is None:
        return "recipient: one of contact_id and identified_by is required"
    identities = identified["channel_identities"]
    if not identities:
        return "recipient.identified_by.channel_identities: must contain at least one channel identity"
    for index, identity in enumerate(identities):
        where = f"recipient.identified_by.channel_identities[{index}]"
        if identity["channel"] not in channels():
            return f"Invalid value at '{where}.channel' (ConversationChannel), \"{identity['channel']}\""
        if not identity["identity"]:
            return f"{where}.identity: must not be empty"
    return None


def _message_problem(message: Mapping[str, Any]) -> str | None:
    kinds = [kind for kind in message_kinds() if message.get(kind) is not None]
    if not kinds:
        return f"message: one of {', '.join(message_kinds())} is required"
    if len(kinds) > 1:
        return f"message: only one of {', '.join(kinds)} may be set"
    kind = kinds[0]
    content = message[kind]
    if kind == "text_message" and not content["text"]:
        return "message.text_message.text: must not be empty"
    for where, url in _media_urls(content, f"message.{kind}"):
        if not _is_http_url(url):
            return f"{where}: must be an absolute http(s) URL, got '{url}'"
    return None


def _media_urls(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every `url`/`thumbnail_url` of a media part (media_message itself, or one nested in a card…)."""
    if isinstance(node, dict):
        is_media = where.endswith("media_message")
        for key, value in node.items():
            if is_media and key in ("url", "thumbnail_url") and isinstance(value, str):
                yield f"{where}.{key}", value
            else:
                yield from _media_urls(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _media_urls(item, f"{where}[{index}]")


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def targets_mms(body: Mapping[str, Any]) -> bool:
    """Whether Sinch may send this message on the MMS channel."""
    order = body.get("channel_priority_order")
    if order:
        return "MMS" in order
    identities = ((body.get("recipient") or {}).get("identified_by") or {}).get("channel_identities") or []
    return any(identity.get("channel") == "MMS" for identity in identities)


def _options_problem(body: Mapping[str, Any]) -> str | None:
    for index, channel in enumerate(body.get("channel_priority_order") or []):
        if channel not in channels():
            return f"Invalid value at 'channel_priority_order[{index}]' (ConversationChannel), \"{channel}\""
    ttl = body.get("ttl")
    if ttl is not None and not (isinstance(ttl, str) and _TTL_RE.fullmatch(ttl)):
        # A protobuf Duration in JSON is a string of seconds with an "s"; the SDK converts ints, raw JSON may not.
        return f"Invalid value at 'ttl' (google.protobuf.Duration), {json.dumps(ttl)}"
    for name in ("queue", "processing_strategy", "conversation_metadata_update_strategy", "message_content_type"):
        value = body.get(name)
        allowed = _literal_values(_sdk().request.model_fields[name].annotation)
        if value is not None and allowed and value not in allowed:
            return f"Invalid value at '{name}', \"{value}\""
    if len(body.get("message_metadata") or "") > MAX_MESSAGE_METADATA:
        return f"message_metadata: must be at most {MAX_MESSAGE_METADATA} characters"
    if body.get("conversation_metadata") is not None:
        if len(json.dumps(body["conversation_metadata"])) > MAX_CONVERSATION_METADATA:
            return f"conversation_metadata: must be at most {MAX_CONVERSATION_METADATA} characters"
    if len(body.get("correlation_id") or "") > MAX_CORRELATION_ID:
        return f"correlation_id: must be at most {MAX_CORRELATION_ID} characters"
    if targets_mms(body):
        if not (body.get("channel_properties") or {}).get("MMS_SENDER"):
            return "channel_properties.MMS_SENDER: required on the MMS channel (the short code or long number)"
        title = (body["message"].get("card_message") or {}).get("title") or ""
        if len(title) > MAX_MMS_SUBJECT:
            return f"message.card_message.title: at most {MAX_MMS_SUBJECT} characters on the MMS channel (Subject)"
    return None


# ------------------------------------------------------------------------------ state


@dataclass(slots=True)
class SinchSent:
    """One message the fake accepted."""

    message_id: str
    body: JSON = field(repr=False)  # the parsed request, as sent
    recipient: str  # the MMS identity, else the first one
    kind: str  # "text_message", "card_message", "media_message", …
    text: str  # text_message.text or card_message.description, "" otherwise
    media_url: str | None  # media_message.url or card_message.media_message.url
    metadata: str | None  # message_metadata
    correlation_id: str | None
    channel_properties: dict[str, str]
    channel_priority_order: list[str] | None
    accepted_at: float  # epoch seconds
    recipient_channel: str = "MMS"
    processing_mode: str = "DISPATCH"  # "DISPATCH" or "CONVERSATION": which ListMessages source shows it
    accepted_time: str = ""  # as answered

    @property
    def app_id(self) -> str:
        return str(self.body["app_id"])

    def to_json(self) -> JSON:
        return asdict(self)


class FakeSinch:
    """State and behaviour of one fake Sinch project with one Conversation API app. Build with `make_app()`."""

    def __init__(
        self,
        project_id: str = DEFAULT_PROJECT_ID,
        app_id: str = DEFAULT_APP_ID,
        key_id: str = DEFAULT_KEY_ID,
        key_secret: str = DEFAULT_KEY_SECRET,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        *,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        processing_mode: Literal["DISPATCH", "CONVERSATION"] = "DISPATCH",
        allow_basic_auth: bool = False,
    ) -> None:
        self.project_id = project_id
        self.app_id = app_id
        self.key_id = key_id
        self.key_secret = key_secret
        self.webhook_secret = webhook_secret
        self.token_lifetime = token_lifetime
        self.processing_mode = processing_mode
        # Sinch accepts Basic key_id:key_secret on API calls too ("heavily rate-limited", for testing only);
        # off by default so a gateway that forgets OAuth fails here.
        self.allow_basic_auth = allow_basic_auth
        self.messages: list[SinchSent] = []
        self.rejected: list[SinchError] = []  # every API error answered, scripted or not
        self.request_count = 0  # every messages:send request, including rejected ones
        self.list_count = 0  # every ListMessages / GetMessage request
        self.token_requests = 0  # every request to the token endpoint
        self.token_errors: list[OAuthError] = []
        self.tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        self.arrived = asyncio.Event()  # set on each accepted message
        self.base_url: str | None = None  # set by serve_fake_sinch()
        self._script: Script[SinchError] = Script()
        self._token_script: Script[OAuthError] = Script()
        self.rate_limit: RateLimit | None = None

    # -- scripting

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        message: str | None = None,
        sinch_status: str | None = None,
        retry_after: str | float | None = None,
        raw_body: str | None = None,
    ) -> None:
        """Answer the next `count` authenticated messages:send requests with this error instead of sending."""
        error = SinchError(
            status=status,
            message=message or f"Scripted failure ({status})",
            sinch_status=sinch_status,
            retry_after=retry_after_header(retry_after),
            raw_body=raw_body,
        )
        self._script.fail(error, count)

    def limit_rate(self, per_second: int, retry_after: float | None = 1.0) -> RateLimit:
        """Take at most `per_second` messages:send requests a second; answer the others as Sinch answers a project
        over its rate: HTTP 429 with its error body (`RESOURCE_EXHAUSTED`), `retry_after` as Retry-After."""
        self.rate_limit = RateLimit(per_second, retry_after)
        return self.rate_limit

    def delay_next(self, count: int = 1, seconds: float = 1.0) -> None:
        """Wait `seconds` before answering each of the next `count` messages:send requests (see `Script.delay`)."""
        self._script.delay(seconds, count)

    def fail_tokens_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        description: str | None = None,
        retry_after: str | float | None = None,
    ) -> None:
        """Answer the next `count` token requests with this error."""
        error = OAuthError(
            status=status,
            error=_OAUTH_ERRORS.get(status, "server_error"),
            description=description or f"Scripted failure ({status})",
            retry_after=retry_after_header(retry_after),
        )
        self._token_script.fail(error, count)

    def expire_tokens(self) -> None:
        """Make every token issued so far expired (the next API call with one gets 401 "token expired")."""
        self.tokens = dict.fromkeys(self.tokens, 0.0)

    def reset(self) -> None:
        self.messages.clear()
        self.rejected.clear()
        self.token_errors.clear()
        self.request_count = self.list_count = self.token_requests = 0
        self._script.clear()
        self._token_script.clear()
        self.arrived.clear()
        self.rate_limit = None

    # -- helpers for tests

    def settings(self, **overrides: Any) -> SinchConfig:
        """A SinchConfig pointing at this fake (API and token URLs, project, app, key, webhook secret)."""
        base = self._require_base_url()
        values: JSON = {
            "url": base,
            "auth_url": f"{base}{TOKEN_PATH}",
            "project_id": self.project_id,
            "app_id": self.app_id,
            "key_id": self.key_id,
            "key_secret": self.key_secret,
            "webhook_secret": self.webhook_secret,
        }
        values.update(overrides)
        return SinchConfig(**values)

    @property
    def send_url(self) -> str:
        return f"{self._require_base_url()}/v1/projects/{self.project_id}/messages:send"

    @property
    def token_url(self) -> str:
        return f"{self._require_base_url()}{TOKEN_PATH}"

    def issue_token(self) -> str:
        """A valid access token without going through HTTP."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = time.time() + self.token_lifetime
        return token

    async def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[SinchSent]:
        """Wait until at least `count` messages were accepted; the first `count` of them."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.messages) < count:
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise TimeoutError(f"fake Sinch accepted {len(self.messages)} message(s), expected {count}") from None
        return self.messages[:count]

    def deliver(
        self,
        sent: SinchSent,
        status: str = "DELIVERED",
        *,
        reason_code: str | None = None,
        reason_description: str | None = None,
    ) -> JSON:
        """The MESSAGE_DELIVERY callback Sinch would send for one of the messages this fake accepted."""
        return delivery_report(
            sent.app_id,
            sent.message_id,
            status,
            metadata=sent.metadata,
            reason_code=reason_code,
            reason_description=reason_description,
            user_identity=sent.recipient,
            channel=sent.recipient_channel,
            project_id=self.project_id,
            processing_mode=sent.processing_mode,
            correlation_id=sent.correlation_id,
        )

    async def post_webhook(
        self,
        http: aiohttp.ClientSession,
        url: str,
        payload: Mapping[str, Any] | bytes | str,
        *,
        secret: str | None = None,
        nonce: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[int, str]:
        """POST a callback as Sinch does: serialised once, those exact bytes signed. (status, response text)."""
        if isinstance(payload, bytes):
            raw = payload
        elif isinstance(payload, str):
            raw = payload.encode()
        else:
            raw = serialize(payload)
        headers = sign_webhook(self.webhook_secret if secret is None else secret, raw, nonce=nonce, timestamp=timestamp)
        headers["Content-Type"] = "application/json"
        async with http.post(url, data=raw, headers=headers) as response:
            return response.status, await response.text()

    def _require_base_url(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the fake is not serving; use serve_fake_sinch()")
        return self.base_url

    # -- the app

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        app.router.add_post(SEND_PATH, self._send_message)
        app.router.add_get(LIST_PATH, self._list_messages)
        app.router.add_get(MESSAGE_PATH, self._get_message)
        app.router.add_get("/_fake/messages", self._dump_messages)
        app.router.add_delete("/_fake/messages", self._reset)
        return app

    def _basic_credentials(self, request: web.Request) -> tuple[str, str] | None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            username, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (username, password) if sep else None

    def _good_key(self, credentials: tuple[str, str] | None) -> bool:
        if credentials is None:
            return False
        key_id, key_secret = credentials
        return hmac.compare_digest(key_id.encode(), self.key_id.encode()) and hmac.compare_digest(
            key_secret.encode(), self.key_secret.encode()
        )

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        scripted_token_error = self._token_script.next_error()
        if scripted_token_error is not None:
            return self._token_error(scripted_token_error)
        if not self._good_key(self._basic_credentials(request)):
            return self._token_error(OAuthError(401, "invalid_client", "Client authentication failed"))
        if request.content_type != "application/x-www-form-urlencoded":
            return self._token_error(
                OAuthError(400, "invalid_request", "Expected an application/x-www-form-urlencoded body")
            )
        form = await request.post()
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str):
            return self._token_error(OAuthError(400, "invalid_request", "Missing grant_type"))
        if grant_type != "client_credentials":
            return self._token_error(OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type: {grant_type}"))
        token = self.issue_token()
        return web.json_response(
            {"access_token": token, "expires_in": self.token_lifetime, "scope": "", "token_type": "bearer"}
        )

    def _token_error(self, error: OAuthError) -> web.Response:
        self.token_errors.append(error)
        return error.response()

    def _authenticate(self, request: web.Request) -> SinchError | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic" and self.allow_basic_auth:
            if self._good_key(self._basic_credentials(request)):
                return None
            return SinchError(401, "Request had invalid authentication credentials.", www_authenticate="Basic")
        if scheme.lower() != "bearer" or not credentials:
            return SinchError(401, "Request is missing required authentication credential.", www_authenticate="Bearer")
        expiry = self.tokens.get(credentials.strip())
        if expiry is None:
            return SinchError(
                401,
                "Request had invalid authentication credentials.",
                www_authenticate='Bearer error="invalid_token", error_description="token not recognised"',
            )
        if expiry <= time.time():
            return SinchError(401, "Access token expired.", www_authenticate=_EXPIRED_CHALLENGE)
        return None

    def _check_project(self, request: web.Request) -> SinchError | None:
        project_id = request.match_info["project_id"]
        if project_id != self.project_id:
            return SinchError(404, f"Project '{project_id}' not found.")
        return None

    def _error(self, error: SinchError) -> web.Response:
        self.rejected.append(error)
        return error.response()

    async def _send_message(self, request: web.Request) -> web.Response:
        self.request_count += 1
        raw = await request.read()  # read first: the send happens even if the client gives up waiting
        await self._script.wait()
        error = self._authenticate(request) or self._check_project(request)
        if error is not None:
            return self._error(error)
        scripted = self._script.next_error()
        if scripted is not None:
            return self._error(scripted)
        if request.content_type != "application/json":
            return self._error(_invalid(f"Invalid content type '{request.content_type}': expected application/json"))
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._error(_invalid(f"Invalid JSON payload received. {exc}"))
        if not isinstance(body, dict):
            return self._error(_invalid("Invalid JSON payload received. Expected an object."))
        error = validate_send_message(body, app_id=self.app_id)
        if error is not None:
            return self._error(error)
        if self.rate_limit is not None and not self.rate_limit.take():
            return self._error(
                SinchError(429, "Too many requests", retry_after=retry_after_header(self.rate_limit.retry_after))
            )
        sent = self._accept(body)
        self.messages.append(sent)
        self.arrived.set()
        return web.json_response({"message_id": sent.message_id, "accepted_time": sent.accepted_time})

    def _accept(self, body: JSON) -> SinchSent:
        now = time.time()
        identities = body["recipient"]["identified_by"]["channel_identities"]
        chosen = next((identity for identity in identities if identity["channel"] == "MMS"), identities[0])
        message = body["message"]
        kind = next(kind for kind in message_kinds() if message.get(kind) is not None)
        content = message[kind]
        text = ""
        media_url = None
        if kind == "text_message":
            text = content["text"]
        elif kind == "card_message":
            text = content.get("description") or ""
            media_url = (content.get("media_message") or {}).get("url")
        elif kind == "media_message":
            media_url = content["url"]
        dispatch_only = body.get("processing_strategy") == "DISPATCH_ONLY"
        return SinchSent(
            message_id=new_ulid(now),
            body=body,
            recipient=chosen["identity"],
            kind=kind,
            text=text,
            media_url=media_url,
            metadata=body.get("message_metadata"),
            correlation_id=body.get("correlation_id"),
            channel_properties=dict(body.get("channel_properties") or {}),
            channel_priority_order=body.get("channel_priority_order"),
            accepted_at=now,
            recipient_channel=chosen["channel"],
            processing_mode="DISPATCH" if dispatch_only else self.processing_mode,
            accepted_time=iso_z(now),
        )

    def message_json(self, sent: SinchSent, *, with_metadata: bool = True) -> JSON:
        """A sent message as ListMessages/GetMessage show it (the SDK's `AppMessageResponse`)."""
        data: JSON = {
            "id": sent.message_id,
            "direction": "TO_CONTACT",
            "app_message": dict(sent.body["message"]),
            "channel_identity": {"channel": sent.recipient_channel, "identity": sent.recipient, "app_id": sent.app_id},
            "conversation_id": "",  # no conversations or contacts in DISPATCH mode, nor in this fake
            "contact_id": "",
            "accept_time": sent.accepted_time,
            "processing_mode": sent.processing_mode,
        }
        if with_metadata:
            data["metadata"] = sent.metadata or ""
        return data

    async def _list_messages(self, request: web.Request) -> web.Response:
        """ListMessages: newest first, filtered, paged (page_size default 10, at most 1000)."""
        self.list_count += 1
        error = self._authenticate(request) or self._check_project(request)
        if error is not None:
            return self._error(error)
        query = request.query
        try:
            source = _choice(query, "messages_source", MESSAGE_SOURCES, "CONVERSATION_SOURCE")
            direction = _choice(query, "direction", DIRECTIONS, None)
            view = _choice(query, "view", VIEWS, "WITH_METADATA")
            start = _time_param(query, "start_time")
            end = _time_param(query, "end_time")
            size = _page_size(query.get("page_size"))
            offset = _page_offset(query.get("page_token"))
        except ValueError as exc:
            return self._error(_invalid(str(exc)))
        mode = "DISPATCH" if source == "DISPATCH_SOURCE" else "CONVERSATION"
        wanted_digits = digits(query["channel_identity"]) if "channel_identity" in query else None

        def matches(sent: SinchSent) -> bool:
            return (
                sent.processing_mode == mode
                and direction in (None, "TO_CONTACT")
                and query.get("only_recipient_originated", "false").lower() != "true"
                and query.get("app_id", sent.app_id) == sent.app_id
                and query.get("channel", sent.recipient_channel) == sent.recipient_channel
                and not query.get("conversation_id")
                and not query.get("contact_id")
                and (wanted_digits is None or digits(sent.recipient) == wanted_digits)
                and (start is None or sent.accepted_at >= start)
                and (end is None or sent.accepted_at < end)
            )

        found = [sent for sent in reversed(self.messages) if matches(sent)]
        page = found[offset : offset + size]
        more = offset + size < len(found)
        return web.json_response(
            {
                "messages": [self.message_json(sent, with_metadata=view == "WITH_METADATA") for sent in page],
                "next_page_token": _page_token(offset + size) if more else "",
            }
        )

    async def _get_message(self, request: web.Request) -> web.Response:
        self.list_count += 1
        error = self._authenticate(request) or self._check_project(request)
        if error is not None:
            return self._error(error)
        try:
            source = _choice(request.query, "messages_source", MESSAGE_SOURCES, "CONVERSATION_SOURCE")
        except ValueError as exc:
            return self._error(_invalid(str(exc)))
        mode = "DISPATCH" if source == "DISPATCH_SOURCE" else "CONVERSATION"
        for sent in self.messages:
            if sent.message_id == request.match_info["message_id"] and sent.processing_mode == mode:
                return web.json_response(self.message_json(sent))
        return self._error(SinchError(404, f"Message '{request.match_info['message_id']}' not found."))

    async def _dump_messages(self, request: web.Request) -> web.Response:
        return web.json_response([sent.to_json() for sent in self.messages])

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(status=204)


def _choice(query: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value not in allowed:
        raise ValueError(f"Invalid value for '{name}': \"{value}\" (one of {', '.join(allowed)})")
    return value


def _time_param(query: Mapping[str, str], name: str) -> float | None:
    value = query.get(name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"Invalid value for '{name}': \"{value}\" (ISO-8601 expected)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _page_size(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"Invalid value for 'page_size': \"{value}\"") from None
    if size < 0:
        raise ValueError("page_size must not be negative")
    # As Google's API guidelines, which Sinch's API follows: 0 means the default, larger sizes are capped.
    return DEFAULT_PAGE_SIZE if size == 0 else min(size, MAX_PAGE_SIZE)


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ValueError("Invalid page_token") from None
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("Invalid page_token")
    return offset


# ------------------------------------------------------------------------------ what Sinch POSTs to a gateway


def serialize(payload: Mapping[str, Any]) -> bytes:
    """A callback body as Sinch writes it: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_webhook(
    secret: str,
    body: bytes,
    *,
    nonce: str | None = None,
    timestamp: int | None = None,
    algorithm: str = "HmacSHA256",
) -> dict[str, str]:
    """The four `x-sinch-webhook-signature*` headers Sinch sends with a callback body.

    signature = base64(HMAC(secret's UTF-8 bytes, raw body + "." + nonce + "." + timestamp)), padding kept.
    An algorithm name other than HmacSHA256/384/512 is put in the header but signed with SHA-256, so tests can
    check that a receiver refuses algorithms it does not know.
    """
    nonce = new_ulid() if nonce is None else nonce
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = _DIGESTS.get(algorithm, hashlib.sha256)
    signed = body + b"." + nonce.encode("utf-8") + b"." + stamp.encode("utf-8")
    signature = base64.b64encode(hmac.new(secret.encode("utf-8"), signed, digest).digest()).decode("ascii")
    return {
        SIGNATURE_HEADER: signature,
        NONCE_HEADER: nonce,
        TIMESTAMP_HEADER: stamp,
        ALGORITHM_HEADER: algorithm,
    }


def inbound_event(
    app_id: str,
    user_identity: str,
    *,
    text: str | None = None,
    media_url: str | None = None,
    caption: str | None = None,
    message_id: str | None = None,
    channel: str = "MMS",
    project_id: str = DEFAULT_PROJECT_ID,
    sender_id: str | None = None,
) -> JSON:
    """A MESSAGE_INBOUND callback, shaped like tests/fixtures/sinch/message_inbound_*.json.

    Text only: `text_message`; media without caption: `media_message`; media with a caption (or with `text`,
    taken as the caption): `media_card_message`. `sender_id` (the number the user wrote to) is added only
    when given. Conversation and contact ids are empty, as in DISPATCH processing mode.
    """
    if media_url is None:
        if text is None:
            raise ValueError("an inbound message needs text or media_url")
        if caption is not None:
            raise ValueError("a caption needs a media_url")
        contact_message: JSON = {"text_message": {"text": text}}
    else:
        caption = text if caption is None else caption
        if caption is None:
            contact_message = {"media_message": {"url": media_url}}
        else:
            contact_message = {"media_card_message": {"url": media_url, "caption": caption}}
    now = time.time()
    message: JSON = {
        "id": message_id or new_ulid(now),
        "direction": "TO_APP",
        "contact_message": contact_message,
        "channel": channel,
        "channel_identity": {"channel": channel, "identity": user_identity, "app_id": ""},
        "conversation_id": "",
        "contact_id": "",
        "metadata": "",
        "accept_time": iso_z(now, timespec="microseconds"),
    }
    if sender_id is not None:
        message["sender_id"] = sender_id
    return {
        "app_id": app_id,
        "accepted_time": iso_z(now, timespec="microseconds"),
        "project_id": project_id,
        "message": message,
    }


def delivery_report(
    app_id: str,
    message_id: str,
    status: str,
    *,
    metadata: str | None = None,
    reason_code: str | None = None,
    reason_description: str | None = None,
    reason_sub_code: str | None = None,
    user_identity: str = DEFAULT_USER_IDENTITY,
    channel: str = "MMS",
    project_id: str = DEFAULT_PROJECT_ID,
    processing_mode: str = "DISPATCH",
    correlation_id: str | None = None,
) -> JSON:
    """A MESSAGE_DELIVERY callback, shaped like tests/fixtures/sinch/message_delivery_*.json.

    `metadata` is the `message_metadata` the message was sent with; Sinch echoes it as the report's
    `metadata`. A `reason` is added for FAILED and SWITCHING_CHANNEL, or whenever a reason field is given;
    `correlation_id` only when given.
    """
    now = time.time()
    report: JSON = {
        "message_id": message_id,
        "conversation_id": "",  # empty in DISPATCH processing mode
        "status": status,
        "channel_identity": {"channel": channel, "identity": user_identity, "app_id": ""},
        "contact_id": "",
    }
    if status in ("FAILED", "SWITCHING_CHANNEL") or reason_code or reason_description or reason_sub_code:
        report["reason"] = {
            "code": reason_code or "UNKNOWN",
            "description": reason_description or "",
            "sub_code": reason_sub_code or "UNSPECIFIED_SUB_CODE",
        }
    report["metadata"] = metadata or ""
    report["processing_mode"] = processing_mode
    payload: JSON = {
        "app_id": app_id,
        "accepted_time": iso_z(now),
        "event_time": iso_z(now, timespec="microseconds"),
        "project_id": project_id,
        "message_delivery_report": report,
        "message_metadata": "",
    }
    if correlation_id is not None:
        payload["correlation_id"] = correlation_id
    return payload


# ------------------------------------------------------------------------------ running it


def serve_fake_sinch(
    fake: FakeSinch | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AbstractAsyncContextManager[FakeSinch]:
    """Serve a FakeSinch on `host:port` (0 = a free port) for the duration of the block."""
    return serving(fake or FakeSinch(), host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Sinch Conversation API (and OAuth2 token endpoint).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    fake = FakeSinch()
    fake.base_url = f"http://{args.host}:{args.port}"
    print(
        f"fake Sinch: project {fake.project_id}, app {fake.app_id}, key {fake.key_id}:{fake.key_secret}, "
        f"send URL {fake.send_url}, token URL {fake.token_url}",
        flush=True,
    )
    web.run_app(fake.make_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
