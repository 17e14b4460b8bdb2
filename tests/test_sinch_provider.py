"""Sinch provider: callback signatures, addressing, parsing (Sinch's published payloads, checked against Sinch's
SDK), sending and finding sent messages against the fake Conversation API, tokens, and the sandbox."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from sinch.domains.conversation.sinch_events.v1.conversation_sinch_event import ConversationSinchEvent
from structlog.testing import capture_logs

from sms_gateway.config.model import Config, EngineConfig, ProxyConfig, TenantConfig
from sms_gateway.model import DeliveryStatus, InboundMessage, Media, OutboundMessage, SendOutcome
from sms_gateway.providers.base import (
    Addressed,
    Event,
    InvalidRequest,
    Sender,
    UnknownTenant,
    WebhookRefused,
    WebhookRequest,
)
from sms_gateway.providers.sandbox import Sandbox, SandboxMessage
from sms_gateway.providers.sinch import (
    CALLBACKS,
    LIMITS,
    SinchConfig,
    SinchProvider,
    SinchSandbox,
    SinchSender,
    outcomes,
)
from sms_gateway.providers.sinch import sender as sender_module
from sms_gateway.providers.sinch.sandbox import delivered_report, sample_mms
from sms_gateway.providers.sinch.send_request import send_request
from sms_gateway.providers.sinch.signature import sign, signature_headers, verify
from sms_gateway.providers.sinch.tokens import AccessToken
from tests.fakes.sinch import (
    DEFAULT_APP_ID,
    DEFAULT_KEY_SECRET,
    DEFAULT_USER_IDENTITY,
    DEFAULT_WEBHOOK_SECRET,
    FakeSinch,
    delivery_report,
    inbound_event,
    serialize,
    serve_fake_sinch,
    sign_webhook,
    validate_send_message,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sinch"
TENANT = "+12025550100"
USER = "+" + DEFAULT_USER_IDENTITY
NOW = 1_700_000_000.0


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def tenant(settings: SinchConfig, number: str = TENANT) -> TenantConfig:
    return TenantConfig(phone_number=number, engine=EngineConfig(kind="echo"), provider=settings)


def provider_for(*tenants: TenantConfig, clock: Any = time.monotonic) -> SinchProvider:
    return SinchProvider(Config(tenants=tenants), clock=clock)


TENANT_SETTINGS = SinchConfig(
    project_id="p",
    app_id=DEFAULT_APP_ID,
    key_id="k",
    key_secret=DEFAULT_KEY_SECRET,
    webhook_secret=DEFAULT_WEBHOOK_SECRET,
)
TENANT_CONFIG = tenant(TENANT_SETTINGS)


def hook(
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    received_at: float = NOW,
    content_type: str = "application/json",
) -> WebhookRequest:
    return WebhookRequest(
        route=CALLBACKS,
        method="POST",
        url="https://gw.example.com/sms.receiver/sinch",
        query=MultiDictProxy(MultiDict()),
        headers=CIMultiDictProxy(CIMultiDict(headers or {})),
        content_type=content_type,
        body=body,
        path_params={},
        received_at=received_at,
    )


def signed_hook(
    payload: dict[str, Any] | bytes, *, secret: str = DEFAULT_WEBHOOK_SECRET, received_at: float = NOW, **signing: Any
) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else serialize(payload)
    signing.setdefault("timestamp", int(received_at))
    return hook(body, sign_webhook(secret, body, **signing), received_at=received_at)


@dataclass
class Directory:
    """The core's TenantDirectory, as far as the Sinch provider uses it."""

    tenants: Sequence[TenantConfig]
    sent_by: dict[str, TenantConfig] = field(default_factory=dict)

    def by_number(self, number: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.phone_number == number), None)

    async def by_message(self, message_id: str) -> TenantConfig | None:
        return self.sent_by.get(message_id)


def parse(payload: dict[str, Any], tenant_config: TenantConfig = TENANT_CONFIG) -> Sequence[Event]:
    provider = provider_for(tenant_config)
    return provider.parse(hook(serialize(payload)), Addressed(tenant_config, payload))


def sdk_parses(payload: dict[str, Any]) -> None:
    """Sinch's own SDK takes the payload (so the shapes in these tests are Sinch's)."""
    ConversationSinchEvent().parse_event(copy.deepcopy(payload))


# ------------------------------------------------------------------------------ signatures

VECTOR_SECRET = "foo_secret1234"
VECTOR_NONCE = "01FJA8B4A7BM43YGWSG9GBV067"
VECTOR_TIMESTAMP = "1634579353"
VECTOR_BODY = (
    b'{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z","project_id":"e2df3a34-a71b-4448-9db5-a8d2baad28e4",'
    b'"contact_create_notification":{"contact":{"id":"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":'
    b'[{"channel":"SMS","identity":"48123456789","app_id":""}],"display_name":"New Test Contact",'
    b'"email":"new.contact@email.com","external_id":"","metadata":"","language":"EN_US"}},"message_metadata":""}'
)
VECTOR_SIGNATURE = "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="
VECTOR_HEADERS = {
    "x-sinch-webhook-signature": VECTOR_SIGNATURE,
    "x-sinch-webhook-signature-nonce": VECTOR_NONCE,
    "x-sinch-webhook-signature-timestamp": VECTOR_TIMESTAMP,
    "x-sinch-webhook-signature-algorithm": "HmacSHA256",
}
VECTOR_RECEIVED_AT = 1634579353 + 2.5


def vector_headers(**changes: str) -> CIMultiDictProxy[str]:
    """The vector's headers, some replaced (keywords: header names with "_" for "-")."""
    replaced = {name.replace("_", "-"): value for name, value in changes.items()}
    return CIMultiDictProxy(CIMultiDict(VECTOR_HEADERS | replaced))


def test_published_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_BODY, VECTOR_NONCE, VECTOR_TIMESTAMP) == VECTOR_SIGNATURE
    assert VECTOR_BODY == (FIXTURES / "contact_create_notification.json").read_bytes().strip()
    signed = verify(vector_headers(), VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT)
    assert (signed.nonce, signed.timestamp) == (VECTOR_NONCE, 1634579353)
    # Sinch's SDK agrees.
    assert ConversationSinchEvent(VECTOR_SECRET).validate_authentication_header(VECTOR_HEADERS, VECTOR_BODY)


def test_provider_verifies_the_vector_and_returns_its_replay_key() -> None:
    vector_tenant = tenant(replace(TENANT_SETTINGS, app_id="01VECTORAPP", webhook_secret=VECTOR_SECRET))
    provider = provider_for(vector_tenant)
    request = replace(hook(VECTOR_BODY, dict(VECTOR_HEADERS)), received_at=VECTOR_RECEIVED_AT)
    verified = provider.verify(request, Addressed(vector_tenant, json.loads(VECTOR_BODY)))
    assert verified.replay is not None
    assert verified.replay is not None
    assert verified.replay.key == f"sinch:01VECTORAPP:{VECTOR_NONCE}"
    # Remembered at least as long as the signature is accepted (timestamp + 300 s).
    assert 1634579353 + 300 <= verified.replay.until <= 1634579353 + 600


def test_header_names_are_case_insensitive() -> None:
    headers = CIMultiDictProxy(CIMultiDict({name.upper(): value for name, value in VECTOR_HEADERS.items()}))
    assert verify(headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT).nonce == VECTOR_NONCE


@pytest.mark.parametrize(
    ("headers", "body", "secret", "received_at", "why"),
    [
        (vector_headers(), VECTOR_BODY + b" ", VECTOR_SECRET, VECTOR_RECEIVED_AT, "invalid"),
        (vector_headers(), VECTOR_BODY.replace(b"New Test", b"Old Test"), VECTOR_SECRET, VECTOR_RECEIVED_AT, "invalid"),
        (
            vector_headers(x_sinch_webhook_signature_nonce="01FJA8B4A7BM43YGWSG9GBV068"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "invalid",
        ),
        (
            vector_headers(x_sinch_webhook_signature_timestamp="1634579354"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "invalid",
        ),
        (vector_headers(), VECTOR_BODY, "foo_secret1235", VECTOR_RECEIVED_AT, "invalid"),
        (vector_headers(), VECTOR_BODY, "", VECTOR_RECEIVED_AT, "webhookSecret"),
        (
            vector_headers(x_sinch_webhook_signature="6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "invalid",
        ),  # padding is part of it
        (
            vector_headers(x_sinch_webhook_signature="x" * 300),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "invalid",
        ),
        (
            vector_headers(x_sinch_webhook_signature_algorithm="HmacSHA1"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "unknown",
        ),
        (
            vector_headers(x_sinch_webhook_signature_algorithm="HmacMD5"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "unknown",
        ),
        # Stale or from the future: more than 300 s either way.
        (vector_headers(), VECTOR_BODY, VECTOR_SECRET, 1634579353 + 301, "clock"),
        (vector_headers(), VECTOR_BODY, VECTOR_SECRET, 1634579353 - 301, "clock"),
        (
            vector_headers(x_sinch_webhook_signature_timestamp="1634579353.0"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "whole seconds",
        ),
        (
            vector_headers(x_sinch_webhook_signature_timestamp="-1634579353"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "whole seconds",
        ),
        (
            vector_headers(x_sinch_webhook_signature_timestamp="2021-10-18T17:49:13Z"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "whole seconds",
        ),
        (
            vector_headers(x_sinch_webhook_signature_nonce="n" * 129),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "nonce",
        ),
        (
            vector_headers(x_sinch_webhook_signature_nonce="a b"),
            VECTOR_BODY,
            VECTOR_SECRET,
            VECTOR_RECEIVED_AT,
            "nonce",
        ),
    ],
)
def test_bad_signatures_are_refused(
    headers: CIMultiDictProxy[str], body: bytes, secret: str, received_at: float, why: str
) -> None:
    with pytest.raises(WebhookRefused, match=why):
        verify(headers, body, secret, received_at)


@pytest.mark.parametrize(
    "missing", ["x-sinch-webhook-signature", "x-sinch-webhook-signature-nonce", "x-sinch-webhook-signature-timestamp"]
)
def test_each_signature_header_is_required(missing: str) -> None:
    headers = CIMultiDictProxy(CIMultiDict({k: v for k, v in VECTOR_HEADERS.items() if k != missing}))
    with pytest.raises(WebhookRefused, match=f"{missing} is missing"):
        verify(headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT)
    blank = CIMultiDictProxy(CIMultiDict(VECTOR_HEADERS | {missing: " "}))
    with pytest.raises(WebhookRefused, match="missing"):
        verify(blank, VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT)


def test_an_absent_algorithm_header_means_hmac_sha256() -> None:
    headers = CIMultiDictProxy(CIMultiDict({k: v for k, v in VECTOR_HEADERS.items() if "algorithm" not in k}))
    assert verify(headers, VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT).timestamp == 1634579353


@pytest.mark.parametrize("algorithm", ["HmacSHA256", "HmacSHA384", "HmacSHA512", "hmacsha512"])
def test_sha384_and_sha512_signatures_are_accepted(algorithm: str) -> None:
    headers = sign_webhook(
        VECTOR_SECRET,
        VECTOR_BODY,
        nonce=VECTOR_NONCE,
        timestamp=1634579353,
        algorithm=algorithm if algorithm != "hmacsha512" else "HmacSHA512",
    )
    headers["x-sinch-webhook-signature-algorithm"] = algorithm
    signed = verify(CIMultiDictProxy(CIMultiDict(headers)), VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT)
    assert signed.nonce == VECTOR_NONCE
    assert headers == signature_headers(VECTOR_SECRET, VECTOR_BODY, VECTOR_NONCE, 1634579353, algorithm)


def test_a_signature_made_with_another_algorithm_than_named_is_refused() -> None:
    headers = sign_webhook(VECTOR_SECRET, VECTOR_BODY, nonce=VECTOR_NONCE, timestamp=1634579353, algorithm="HmacSHA512")
    headers["x-sinch-webhook-signature-algorithm"] = "HmacSHA256"
    with pytest.raises(WebhookRefused, match="invalid"):
        verify(CIMultiDictProxy(CIMultiDict(headers)), VECTOR_BODY, VECTOR_SECRET, VECTOR_RECEIVED_AT)


def test_the_provider_refuses_a_callback_signed_with_another_secret() -> None:
    provider = provider_for(TENANT_CONFIG)
    payload = inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi")
    request = signed_hook(payload, secret="not-the-webhook-secret")
    with pytest.raises(WebhookRefused):
        provider.verify(request, Addressed(TENANT_CONFIG, payload))


# ------------------------------------------------------------------------------ addressing


async def test_address_finds_the_tenant_by_app_id() -> None:
    other = tenant(replace(TENANT_SETTINGS, app_id="01OTHERAPP"), "+12025550199")
    provider = provider_for(other, TENANT_CONFIG)
    payload = inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi")
    addressed = await provider.address(signed_hook(payload), Directory([other, TENANT_CONFIG]))
    assert addressed.tenant is TENANT_CONFIG
    assert addressed.payload == payload


@pytest.mark.parametrize(
    ("body", "content_type", "error", "match"),
    [
        (
            serialize(inbound_event("01UNKNOWNAPP", "12025550143", text="hi")),
            "application/json",
            UnknownTenant,
            "01UNKNOWNAPP",
        ),
        (b'{"message": {}}', "application/json", InvalidRequest, "app_id is missing"),
        (b'{"app_id": ""}', "application/json", InvalidRequest, "app_id is missing"),
        (b'{"app_id": 12}', "application/json", InvalidRequest, "app_id must be a string"),
        (b'{"app_id": "' + b"A" * 129 + b'"}', "application/json", InvalidRequest, "app_id is longer"),
        (b"app_id=x", "application/x-www-form-urlencoded", InvalidRequest, "application/json"),
        (b"not json", "application/json", InvalidRequest, "not JSON"),
        (b"\xff\xfe{", "application/json", InvalidRequest, "not JSON"),
        (b"[1, 2]", "application/json", InvalidRequest, "not a JSON object"),
        (b'"app_id"', "application/json", InvalidRequest, "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", InvalidRequest, "JSON"),
        (b"", "application/json", InvalidRequest, "not JSON"),
    ],
)
async def test_address_refuses(body: bytes, content_type: str, error: type[Exception], match: str) -> None:
    provider = provider_for(TENANT_CONFIG)
    with pytest.raises(error, match=match) as refused:
        await provider.address(hook(body, content_type=content_type), Directory([TENANT_CONFIG]))
    if isinstance(refused.value, UnknownTenant):  # the operator is told which apps the tenants use
        assert refused.value.hint is not None and DEFAULT_APP_ID in refused.value.hint


async def test_address_accepts_a_charset_parameter() -> None:
    provider = provider_for(TENANT_CONFIG)
    body = serialize(inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi"))
    addressed = await provider.address(
        hook(body, content_type="application/json; charset=utf-8"), Directory([TENANT_CONFIG])
    )
    assert addressed.tenant is TENANT_CONFIG


async def test_tenants_sharing_an_app_are_told_apart_by_number_and_by_message() -> None:
    first = TENANT_CONFIG
    second = tenant(replace(TENANT_SETTINGS, mms_sender="55555"), "+12025550111")
    provider = provider_for(first, second)
    directory = Directory([first, second], sent_by={"our-1": second})
    to_second = inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi", sender_id="55555")
    assert (await provider.address(signed_hook(to_second), directory)).tenant is second
    to_first = inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi", sender_id="12025550100")
    assert (await provider.address(signed_hook(to_first), directory)).tenant is first
    report = delivery_report(DEFAULT_APP_ID, "01SINCHID", "DELIVERED", metadata="our-1")
    assert (await provider.address(signed_hook(report), directory)).tenant is second
    unknown = inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi")
    with pytest.raises(UnknownTenant, match="several tenants") as refused:
        await provider.address(signed_hook(unknown), directory)
    assert refused.value.hint is not None and "+12025550100, +12025550111" in refused.value.hint


# ------------------------------------------------------------------------------ parsing


def inbound(
    text: str = "", media: tuple[Media, ...] = (), *, message_id: str = "01E6NKBV63YG6K01ENEW7S1N80", user: str = USER
) -> InboundMessage:
    return InboundMessage(
        provider="sinch",
        message_id=message_id,
        tenant_number=TENANT,
        user_number=user,
        text=text,
        media=media,
        received_at=NOW,
    )


FIXTURE_MEDIA = (
    "https://convapi-eu1tst.s3.eu-west-1.amazonaws.com/01EPRZJ0HXTDEH1BTYJT4417GE/01F2K124T4513Q0CCHQ5SN0DH6.png"
)


def status(status: str, **fields: Any) -> DeliveryStatus:
    values: dict[str, Any] = {
        "provider": "sinch",
        "provider_message_id": "01FVAWD1JP5PPB3KEZCBKGN0ES",
        "status": status,
        "tenant_number": TENANT,
        "user_number": USER,
    }
    return DeliveryStatus(**(values | fields))


def with_message(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    payload["message"].update(changes)
    return payload


def with_report(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    payload["message_delivery_report"].update(changes)
    return payload


def with_contact_message(contact_message: dict[str, Any]) -> dict[str, Any]:
    return with_message(fixture("message_inbound_text"), contact_message=contact_message)


# (name, Sinch's payload, what the gateway takes from it)
PARSE_TABLE: list[tuple[str, dict[str, Any], list[Event]]] = [
    ("text", fixture("message_inbound_text"), [inbound("Hi from contact")]),
    ("media", fixture("message_inbound_media"), [inbound(media=(Media(FIXTURE_MEDIA, "image/png"),))]),
    (
        "media card",
        fixture("message_inbound_media_card"),
        [inbound("caption text", (Media(FIXTURE_MEDIA, "image/png"),))],
    ),
    (
        "text on the SMS channel",
        inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="yes please", channel="SMS", message_id="01SMS"),
        [inbound("yes please", message_id="01SMS")],
    ),
    (
        "identity with +",
        with_message(fixture("message_inbound_text"), channel_identity={"channel": "MMS", "identity": "+61412345678"}),
        [inbound("Hi from contact", user="+61412345678")],
    ),
    (
        "media with an unknown extension",
        with_contact_message({"media_message": {"url": "https://media.example.com/f/abc?x=1.png"}}),
        [inbound(media=(Media("https://media.example.com/f/abc?x=1.png", None),))],
    ),
    (
        "media named by filename_override",
        with_contact_message(
            {"media_message": {"url": "https://media.example.com/f/abc", "filename_override": "photo.jpeg"}}
        ),
        [inbound(media=(Media("https://media.example.com/f/abc", "image/jpeg"),))],
    ),
    (
        "media card without a caption",
        with_contact_message({"media_card_message": {"url": "https://media.example.com/v.mp4"}}),
        [inbound(media=(Media("https://media.example.com/v.mp4", "video/mp4"),))],
    ),
    (
        "choice response",
        with_contact_message({"choice_response_message": {"message_id": "01X", "postback_data": "option 2"}}),
        [inbound("option 2")],
    ),
    (
        "text with reply_to",
        with_contact_message({"text_message": {"text": "re"}, "reply_to": {"message_id": "01X"}}),
        [inbound("re")],
    ),
    ("empty text", with_contact_message({"text_message": {"text": ""}}), []),
    (
        "location",
        with_contact_message(
            {"location_message": {"title": "here", "coordinates": {"latitude": 1.0, "longitude": 2.0}}}
        ),
        [],
    ),
    ("fallback", with_contact_message({"fallback_message": {"raw_message": "?", "reason": {"code": "UNKNOWN"}}}), []),
    ("direction TO_CONTACT", with_message(fixture("message_inbound_text"), direction="TO_CONTACT"), []),
    (
        "another channel",
        with_message(
            fixture("message_inbound_text"), channel_identity={"channel": "WHATSAPP", "identity": "12025550143"}
        ),
        [],
    ),
    ("delivered", fixture("message_delivery_delivered"), [status("delivered")]),
    (
        "failed with a reason",
        fixture("message_delivery_failed"),
        [
            status(
                "failed",
                failed=True,
                provider_message_id="01EQBF0BT63J7S1FEKJZ0Z08VD",
                error_code="OUTSIDE_ALLOWED_SENDING_WINDOW",
                error_message="The underlying channel reported: Message failed to send because more than 24 hours "
                "have passed since the customer last replied to this number",
            )
        ],
    ),
    (
        "switching channel",
        fixture("message_delivery_switching_channel"),
        [
            status(
                "switching_channel",
                fallback=True,
                error_code="RECIPIENT_NOT_REACHABLE",
                error_message="The underlying channel reported: Recipient not reachable",
            )
        ],
    ),
    (
        "failed with a sub-code",
        delivery_report(
            DEFAULT_APP_ID,
            "01FVAWD1JP5PPB3KEZCBKGN0ES",
            "FAILED",
            metadata="our-7",
            reason_code="MEDIA_NOT_REACHABLE",
            reason_description="Media not reachable",
            reason_sub_code="ATTACHMENT_REJECTED",
        ),
        [
            status(
                "failed",
                failed=True,
                our_message_id="our-7",
                error_code="MEDIA_NOT_REACHABLE",
                error_message="Media not reachable (ATTACHMENT_REJECTED)",
            )
        ],
    ),
    (
        "queued on channel, our id in metadata",
        delivery_report(DEFAULT_APP_ID, "01FVAWD1JP5PPB3KEZCBKGN0ES", "QUEUED_ON_CHANNEL", metadata="our-1"),
        [status("queued_on_channel", our_message_id="our-1")],
    ),
    (
        "read, our id in correlation_id only",
        delivery_report(DEFAULT_APP_ID, "01FVAWD1JP5PPB3KEZCBKGN0ES", "READ", correlation_id="our-2"),
        [status("read", our_message_id="our-2")],
    ),
    (
        "a status Sinch may add",
        delivery_report(DEFAULT_APP_ID, "01FVAWD1JP5PPB3KEZCBKGN0ES", "PENDING_REVIEW"),
        [status("pending_review")],
    ),
    (
        "delivery report without an identity",
        fixture("message_delivery_delivered")
        | {"message_delivery_report": {"message_id": "01FVAWD1JP5PPB3KEZCBKGN0ES", "status": "DELIVERED"}},
        [status("delivered", user_number=None)],
    ),
    ("contact created", fixture("contact_create_notification"), []),
    (
        "message submitted",
        {
            "app_id": DEFAULT_APP_ID,
            "project_id": "p",
            "message_submit_notification": {
                "message_id": "01X",
                "channel_identity": {"channel": "MMS", "identity": "12025550143"},
                "metadata": "our-1",
            },
        },
        [],
    ),
    ("event inbound", {"app_id": DEFAULT_APP_ID, "project_id": "p", "event": {"direction": "TO_APP"}}, []),
]


@pytest.mark.parametrize(("name", "payload", "expected"), PARSE_TABLE, ids=[row[0] for row in PARSE_TABLE])
def test_parse(name: str, payload: dict[str, Any], expected: list[Event]) -> None:
    sdk_parses(payload)
    assert list(parse(payload)) == expected


# (what is wrong, the payload, the field the error names)
MALFORMED_TABLE: list[tuple[str, dict[str, Any], str]] = [
    ("message not an object", {"app_id": "a", "project_id": "p", "message": "hi"}, "message must be an object"),
    ("no message id", with_message(fixture("message_inbound_text"), id=None), "message.id is missing"),
    ("message id too long", with_message(fixture("message_inbound_text"), id="1" * 129), "message.id is longer"),
    (
        "no channel identity",
        with_message(fixture("message_inbound_text"), channel_identity=None),
        "message.channel_identity is missing",
    ),
    (
        "identity not a number",
        with_message(fixture("message_inbound_text"), channel_identity={"channel": "MMS", "identity": "abc"}),
        "message.channel_identity.identity is not a phone number",
    ),
    (
        "identity too short",
        with_message(fixture("message_inbound_text"), channel_identity={"channel": "SMS", "identity": "12345"}),
        "message.channel_identity.identity is not a phone number",
    ),
    (
        "identity too long",
        with_message(fixture("message_inbound_text"), channel_identity={"channel": "SMS", "identity": "1" * 16}),
        "message.channel_identity.identity is not a phone number",
    ),
    (
        "no contact message",
        with_message(fixture("message_inbound_text"), contact_message=None),
        "message.contact_message is missing",
    ),
    (
        "text too long",
        with_contact_message({"text_message": {"text": "x" * 10_001}}),
        "message.contact_message.text_message.text is longer than 10000",
    ),
    (
        "media URL not http",
        with_contact_message({"media_message": {"url": "ftp://media.example.com/a.png"}}),
        "message.contact_message.media_message.url is not an absolute http",
    ),
    (
        "media URL relative",
        with_contact_message({"media_message": {"url": "/a.png"}}),
        "message.contact_message.media_message.url is not an absolute http",
    ),
    (
        "media URL too long",
        with_contact_message({"media_message": {"url": "https://m.example.com/" + "a" * 4096}}),
        "message.contact_message.media_message.url is longer than 4096",
    ),
    (
        "media card without URL",
        with_contact_message({"media_card_message": {"caption": "hi"}}),
        "message.contact_message.media_card_message.url is missing",
    ),
    (
        "caption not a string",
        with_contact_message({"media_card_message": {"url": "https://m.example.com/a.png", "caption": 5}}),
        "message.contact_message.media_card_message.caption must be a string",
    ),
    (
        "no report message id",
        with_report(fixture("message_delivery_delivered"), message_id=None),
        "message_delivery_report.message_id is missing",
    ),
    (
        "no status",
        with_report(fixture("message_delivery_delivered"), status=None),
        "message_delivery_report.status is missing",
    ),
    (
        "status not a word",
        with_report(fixture("message_delivery_delivered"), status="delivered"),
        "message_delivery_report.status is not a Sinch delivery status",
    ),
    (
        "reason not an object",
        with_report(fixture("message_delivery_failed"), reason="FAILED"),
        "message_delivery_report.reason must be an object",
    ),
    (
        "metadata too long",
        with_report(fixture("message_delivery_delivered"), metadata="m" * 1025),
        "message_delivery_report.metadata is longer than 1024",
    ),
    (
        "report identity not a number",
        with_report(fixture("message_delivery_delivered"), channel_identity={"channel": "MMS", "identity": "x"}),
        "message_delivery_report.channel_identity.identity is not a phone number",
    ),
]


@pytest.mark.parametrize(("name", "payload", "match"), MALFORMED_TABLE, ids=[row[0] for row in MALFORMED_TABLE])
def test_parse_refuses_malformed_fields(name: str, payload: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse(payload)


def test_parse_stamps_the_time_the_callback_arrived() -> None:
    payload = fixture("message_inbound_text")
    provider = provider_for(TENANT_CONFIG)
    (message,) = provider.parse(hook(serialize(payload), received_at=1234.5), Addressed(TENANT_CONFIG, payload))
    assert isinstance(message, InboundMessage)
    assert message.received_at == 1234.5


def test_acknowledge_is_a_small_json_200() -> None:
    response = provider_for(TENANT_CONFIG).acknowledge(hook(b"{}"))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes) and json.loads(response.body) == {"status": "accepted"}


# Hypothesis: whatever the JSON, parse answers with events or InvalidRequest.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
interesting_keys = st.sampled_from(
    [
        "message",
        "message_delivery_report",
        "contact_message",
        "text_message",
        "media_message",
        "media_card_message",
        "choice_response_message",
        "url",
        "caption",
        "text",
        "id",
        "channel_identity",
        "identity",
        "channel",
        "status",
        "reason",
        "metadata",
        "correlation_id",
        "direction",
        "message_id",
        "code",
    ]
)
sinchy_values = st.recursive(
    st.none()
    | st.text(max_size=30)
    | st.sampled_from(["MMS", "SMS", "TO_APP", "DELIVERED", "FAILED", "12025550143", "https://m.example.com/a.jpg", ""])
    | st.integers(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(interesting_keys, children, max_size=5),
    max_leaves=30,
)


def check_parse_total(payload: dict[str, Any]) -> None:
    try:
        events = parse(payload)
    except InvalidRequest:
        return
    for event in events:
        assert isinstance(event, InboundMessage | DeliveryStatus)
        if isinstance(event, InboundMessage):
            assert event.text or event.media
            assert event.user_number.startswith("+") and event.user_number[1:].isdigit()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=30) | interesting_keys, json_values, max_size=6))
def test_parse_arbitrary_json_only_raises_invalid_request(payload: dict[str, Any]) -> None:
    check_parse_total(payload)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["message", "message_delivery_report"]), sinchy_values, sinchy_values)
def test_parse_sinch_shaped_json_only_raises_invalid_request(key: str, event: Any, correlation: Any) -> None:
    check_parse_total({"app_id": DEFAULT_APP_ID, key: event, "correlation_id": correlation})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([row[1] for row in PARSE_TABLE]), st.data())
def test_parse_real_payloads_with_one_field_replaced(payload: dict[str, Any], data: st.DataObject) -> None:
    """A real payload with one value anywhere in it replaced by arbitrary JSON."""
    payload = copy.deepcopy(payload)
    paths: list[tuple[dict[str, Any], str]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append((node, key))
                collect(value)

    collect(payload)
    parent, key = data.draw(st.sampled_from(paths))
    parent[key] = data.draw(json_values)
    check_parse_total(payload)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), json_values))
async def test_address_arbitrary_bodies_only_raises_invalid_request_or_unknown_tenant(body: bytes) -> None:
    provider = provider_for(TENANT_CONFIG)
    try:
        addressed = await provider.address(hook(body), Directory([TENANT_CONFIG]))
    except (InvalidRequest, UnknownTenant):
        return
    assert addressed.tenant is TENANT_CONFIG


# ------------------------------------------------------------------------------ limits


def test_limits() -> None:
    limits = provider_for(TENANT_CONFIG).limits(TENANT_CONFIG)
    assert limits == LIMITS
    assert (limits.max_media_per_message, limits.max_total_bytes, limits.max_body_chars) == (1, 1_000_000, 1600)
    assert limits.mms_country_prefixes == ("+1", "+61")


# ------------------------------------------------------------------------------ sending


@pytest.fixture
async def fake() -> AsyncIterator[FakeSinch]:
    async with serve_fake_sinch() as server:
        yield server


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outbound(text: str = "hello", media: tuple[str, ...] = (), message_id: str = "our-1") -> OutboundMessage:
    return OutboundMessage(message_id=message_id, tenant_number=TENANT, user_number=USER, text=text, media_urls=media)


def sender_for(
    fake: FakeSinch, http: aiohttp.ClientSession, provider: SinchProvider | None = None, **overrides: Any
) -> SinchSender:
    tenant_config = tenant(fake.settings(**overrides))
    provider = provider or provider_for(tenant_config)
    return provider.sender(tenant_config, http)


async def token_answer(request: web.Request) -> web.Response:
    return web.json_response({"access_token": "tok", "expires_in": 3600})


async def sender_against(aiohttp_server: Any, http: aiohttp.ClientSession, *routes: web.RouteDef) -> SinchSender:
    """A sender for a hand-written Sinch API of `routes`: answers the fake never gives. Tokens at /oauth2/token."""
    app = web.Application()
    app.add_routes(routes)
    server = await aiohttp_server(app)
    settings_ = SinchConfig(
        project_id="p",
        app_id="a",
        key_id="k",
        key_secret="s",
        url=str(server.make_url("")),
        auth_url=str(server.make_url("/oauth2/token")),
    )
    tenant_config = tenant(settings_)
    return provider_for(tenant_config).sender(tenant_config, http)


async def test_sender_is_a_sender(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sender: Sender = sender_for(fake, http)
    assert sender.kind == "sinch"


async def test_send_text(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    result = await sender_for(fake, http).send(outbound("hello there"), "https://gw.example.com")
    (sent,) = fake.messages
    assert result.outcome is SendOutcome.SENT
    assert result.provider_message_id == sent.message_id
    assert (sent.kind, sent.text, sent.media_url) == ("text_message", "hello there", None)
    assert sent.body["message"] == {"text_message": {"text": "hello there"}}
    assert sent.body["recipient"] == {
        "identified_by": {
            "channel_identities": [{"channel": "MMS", "identity": USER}, {"channel": "SMS", "identity": USER}]
        }
    }
    assert sent.channel_priority_order == ["MMS", "SMS"]
    assert sent.channel_properties == {"MMS_SENDER": TENANT}
    assert (sent.metadata, sent.correlation_id) == ("our-1", "our-1")
    assert sent.body["app_id"] == fake.app_id
    assert fake.token_requests == 1


async def test_send_text_and_media_as_a_card(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    result = await sender_for(fake, http).send(outbound("see this", ("https://cdn.example.com/a.jpg",)), None)
    (sent,) = fake.messages
    assert result.ok
    assert sent.kind == "card_message"
    assert sent.body["message"] == {
        "card_message": {"description": "see this", "media_message": {"url": "https://cdn.example.com/a.jpg"}}
    }
    assert (sent.text, sent.media_url) == ("see this", "https://cdn.example.com/a.jpg")


async def test_send_media_only(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    result = await sender_for(fake, http).send(outbound("", ("https://cdn.example.com/a.png",)), None)
    (sent,) = fake.messages
    assert result.ok
    assert sent.body["message"] == {"media_message": {"url": "https://cdn.example.com/a.png"}}


async def test_send_with_mms_and_sms_senders(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http, mms_sender="12345", sms_sender="+12025550177")
    assert (await sender.send(outbound(), None)).ok
    assert fake.messages[0].channel_properties == {"MMS_SENDER": "12345", "SMS_SENDER": "+12025550177"}


async def test_a_long_message_id_goes_only_in_the_metadata(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    long_id = "m" * 200
    assert (await sender_for(fake, http).send(outbound(message_id=long_id), None)).ok
    assert (fake.messages[0].metadata, fake.messages[0].correlation_id) == (long_id, None)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (outbound("two", ("https://cdn.example.com/a.png", "https://cdn.example.com/b.png")), outcomes.TOO_MANY_MEDIA),
        (outbound(""), outcomes.EMPTY_MESSAGE),
    ],
)
async def test_messages_sinch_cannot_carry_are_refused_unsent(
    fake: FakeSinch, http: aiohttp.ClientSession, message: OutboundMessage, code: str
) -> None:
    sender = sender_for(fake, http)
    result = await sender.send(message, None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, code)
    assert fake.request_count == 0
    assert not sender.may_have_sent(code)


async def test_one_token_for_many_concurrent_sends(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http)
    results = await asyncio.gather(*(sender.send(outbound(f"n{i}", message_id=f"our-{i}"), None) for i in range(20)))
    assert all(result.ok for result in results)
    assert len({result.provider_message_id for result in results}) == 20
    assert fake.token_requests == 1


async def test_tenants_with_the_same_access_key_share_its_token(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    first = tenant(fake.settings())
    second = tenant(fake.settings(mms_sender="12345"), "+12025550111")
    provider = provider_for(first, second)
    assert (await provider.sender(first, http).send(outbound(), None)).ok
    assert (await provider.sender(second, http).send(outbound(), None)).ok
    assert fake.token_requests == 1


async def test_the_token_is_refreshed_before_it_expires(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.token_lifetime = 1000
    clock = Clock()
    tenant_config = tenant(fake.settings())
    provider = provider_for(tenant_config, clock=clock)
    sender = provider.sender(tenant_config, http)
    assert (await sender.send(outbound(), None)).ok
    clock.now += 899  # more than 100 s (10 %) left
    assert (await sender.send(outbound(), None)).ok
    assert fake.token_requests == 1
    clock.now += 2  # less than 100 s left
    assert (await sender.send(outbound(), None)).ok
    assert fake.token_requests == 2
    assert not fake.rejected


@pytest.mark.parametrize(("lifetime", "refresh_after"), [(3600, 3240), (300, 240), (60, 30), (1, 0.5)])
def test_refresh_ahead(lifetime: float, refresh_after: float) -> None:
    token = AccessToken.issued("tok-value-xyz", lifetime, now=0.0)
    assert (token.refresh_at, token.expires_at) == (refresh_after, lifetime)
    assert "tok-value-xyz" not in repr(token)


async def test_concurrent_senders_wait_for_the_refresh_in_flight(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    clock = Clock()
    tenant_config = tenant(fake.settings())
    provider = provider_for(tenant_config, clock=clock)
    sender = provider.sender(tenant_config, http)
    assert (await sender.send(outbound(), None)).ok
    clock.now += 10_000  # the token is long expired
    results = await asyncio.gather(*(sender.send(outbound(f"n{i}"), None) for i in range(10)))
    assert all(result.ok for result in results)
    assert fake.token_requests == 2


async def test_concurrent_senders_share_a_failed_refresh(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.fail_tokens_next(1, 503, retry_after=3)
    sender = sender_for(fake, http)
    results = await asyncio.gather(*(sender.send(outbound(f"n{i}"), None) for i in range(10)))
    assert {(result.outcome, result.error_code) for result in results} == {
        (SendOutcome.RETRY, outcomes.AUTH_UNAVAILABLE)
    }
    assert fake.token_requests == 1
    assert fake.request_count == 0


async def test_a_failed_refresh_keeps_using_a_token_that_is_still_good(
    fake: FakeSinch, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    tenant_config = tenant(fake.settings())
    provider = provider_for(tenant_config, clock=clock)
    sender = provider.sender(tenant_config, http)
    assert (await sender.send(outbound(), None)).ok
    clock.now += 3500  # due for a refresh, 100 s left
    fake.fail_tokens_next(1, 503)
    assert (await sender.send(outbound(), None)).ok
    assert (fake.token_requests, len(fake.messages)) == (2, 2)


async def test_an_expired_token_is_replaced_and_the_send_retried_once(
    fake: FakeSinch, http: aiohttp.ClientSession
) -> None:
    sender = sender_for(fake, http)
    assert (await sender.send(outbound(message_id="our-1"), None)).ok
    fake.expire_tokens()
    result = await sender.send(outbound(message_id="our-2"), None)
    assert result.ok
    assert fake.token_requests == 2
    assert [sent.metadata for sent in fake.messages] == ["our-1", "our-2"]
    assert [error.status for error in fake.rejected] == [401]


async def test_a_second_401_fails(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.fail_next(2, 401, message="Request had invalid authentication credentials.")
    sender = sender_for(fake, http)
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code, result.http_status) == (SendOutcome.FAILED, "401", 401)
    assert "invalid authentication credentials" in (result.error_message or "")
    assert fake.token_requests == 2
    assert not fake.messages
    assert not sender.may_have_sent("401")


@pytest.mark.parametrize(
    ("status", "options", "outcome", "retry_after"),
    [
        (429, {"retry_after": 7}, SendOutcome.RETRY, 7.0),
        (429, {}, SendOutcome.RETRY, None),
        (408, {}, SendOutcome.RETRY, None),
        (500, {}, SendOutcome.UNKNOWN, None),
        (503, {"retry_after": 2}, SendOutcome.UNKNOWN, 2.0),
        (400, {"message": "Invalid value at 'message'"}, SendOutcome.FAILED, None),
        (403, {"message": "Billing limit reached", "sinch_status": "PERMISSION_DENIED"}, SendOutcome.FAILED, None),
        (404, {"message": "Project not found"}, SendOutcome.FAILED, None),
    ],
)
async def test_send_failures_are_classified(
    fake: FakeSinch,
    http: aiohttp.ClientSession,
    status: int,
    options: dict[str, Any],
    outcome: SendOutcome,
    retry_after: float | None,
) -> None:
    fake.fail_next(1, status, **options)
    sender = sender_for(fake, http)
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code, result.http_status) == (outcome, str(status), status)
    assert result.retry_after == retry_after
    assert result.throttled is (status == 429), "a 429 tells the sender to slow down"
    assert sender.may_have_sent(str(status)) is (status >= 500)
    error = fake.rejected[-1]
    assert result.error_message == f"{error.message} ({error.rpc_status})"
    assert not fake.messages


async def test_a_sender_over_sinchs_rate_is_throttled_with_retry_after(
    fake: FakeSinch, http: aiohttp.ClientSession
) -> None:
    fake.limit_rate(1, retry_after=1)
    sender = sender_for(fake, http)
    first, second = await sender.send(outbound("one"), None), await sender.send(outbound("two"), None)
    assert first.ok and not first.throttled
    assert (second.outcome, second.error_code, second.throttled, second.retry_after) == (
        SendOutcome.RETRY,
        "429",
        True,
        1.0,
    )
    assert not sender.may_have_sent("429")
    assert [m.text for m in fake.messages] == ["one"]


async def test_an_error_page_that_is_not_json(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, 502, raw_body="<html><body>Bad gateway</body></html>")
    result = await sender_for(fake, http).send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.UNKNOWN, "502")
    assert result.error_message is not None and result.error_message.startswith("HTTP 502: <html>")


async def test_a_timeout_is_unknown_and_find_sent_then_finds_the_message(
    fake: FakeSinch, http: aiohttp.ClientSession
) -> None:
    fake.delay_next(1, 1.0)
    sender = sender_for(fake, http, read_timeout_ms=200)
    started = time.time()
    result = await sender.send(outbound(message_id="our-slow"), None)
    assert (result.outcome, result.error_code) == (SendOutcome.UNKNOWN, "timeout")
    assert sender.may_have_sent("timeout")
    (sent,) = await fake.wait_for(1)  # Sinch went on and sent it
    assert await sender.find_sent(outbound(message_id="our-slow"), since=started) == sent.message_id


async def test_an_unreachable_api_is_unknown(
    fake: FakeSinch, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    sender = sender_for(fake, http, url=f"http://127.0.0.1:{unused_tcp_port}")
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.UNKNOWN, "connectionError")


@pytest.mark.parametrize(
    ("status", "outcome", "code", "retry_after"),
    [
        (401, SendOutcome.FAILED, outcomes.AUTH_FAILED, None),
        (400, SendOutcome.FAILED, outcomes.AUTH_FAILED, None),
        (403, SendOutcome.FAILED, outcomes.AUTH_FAILED, None),
        (404, SendOutcome.FAILED, outcomes.AUTH_FAILED, None),  # a wrong auth URL waits for no one
        (500, SendOutcome.RETRY, outcomes.AUTH_UNAVAILABLE, 4.0),
        (429, SendOutcome.RETRY, outcomes.AUTH_UNAVAILABLE, 4.0),
        (503, SendOutcome.RETRY, outcomes.AUTH_UNAVAILABLE, 4.0),
    ],
)
async def test_token_endpoint_failures(
    fake: FakeSinch,
    http: aiohttp.ClientSession,
    status: int,
    outcome: SendOutcome,
    code: str,
    retry_after: float | None,
) -> None:
    fake.fail_tokens_next(1, status, description="Client authentication failed", retry_after=4)
    sender = sender_for(fake, http)
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code, result.retry_after) == (outcome, code, retry_after)
    if outcome is SendOutcome.FAILED:
        assert "Client authentication failed" in (result.error_message or "")
    assert fake.request_count == 0  # no message request was made
    assert not sender.may_have_sent(code)


async def test_a_wrong_key_secret_fails(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    result = await sender_for(fake, http, key_secret="wrong-secret").send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, outcomes.AUTH_FAILED)
    assert "wrong-secret" not in (result.error_message or "")


async def test_token_endpoint_unreachable_or_misconfigured(
    fake: FakeSinch, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    unreachable = sender_for(fake, http, auth_url=f"http://127.0.0.1:{unused_tcp_port}/oauth2/token")
    result = await unreachable.send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.RETRY, outcomes.AUTH_UNAVAILABLE)
    invalid = sender_for(fake, http, auth_url="http://[bad/oauth2/token")
    result = await invalid.send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, outcomes.AUTH_FAILED)
    assert fake.request_count == 0


async def test_a_token_answer_without_a_token(http: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    async def token(request: web.Request) -> web.Response:
        return web.json_response({"token_type": "bearer", "expires_in": 3600})

    sender = await sender_against(aiohttp_server, http, web.post("/oauth2/token", token))
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.RETRY, outcomes.AUTH_UNAVAILABLE)


async def test_a_200_without_a_message_id_is_unknown(http: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    async def send(request: web.Request) -> web.Response:
        return web.json_response({"accepted_time": "2026-01-01T00:00:00Z"})

    sender = await sender_against(
        aiohttp_server,
        http,
        web.post("/oauth2/token", token_answer),
        web.post("/v1/projects/{project}/messages:send", send),
    )
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.UNKNOWN, outcomes.NO_MESSAGE_ID)
    assert sender.may_have_sent(outcomes.NO_MESSAGE_ID)


@pytest.mark.parametrize(
    ("code", "may_have_sent"),
    [
        ("400", False),
        ("401", False),
        ("403", False),
        ("404", False),
        ("429", False),
        ("302", False),
        ("500", True),
        ("503", True),
        ("timeout", True),
        ("connectionError", True),
        ("httpError", True),
        ("invalidURL", False),
        (outcomes.AUTH_FAILED, False),
        (outcomes.AUTH_UNAVAILABLE, False),
        (outcomes.TOO_MANY_MEDIA, False),
        (outcomes.EMPTY_MESSAGE, False),
        (outcomes.NO_MESSAGE_ID, True),
        ("somethingNew", True),
        ("", True),
    ],
)
def test_may_have_sent(code: str, may_have_sent: bool) -> None:
    assert outcomes.may_have_sent(code) is may_have_sent


# ------------------------------------------------------------------------------ finding sent messages


@pytest.mark.parametrize("mode", ["DISPATCH", "CONVERSATION"])
async def test_find_sent_finds_a_message_by_its_metadata(
    fake: FakeSinch, http: aiohttp.ClientSession, mode: str
) -> None:
    fake.processing_mode = mode  # type: ignore[assignment]
    sender = sender_for(fake, http)
    since = time.time()
    for index in range(3):
        assert (await sender.send(outbound(f"n{index}", message_id=f"our-{index}"), None)).ok
    wanted = next(sent for sent in fake.messages if sent.metadata == "our-1")
    assert await sender.find_sent(outbound("n1", message_id="our-1"), since) == wanted.message_id
    assert await sender.find_sent(outbound("n9", message_id="our-9"), since) is None


async def test_find_sent_looks_only_at_messages_to_the_user(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http)
    since = time.time()
    other_user = replace(outbound(message_id="our-1"), user_number="+12025550999")
    assert (await sender.send(other_user, None)).ok
    assert await sender.find_sent(outbound(message_id="our-1"), since) is None
    assert await sender.find_sent(other_user, since) == fake.messages[0].message_id


async def test_find_sent_follows_pages(
    fake: FakeSinch, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "PAGE_SIZE", 2)
    sender = sender_for(fake, http)
    since = time.time()
    for index in range(5):
        assert (await sender.send(outbound(message_id=f"our-{index}"), None)).ok
    # Newest first: the oldest is on the third page.
    assert await sender.find_sent(outbound(message_id="our-0"), since) == fake.messages[0].message_id
    monkeypatch.setattr(sender_module, "MAX_PAGES", 2)
    with pytest.raises(LookupError, match="more than 4 messages"):
        await sender.find_sent(outbound(message_id="our-0"), since)


async def test_find_sent_allows_a_minute_of_clock_difference(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http)
    assert (await sender.send(outbound(), None)).ok
    assert await sender.find_sent(outbound(), since=time.time() + 30) == fake.messages[0].message_id
    assert await sender.find_sent(outbound(), since=time.time() + 120) is None


async def test_find_sent_cannot_tell_when_sinch_cannot_be_asked(
    fake: FakeSinch, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    with pytest.raises(LookupError, match="not found"):
        await sender_for(fake, http, project_id="no-such-project").find_sent(outbound(), 0.0)
    fake.fail_tokens_next(1, 503)
    with pytest.raises(LookupError, match="no access token"):
        await sender_for(fake, http).find_sent(outbound(), 0.0)
    with pytest.raises(LookupError, match="cannot list messages"):
        await sender_for(fake, http, url=f"http://127.0.0.1:{unused_tcp_port}").find_sent(outbound(), 0.0)


async def test_find_sent_cannot_tell_from_an_unreadable_answer(
    http: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    answers = iter(
        [
            web.Response(text="<html/>", content_type="text/html"),
            web.json_response({"messages": "none"}),
            web.json_response([1, 2]),
        ]
    )

    async def messages(request: web.Request) -> web.Response:
        return next(answers)

    sender = await sender_against(
        aiohttp_server,
        http,
        web.post("/oauth2/token", token_answer),
        web.get("/v1/projects/{project}/messages", messages),
    )
    for _ in range(3):
        with pytest.raises(LookupError, match="cannot list messages"):
            await sender.find_sent(outbound(), 0.0)


async def test_find_sent_replaces_an_expired_token(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http)
    assert (await sender.send(outbound(), None)).ok
    fake.expire_tokens()
    assert await sender.find_sent(outbound(), 0.0) == fake.messages[0].message_id
    assert fake.token_requests == 2


# ------------------------------------------------------------------------------ proxies and secrets


async def test_send_through_a_proxy(fake: FakeSinch, http: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    """A forwarding HTTP proxy that checks Proxy-Authorization, relaying token and send requests to the fake."""
    seen: list[tuple[str, str]] = []

    async def relay(request: web.Request) -> web.Response:
        seen.append((request.url.path, request.headers.get("Proxy-Authorization", "")))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "proxy-authorization"}
        async with http.request(
            request.method, str(request.url), data=await request.read(), headers=headers
        ) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(), content_type="application/json")

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", relay)
    proxy = await aiohttp_server(proxy_app)
    proxy_config = ProxyConfig(url=str(proxy.make_url("")), username="pu", password="proxy-pass-9")
    sender = sender_for(fake, http, proxy=proxy_config)
    assert (await sender.send(outbound(), None)).ok
    proxy_authorization = "Basic " + base64.b64encode(b"pu:proxy-pass-9").decode()
    assert [authorization for _, authorization in seen] == [proxy_authorization] * 2
    assert seen[0][0] == "/oauth2/token"
    assert "proxy-pass-9" not in repr(sender)
    assert len(fake.messages) == 1


@dataclass
class Secrets:
    values: list[str]

    def absent_from(self, text: str) -> bool:
        return not any(value in text for value in self.values)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as captured:
        yield captured


async def test_secrets_stay_out_of_reprs_and_logs(
    fake: FakeSinch, http: aiohttp.ClientSession, logs: list[MutableMapping[str, Any]]
) -> None:
    clock = Clock()
    tenant_config = tenant(fake.settings())
    provider = provider_for(tenant_config, clock=clock)
    sender = provider.sender(tenant_config, http)
    assert (await sender.send(outbound(), None)).ok
    fake.expire_tokens()
    assert (await sender.send(outbound(), None)).ok
    fake.fail_next(1, 500)
    await sender.send(outbound(), None)
    clock.now += 3500
    fake.fail_tokens_next(1, 503)
    await sender.send(outbound(), None)
    await sender_for(fake, http, key_secret="wrong-secret").send(outbound(), None)
    parse(inbound_event(DEFAULT_APP_ID, DEFAULT_USER_IDENTITY, text="hi", channel="WHATSAPP"))
    secrets = Secrets([fake.key_secret, fake.webhook_secret, "wrong-secret", *fake.tokens])
    texts = [repr(sender), repr(provider), repr(tenant_config), repr(fake.settings()), repr(sender._tokens), str(logs)]
    assert all(secrets.absent_from(text) for text in texts)
    assert {entry["event"] for entry in logs} >= {
        "sinch.token.issued",
        "sinch.token.refused",
        "sinch.token.refresh_failed",
        "sinch.webhook.ignored",
    }
    # Phone numbers only under the keys the logging layer redacts.
    for entry in logs:
        for key, value in entry.items():
            if key not in ("user", "tenant"):
                assert DEFAULT_USER_IDENTITY not in str(value) and TENANT[1:] not in str(value), entry


# ------------------------------------------------------------------------------ the sandbox


async def test_the_sandbox_round_trip(http: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    """The sandbox's API takes what the sender sends; its callbacks pass address, verify and parse."""
    sandbox: Sandbox = SinchProvider.sandbox()
    api = await aiohttp_server(sandbox.api())
    settings_ = sandbox.settings(str(api.make_url("")))
    assert isinstance(settings_, SinchConfig)
    tenant_config = tenant(settings_)
    provider = provider_for(tenant_config)
    directory = Directory([tenant_config])
    events: list[Event] = []

    async def callbacks(request: web.Request) -> web.Response:
        webhook = WebhookRequest(
            route=CALLBACKS,
            method=request.method,
            url=str(request.url),
            query=request.query,
            headers=request.headers,
            content_type=request.content_type,
            body=await request.read(),
            path_params={},
            received_at=time.time(),
        )
        addressed = await provider.address(webhook, directory)
        verified = provider.verify(webhook, addressed)
        assert verified.replay is not None
        events.extend(provider.parse(webhook, addressed))
        return provider.acknowledge(webhook)

    gateway_app = web.Application()
    gateway_app.router.add_post(CALLBACKS.path, callbacks)
    gateway = await aiohttp_server(gateway_app)
    gateway_url = str(gateway.make_url("")).rstrip("/")

    answer = await sandbox.send_sample_mms(http, gateway_url, TENANT, USER)
    assert (answer.status, answer.media_count) == (200, 1)
    assert json.loads(answer.body) == {"status": "accepted"}
    (message,) = events
    assert isinstance(message, InboundMessage)
    assert (message.user_number, message.tenant_number, len(message.media)) == (USER, TENANT, 1)
    assert message.text and message.media[0].content_type == "image/jpeg"

    result = await provider.sender(tenant_config, http).send(
        outbound("a reply", ("https://cdn.example.com/r.jpg",), message_id="our-42"), gateway_url
    )
    assert result.ok
    assert sandbox.arrived.is_set()
    (sent,) = sandbox.sent
    assert (sent.provider_message_id, sent.to, sent.from_, sent.text, sent.media_urls, sent.our_message_id) == (
        result.provider_message_id,
        USER,
        TENANT,
        "a reply",
        ("https://cdn.example.com/r.jpg",),
        "our-42",
    )
    assert isinstance(sent.shown, dict) and sent.shown["message"]["card_message"]["description"] == "a reply"

    assert await sandbox.report_delivered(http, gateway_url, TENANT, sent) == 200
    report = events[-1]
    assert isinstance(report, DeliveryStatus)
    assert (report.status, report.failed, report.our_message_id, report.provider_message_id) == (
        "delivered",
        False,
        "our-42",
        sent.provider_message_id,
    )


def test_the_sandbox_speaks_sinch() -> None:
    """Its callbacks are shapes Sinch's SDK takes, and what a sender sends it is a request Sinch would take."""
    sample = sample_mms(TENANT, USER)
    sdk_parses(sample)
    sent = SandboxMessage("01ID", USER, TENANT, "hi", (), {}, "our-1")
    sdk_parses(delivered_report(sent))
    body = send_request(outbound("hi", ("https://cdn.example.com/a.jpg",)), SinchSandbox().settings("http://x"))
    assert validate_send_message(body, app_id=body["app_id"]) is None
