"""TeleSign provider: callback signatures (TeleSign's SDK vector), addressing, parsing (TeleSign's published
payloads and the fake's builders), Digest headers and request bodies (checked against TeleSign's SDK and its
OpenAPI), classification of answers, sending against the fake Messaging API, and the sandbox."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from structlog.testing import capture_logs
from telesign.rest import RestClient
from telesign.util import verify_telesign_callback_signature

from sms_gateway.config.model import Config, EngineConfig, TenantConfig
from sms_gateway.http_client import Answer
from sms_gateway.model import DeliveryStatus, InboundMessage, Media, OutboundMessage, SendOutcome
from sms_gateway.providers.base import (
    Addressed,
    Event,
    InvalidRequest,
    Sender,
    UnknownTenant,
    Verified,
    WebhookRefused,
    WebhookRequest,
    WebhookRoute,
)
from sms_gateway.providers.media_types import content_type_of
from sms_gateway.providers.sandbox import Sandbox, SandboxMessage
from sms_gateway.providers.sinch import SinchConfig
from sms_gateway.providers.telesign import (
    CALLBACKS,
    MMS_LIMITS,
    SMS_LIMITS,
    TeleSignConfig,
    TeleSignProvider,
    TeleSignSandbox,
    TeleSignSender,
    errors,
    limits_for,
)
from sms_gateway.providers.telesign.auth import callback_signature, decode_api_key, digest_headers, verify_callback
from sms_gateway.providers.telesign.delivery import FAILURES, HANDOVER, PROGRESS
from sms_gateway.providers.telesign.sandbox import delivered_callback, sample_mms
from sms_gateway.providers.telesign.send_request import encode, mms_template, send_request
from tests.fakes.telesign import (
    DEFAULT_CUSTOMER_ID,
    DEFAULT_SHORT_CODE,
    DEFAULT_USER_NUMBER,
    FakeTeleSign,
    TeleSignSent,
    delivery_callback,
    description,
    mo_mms,
    mo_sms,
    new_api_key,
    serialize,
    serve_fake_telesign,
    sign_callback,
    validate_omnichannel,
)

FIXTURES = Path(__file__).parent / "fixtures" / "telesign"
TENANT = DEFAULT_SHORT_CODE  # "12345": a US short code, the only sender TeleSign sends MMS from
USER = "+" + DEFAULT_USER_NUMBER
NOW = 1_700_000_000.0
CUSTOMER_ID = DEFAULT_CUSTOMER_ID
API_KEY = new_api_key()
REFERENCE_ID = "35C8B5D509BC10689196FED2AD551B8A"  # the fixtures' message
MO_REFERENCE_ID = "0123456789ABCDEF0123456789ABCDEF"  # the fixtures' inbound messages
MO_USER = "+11234567890"

# TeleSign's SDK test vector (python_telesign test/test_util.py): a key with dashes, which b64decode skips.
VECTOR_KEY = "EXAMPLE----TE8sTgg45yusumoN6BYsBVkh+yRJ5czgsnCehZaOYldPJdmFh6NeX8kunZ2zU1YWaUw/0wV6xfw=="
VECTOR_BODY = b"{'test': 123}"
VECTOR_SIGNATURE = "B97g3N9lPdVaptvifxRau7bzVAC5hhRBZ6HKXABN744="


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def tenant(settings_: Any, number: str = TENANT) -> TenantConfig:
    return TenantConfig(phone_number=number, engine=EngineConfig(kind="echo"), provider=settings_)


def provider_for(*tenants: TenantConfig, **options: Any) -> TeleSignProvider:
    return TeleSignProvider(Config(tenants=tenants), **options)


TENANT_SETTINGS = TeleSignConfig(customer_id=CUSTOMER_ID, api_key=API_KEY)
TENANT_CONFIG = tenant(TENANT_SETTINGS)


def hook(
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    tenant_digits: str = TENANT,
    content_type: str = "application/json",
    received_at: float = NOW,
) -> WebhookRequest:
    return WebhookRequest(
        route=CALLBACKS,
        method="POST",
        url=f"https://gw.example.com/sms.receiver/telesign/{tenant_digits}",
        query=MultiDictProxy(MultiDict()),
        headers=CIMultiDictProxy(CIMultiDict(headers or {})),
        content_type=content_type,
        body=body,
        path_params={"tenant": tenant_digits},
        received_at=received_at,
    )


def signed_hook(
    payload: dict[str, Any] | bytes,
    *,
    api_key: str = API_KEY,
    customer_id: str = CUSTOMER_ID,
    bare: bool = False,
    header: str = "Authorization",
) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else serialize(payload)
    signature = sign_callback(api_key, body)
    return hook(body, {header: signature if bare else f"TSA {customer_id}:{signature}"})


@dataclass
class Directory:
    """The core's TenantDirectory, as far as the TeleSign provider uses it."""

    tenants: Sequence[TenantConfig]
    looked_up: list[str] = field(default_factory=list)

    def by_number(self, number: str) -> TenantConfig | None:
        self.looked_up.append(number)
        digits = "".join(ch for ch in number if ch.isdigit())
        return next((t for t in self.tenants if "".join(ch for ch in t.phone_number if ch.isdigit()) == digits), None)

    async def by_message(self, message_id: str) -> TenantConfig | None:
        raise AssertionError("TeleSign callbacks are addressed by the tenant's number in their URL")


def parse(payload: dict[str, Any], tenant_config: TenantConfig = TENANT_CONFIG) -> Sequence[Event]:
    provider = provider_for(tenant_config)
    return provider.parse(hook(serialize(payload)), Addressed(tenant_config, payload))


# ------------------------------------------------------------------------------ signatures


def test_the_sdk_vector() -> None:
    assert callback_signature(VECTOR_KEY, VECTOR_BODY) == VECTOR_SIGNATURE
    assert verify_telesign_callback_signature(VECTOR_KEY, VECTOR_SIGNATURE, VECTOR_BODY.decode())
    # The dashes are skipped, as the SDK's b64decode skips them.
    assert decode_api_key(VECTOR_KEY) == base64.b64decode(VECTOR_KEY.replace("-", ""))


VECTOR_TENANT = tenant(TeleSignConfig(customer_id=CUSTOMER_ID, api_key=VECTOR_KEY))


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": VECTOR_SIGNATURE},
        {"Authorization": f"TSA {CUSTOMER_ID}:{VECTOR_SIGNATURE}"},
        {"authorization": f"tsa {CUSTOMER_ID.lower()}:{VECTOR_SIGNATURE}"},  # scheme and GUID case-insensitive
        {"X-TS-Authorization": f"TSA {CUSTOMER_ID}:{VECTOR_SIGNATURE}"},
        {"Authorization": f"  TSA {CUSTOMER_ID}:{VECTOR_SIGNATURE}  "},
        # One good header is enough (both are TeleSign's: a gateway in front may have rewritten one).
        {"Authorization": "Basic dXNlcjpwYXNz", "X-TS-Authorization": VECTOR_SIGNATURE},
    ],
    ids=["bare", "TSA", "lower case", "X-TS-Authorization", "padded", "one of two"],
)
def test_the_provider_verifies_the_vector(headers: dict[str, str]) -> None:
    provider = provider_for(VECTOR_TENANT)
    verified = provider.verify(hook(VECTOR_BODY, headers), Addressed(VECTOR_TENANT, {}))
    assert verified == Verified(replay=None)  # no nonce: replays are deduplicated on ids


SIGNED = f"TSA {CUSTOMER_ID}:{VECTOR_SIGNATURE}"


@pytest.mark.parametrize(
    ("headers", "body", "api_key", "match"),
    [
        (
            {"Authorization": f"TSA FFFFFFFF-0000-DDDD-1234-AB1234567890:{VECTOR_SIGNATURE}"},
            VECTOR_BODY,
            VECTOR_KEY,
            "customer id",
        ),
        ({"Authorization": f"TSA :{VECTOR_SIGNATURE}"}, VECTOR_BODY, VECTOR_KEY, "customer id"),
        ({"Authorization": SIGNED}, b"{'test': 124}", VECTOR_KEY, "invalid signature"),
        ({"Authorization": SIGNED}, VECTOR_BODY + b" ", VECTOR_KEY, "invalid signature"),
        ({"Authorization": SIGNED}, VECTOR_BODY, API_KEY, "invalid signature"),
        ({"Authorization": VECTOR_SIGNATURE}, VECTOR_BODY, API_KEY, "invalid signature"),
        ({"Authorization": VECTOR_SIGNATURE.rstrip("=")}, VECTOR_BODY, VECTOR_KEY, "invalid signature"),
        ({"Authorization": f"TSA {CUSTOMER_ID}:"}, VECTOR_BODY, VECTOR_KEY, "invalid signature"),
        ({"Authorization": "x" * 300}, VECTOR_BODY, VECTOR_KEY, "invalid signature"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, VECTOR_BODY, VECTOR_KEY, "not a TeleSign signature"),
        ({}, VECTOR_BODY, VECTOR_KEY, "missing"),
        ({"Authorization": "  "}, VECTOR_BODY, VECTOR_KEY, "missing"),
        ({"Authorization": SIGNED}, VECTOR_BODY, "", "no apiKey"),
        ({"Authorization": SIGNED}, VECTOR_BODY, "abc", "not base64"),
        ({"Authorization": SIGNED}, VECTOR_BODY, "----", "apiKey is empty"),
    ],
    ids=[
        "wrong customer id",
        "no customer id",
        "tampered body",
        "body with a space",
        "wrong key",
        "wrong key, bare",
        "no padding",
        "empty signature",
        "too long",
        "basic",
        "missing",
        "blank",
        "no api key",
        "key not base64",
        "key of dashes",
    ],
)
def test_bad_signatures_are_refused(headers: dict[str, str], body: bytes, api_key: str, match: str) -> None:
    tenant_config = tenant(TeleSignConfig(customer_id=CUSTOMER_ID, api_key=api_key))
    with pytest.raises(WebhookRefused, match=match):
        provider_for(tenant_config).verify(hook(body, headers), Addressed(tenant_config, {}))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300).filter(lambda b: b.decode("utf-8", "ignore").encode() == b))
def test_our_signatures_agree_with_the_sdk_and_the_fake(body: bytes) -> None:
    signature = callback_signature(API_KEY, body)
    assert signature == sign_callback(API_KEY, body)
    assert verify_telesign_callback_signature(API_KEY, signature, body.decode("utf-8"))
    verify_callback(CIMultiDictProxy(CIMultiDict({"Authorization": signature})), body, CUSTOMER_ID, API_KEY)


# ------------------------------------------------------------------------------ addressing


SINCH_TENANT = tenant(SinchConfig(project_id="p", app_id="a", key_id="k", key_secret="s"), "+12025550188")
LONG_NUMBER_TENANT = tenant(TENANT_SETTINGS, "+12025550100")


@pytest.mark.parametrize(("digits", "expected"), [(TENANT, TENANT_CONFIG), ("12025550100", LONG_NUMBER_TENANT)])
async def test_address_finds_the_tenant_by_the_digits_in_the_url(digits: str, expected: TenantConfig) -> None:
    tenants = [SINCH_TENANT, TENANT_CONFIG, LONG_NUMBER_TENANT]
    payload = fixture("callback_delivered")
    addressed = await provider_for(*tenants).address(
        signed_hook(payload) if digits == TENANT else hook(serialize(payload), tenant_digits=digits), Directory(tenants)
    )
    assert addressed.tenant is expected
    assert addressed.payload == payload


@pytest.mark.parametrize(
    ("digits", "body", "content_type", "error", "match"),
    [
        ("15550009999", b"{}", "application/json", UnknownTenant, "TeleSign tenant"),
        ("12025550188", b"{}", "application/json", UnknownTenant, "TeleSign tenant"),  # a Sinch tenant's number
        ("+12345", b"{}", "application/json", UnknownTenant, "TeleSign tenant"),
        ("abc", b"{}", "application/json", UnknownTenant, "TeleSign tenant"),
        ("", b"{}", "application/json", UnknownTenant, "TeleSign tenant"),
        ("1" * 16, b"{}", "application/json", UnknownTenant, "TeleSign tenant"),
        (TENANT, b"reference_id=x", "application/x-www-form-urlencoded", InvalidRequest, "application/json"),
        (TENANT, b"not json", "application/json", InvalidRequest, "not JSON"),
        (TENANT, b"\xff\xfe{", "application/json", InvalidRequest, "not JSON"),
        (TENANT, b"", "application/json", InvalidRequest, "not JSON"),
        (TENANT, b"[1, 2]", "application/json", InvalidRequest, "not a JSON object"),
        (TENANT, b'"reference_id"', "application/json", InvalidRequest, "not a JSON object"),
        (TENANT, b"[" * 100_000 + b"]" * 100_000, "application/json", InvalidRequest, "JSON"),
    ],
    ids=[
        "unknown number",
        "another provider's tenant",
        "plus",
        "not digits",
        "empty",
        "too long",
        "form",
        "not json",
        "not utf-8",
        "empty body",
        "array",
        "string",
        "deep",
    ],
)
async def test_address_refuses(digits: str, body: bytes, content_type: str, error: type[Exception], match: str) -> None:
    tenants = [SINCH_TENANT, TENANT_CONFIG]
    with pytest.raises(error, match=match):
        await provider_for(*tenants).address(
            hook(body, tenant_digits=digits, content_type=content_type), Directory(tenants)
        )


async def test_address_without_the_path_parameter_is_an_unknown_tenant() -> None:
    request = replace(hook(b"{}"), path_params={})
    with pytest.raises(UnknownTenant):
        await provider_for(TENANT_CONFIG).address(request, Directory([TENANT_CONFIG]))


async def test_address_accepts_a_charset_parameter() -> None:
    request = hook(b"{}", content_type="application/json; charset=utf-8")
    assert (await provider_for(TENANT_CONFIG).address(request, Directory([TENANT_CONFIG]))).tenant is TENANT_CONFIG


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), st.none() | st.integers() | st.text()),
    st.text(max_size=20),
)
async def test_address_arbitrary_requests_only_raise_invalid_request_or_unknown_tenant(
    body: bytes, digits: str
) -> None:
    try:
        addressed = await provider_for(TENANT_CONFIG).address(
            hook(body, tenant_digits=digits), Directory([TENANT_CONFIG])
        )
    except (InvalidRequest, UnknownTenant):
        return
    assert addressed.tenant is TENANT_CONFIG


# ------------------------------------------------------------------------------ parsing


def inbound(
    text: str = "", media: tuple[Media, ...] = (), *, message_id: str = MO_REFERENCE_ID, user: str = USER
) -> InboundMessage:
    return InboundMessage(
        provider="telesign",
        message_id=message_id,
        tenant_number=TENANT,
        user_number=user,
        text=text,
        media=media,
        received_at=NOW,
    )


def status(name: str, **fields: Any) -> DeliveryStatus:
    values: dict[str, Any] = {
        "provider": "telesign",
        "provider_message_id": REFERENCE_ID,
        "status": name,
        "tenant_number": TENANT,
    }
    return DeliveryStatus(**(values | fields))


def fallback(code: int, **fields: Any) -> DeliveryStatus:
    return status("mms_fallback", fallback=True, error_code=str(code), error_message=description(code), **fields)


def sent_message(
    channels: Sequence[str] = ("mms", "sms"), *, sender_id: str = TENANT, external_id: str | None = "our-1"
) -> TeleSignSent:
    """What the fake records for a message; its builders make delivery callbacks from it."""
    return TeleSignSent(
        reference_id=REFERENCE_ID,
        body={},
        phone_number=DEFAULT_USER_NUMBER,
        channels=list(channels),
        fallback_time=300,
        mms_template="image",
        mms_url="https://cdn.example.com/a.jpg",
        sms_text="https://cdn.example.com/a.jpg",
        message_type="ARN",
        external_id=external_id,
        sender_id=sender_id,
        accepted_at=NOW,
        mms_supported=sender_id == TENANT or "mms" not in channels,
    )


def callback(code: int | str, *legs: tuple[str, int], last_channel: str | None = None, **extra: Any) -> dict[str, Any]:
    """A delivery callback: the message's status `code`, and `legs` as its channel_status."""
    status_: dict[str, Any] = {
        "code": code,
        "description": description(int(code)),
        "updated_on": "2020-05-04 22:07:01:226",
    }
    if last_channel is not None:
        status_["last_channel"] = last_channel
    return {
        "reference_id": REFERENCE_ID,
        "external_id": "our-1",
        "status": status_,
        "channel_status": [
            {
                channel: {
                    "code": leg_code,
                    "description": description(leg_code),
                    "reference_id": "65C77D4A6C5C09085694EFB6C554D2BF",
                    "updated_on": "2020-05-04T22:06:58.112000Z",
                }
            }
            for channel, leg_code in legs
        ],
    } | extra


def with_content(**content: Any) -> dict[str, Any]:
    payload = fixture("mo_mms")
    payload["content"] = content
    return payload


def changed(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`payload` with the value at the dotted `path` replaced (None removes it)."""
    payload = copy.deepcopy(payload)
    *parents, last = path.split(".")
    node = payload
    for name in parents:
        node = node[int(name)] if isinstance(node, list) else node[name]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return payload


IMAGE = "https://mms-media.example.com/in/photo.jpg"
PNG = "https://mms-media.example.com/in/b.png"
VIDEO = "https://mms-media.example.com/in/clip.mp4"
AUDIO = "https://mms-media.example.com/in/voice.amr"
MP3 = "https://mms-media.example.com/in/song.mp3"
OUR = {"our_message_id": "our-1"}

# (name, TeleSign's payload, what the gateway takes from it)
PARSE_TABLE: list[tuple[str, dict[str, Any], list[Event]]] = [
    (
        "mo_mms fixture",
        fixture("mo_mms"),
        [inbound("customer support agent", (Media("https://example.com/mo/image_1.jpg", "image/jpeg"),), user=MO_USER)],
    ),
    (
        "mo_mms with a subject, texts, images, videos and audios",
        mo_mms(
            USER,
            texts=["first", "second"],
            subject="Claim 42",
            images=[IMAGE, PNG],
            videos=[VIDEO],
            audios=[AUDIO, MP3],
            reference_id=MO_REFERENCE_ID,
        ),
        [
            inbound(
                "Claim 42\nfirst\nsecond",
                (
                    Media(IMAGE, "image/jpeg"),
                    Media(PNG, "image/png"),
                    Media(VIDEO, "video/mp4"),
                    Media(AUDIO, "audio/amr"),
                    Media(MP3, "audio/mpeg"),
                ),
            )
        ],
    ),
    (
        "parts in their numbered order, not the JSON's",
        with_content(
            text_10="ten", text_2="two", url_image_10=PNG, url_image_2=IMAGE, url_audio_1=MP3, url_video_1=VIDEO
        ),
        [
            inbound(
                "two\nten",
                (
                    Media(IMAGE, "image/jpeg"),
                    Media(PNG, "image/png"),
                    Media(VIDEO, "video/mp4"),
                    Media(MP3, "audio/mpeg"),
                ),
                user=MO_USER,
            )
        ],
    ),
    (
        "media only, blank and null parts left out",
        with_content(text_1="  ", text_2=None, subject="", url_image_1=IMAGE, url_image_2=""),
        [inbound("", (Media(IMAGE, "image/jpeg"),), user=MO_USER)],
    ),
    (
        "content types by extension, the field deciding audio or video",
        with_content(
            url_image_1="https://m.example.com/x",
            url_video_1="https://m.example.com/c.3gp",
            url_audio_1="https://m.example.com/v.mp4",
            url_image_2="https://m.example.com/p.jpg?s=.png",
        ),
        [
            inbound(
                "",
                (
                    Media("https://m.example.com/x", None),
                    Media("https://m.example.com/p.jpg?s=.png", "image/jpeg"),
                    Media("https://m.example.com/c.3gp", "video/3gpp"),
                    Media("https://m.example.com/v.mp4", "audio/mp4"),
                ),
                user=MO_USER,
            )
        ],
    ),
    (
        "mo_mms with a + on the number",
        changed(fixture("mo_mms"), "phone_number", "+11234567890"),
        [inbound("customer support agent", (Media("https://example.com/mo/image_1.jpg", "image/jpeg"),), user=MO_USER)],
    ),
    ("an empty mo_mms", with_content(text_1=""), []),
    ("mo_sms fixture", fixture("mo_sms"), [inbound("Start", user=MO_USER)]),
    (
        "mo_sms builder",
        mo_sms(USER, "What is my balance?", reference_id=MO_REFERENCE_ID),
        [inbound("What is my balance?")],
    ),
    (
        "mo_sms with the number only at the top",
        changed(changed(fixture("mo_sms"), "user_response.phone_number", None), "phone_number", "447700900123"),
        [inbound("Start", user="+447700900123")],
    ),
    ("an empty mo_sms", changed(fixture("mo_sms"), "user_response.mo_message", " "), []),
    ("mo_sms without a message", changed(fixture("mo_sms"), "user_response.mo_message", None), []),
    (
        "delivered fixture",
        fixture("callback_delivered"),
        [status("delivered", our_message_id="7c8832a1-ab0c-4f12-89f3-0bfbfb7f9645")],
    ),
    (
        "MMS timed out, SMS delivered (fixture)",
        fixture("callback_mms_fallback_to_sms"),
        [fallback(3056), status("delivered")],
    ),
    (
        "MMS not supported, SMS delivered (fixture)",
        fixture("callback_mms_not_supported"),
        [fallback(3062), status("delivered")],
    ),
    (
        "every channel failed (fixture)",
        fixture("callback_failed"),
        [status("failed_3003", failed=True, error_code="3031", error_message="Permanent phone error")],
    ),
    ("builder: delivered on MMS", delivery_callback(sent_message(), final="delivered"), [status("delivered", **OUR)]),
    (
        "builder: MMS timed out",
        delivery_callback(sent_message(), final="mms_timeout"),
        [fallback(3056, **OUR), status("delivered", **OUR)],
    ),
    (
        "builder: MMS not supported",
        delivery_callback(sent_message(), final="mms_unsupported"),
        [fallback(3062, **OUR), status("delivered", **OUR)],
    ),
    (
        "builder: channel not supported by the device",
        delivery_callback(sent_message(), final="device_unsupported"),
        [fallback(3055, **OUR), status("delivered", **OUR)],
    ),
    (
        "builder: MMS from a long number",
        delivery_callback(sent_message(sender_id="12025550100")),
        [fallback(3062, **OUR), status("delivered", **OUR)],
    ),
    (
        "builder: failed",
        delivery_callback(sent_message(), final="failed", failure_code=3033),
        [status("failed_3003", failed=True, error_code="3033", error_message="Message expired before delivery", **OUR)],
    ),
    ("builder: SMS only, delivered", delivery_callback(sent_message(["sms"])), [status("delivered", **OUR)]),
    (
        "builder: SMS only, failed",
        delivery_callback(sent_message(["sms"]), final="failed"),
        [status("failed_3003", failed=True, error_code="3031", error_message="Permanent phone error", **OUR)],
    ),
    # The MMS leg's own callback, while SMS takes over.
    ("3056 on MMS", callback(3056, ("mms", 3056), last_channel="mms"), [fallback(3056, **OUR)]),
    ("3062, no channel named", callback(3062), [fallback(3062, **OUR)]),
    ("3055, MMS only in channel_status", callback(3055, ("mms", 3055)), [fallback(3055, **OUR)]),
    (
        "3055 on SMS: nothing after it",
        callback(3055, ("sms", 3055), last_channel="sms"),
        [status("failed_3055", failed=True, error_code="3055", error_message=description(3055), **OUR)],
    ),
    ("in progress", callback(3001, ("mms", 3001)), [status("in_progress", **OUR)]),
    (
        "delivered to gateway",
        callback(3002, ("sms", 3002), last_channel="sms"),
        [status("delivered_to_gateway", **OUR)],
    ),
    (
        "SMS in progress after MMS gave up",
        callback(3002, ("mms", 3056), ("sms", 3002), last_channel="sms"),
        [fallback(3056, **OUR), status("delivered_to_gateway", **OUR)],
    ),
    (
        "MMS failed but was delivered on MMS after all",
        callback(3000, ("mms", 3000), last_channel="mms"),
        [status("delivered", **OUR)],
    ),
    ("queued", callback(3040), [status("queued", **OUR)]),
    ("read", callback(3005), [status("read", **OUR)]),
    ("no handset receipts", callback(3004), [status("sent_unconfirmed", **OUR)]),
    (
        "a failure whose leg says no more",
        callback(3003, ("sms", 3001), last_channel="sms"),
        [status("failed_3003", failed=True, error_code="3003", error_message="Delivery error", **OUR)],
    ),
    (
        "final failure on SMS",
        callback(3031, ("sms", 3031), last_channel="sms"),
        [status("failed_3031", failed=True, error_code="3031", error_message="Permanent phone error", **OUR)],
    ),
    (
        "blocked",
        callback(3053),
        [status("failed_3053", failed=True, error_code="3053", error_message=description(3053), **OUR)],
    ),
    ("a code TeleSign may add", callback(3999), [status("status_3999", **OUR)]),
    ("a code as a string", callback("3000"), [status("delivered", **OUR)]),
    (
        "with the user's number",
        callback(3000, phone_number="12025550143"),
        [status("delivered", user_number=USER, **OUR)],
    ),
    ("without external_id", changed(callback(3000), "external_id", None), [status("delivered")]),
    ("without channel_status", changed(callback(3000), "channel_status", None), [status("delivered", **OUR)]),
    (
        "status GET fixture's shape (other channels)",
        fixture("omnichannel_status_delivered"),
        [status("delivered", provider_message_id="364C82042F68010C91E2B8633BE34860")],
    ),
    (
        "an unknown sub_resource",
        {"reference_id": MO_REFERENCE_ID, "sub_resource": "mo_rcs", "content": {"text_1": "hi"}},
        [],
    ),
    ("a WhatsApp message", {"sub_resource": "mo_whatsapp"}, []),
]


@pytest.mark.parametrize(("name", "payload", "expected"), PARSE_TABLE, ids=[row[0] for row in PARSE_TABLE])
def test_parse(name: str, payload: dict[str, Any], expected: list[Event]) -> None:
    assert list(parse(payload)) == expected


def test_each_status_code_has_its_own_name() -> None:
    """The core keeps one status per (message, name): distinct codes on the last channel give distinct names."""
    codes = sorted(PROGRESS.keys() | FAILURES | HANDOVER | {3999, 4000})
    names = [parse(callback(code, ("sms", code), last_channel="sms"))[-1] for code in codes]
    assert len({event.status for event in names if isinstance(event, DeliveryStatus)}) == len(codes)
    assert all(
        isinstance(event, DeliveryStatus) and event.failed == (code in FAILURES | HANDOVER)
        for code, event in zip(codes, names, strict=True)
    )


def test_parse_stamps_the_time_the_callback_arrived() -> None:
    payload = fixture("mo_mms")
    (message,) = provider_for(TENANT_CONFIG).parse(
        hook(serialize(payload), received_at=1234.5), Addressed(TENANT_CONFIG, payload)
    )
    assert isinstance(message, InboundMessage) and message.received_at == 1234.5


def test_ignored_callbacks_are_logged() -> None:
    with capture_logs() as logs:
        assert parse({"sub_resource": "mo_rcs"}) == []
        assert parse(with_content(text_1="")) == []
    assert [(entry["event"], entry["reason"], entry["log_level"]) for entry in logs] == [
        ("telesign.webhook.ignored", "sub_resource", "info"),
        ("telesign.webhook.ignored", "no text or media", "info"),
    ]


# (what is wrong, the payload, the field the error names)
MALFORMED_TABLE: list[tuple[str, dict[str, Any], str]] = [
    ("sub_resource not a string", changed(fixture("mo_mms"), "sub_resource", 5), "sub_resource must be a string"),
    ("no reference id", changed(fixture("mo_mms"), "reference_id", None), "reference_id is missing"),
    ("reference id too long", changed(fixture("mo_mms"), "reference_id", "A" * 65), "reference_id is longer than 64"),
    ("reference id a number", changed(fixture("mo_sms"), "reference_id", 12), "reference_id must be a string"),
    ("no phone number", changed(fixture("mo_mms"), "phone_number", None), "phone_number is missing"),
    (
        "phone number not digits",
        changed(fixture("mo_mms"), "phone_number", "abc"),
        "phone_number is not a phone number",
    ),
    (
        "phone number too short",
        changed(fixture("mo_mms"), "phone_number", "12345"),
        "phone_number is not a phone number",
    ),
    (
        "phone number too long",
        changed(fixture("mo_mms"), "phone_number", "1" * 16),
        "phone_number is not a phone number",
    ),
    ("no content", changed(fixture("mo_mms"), "content", None), "content is missing"),
    ("content not an object", changed(fixture("mo_mms"), "content", "hi"), "content must be an object"),
    ("text not a string", with_content(text_1=5), "content.text_1 must be a string"),
    ("subject not a string", with_content(subject=["x"]), "content.subject must be a string"),
    ("text too long", with_content(text_1="x" * 10_001), "content.text_1 is longer than 10000"),
    (
        "texts too long together",
        with_content(text_1="x" * 6000, text_2="y" * 6000),
        "content has more than 10000 characters of text",
    ),
    (
        "image URL not http",
        with_content(url_image_1="ftp://m.example.com/a.jpg"),
        "content.url_image_1 is not an absolute http",
    ),
    ("video URL relative", with_content(url_video_2="/a.mp4"), "content.url_video_2 is not an absolute http"),
    ("audio URL not a string", with_content(url_audio_1={"url": AUDIO}), "content.url_audio_1 must be a string"),
    (
        "URL too long",
        with_content(url_image_1="https://m.example.com/" + "a" * 4096),
        "content.url_image_1 is longer than 4096",
    ),
    ("eleven media", with_content(**{f"url_image_{n}": IMAGE for n in range(1, 12)}), "content has more than 10 media"),
    ("no user_response", changed(fixture("mo_sms"), "user_response", None), "user_response is missing"),
    (
        "mo_message not a string",
        changed(fixture("mo_sms"), "user_response.mo_message", 42),
        "user_response.mo_message must be a string",
    ),
    (
        "mo_message too long",
        changed(fixture("mo_sms"), "user_response.mo_message", "x" * 10_001),
        "user_response.mo_message is longer than 10000",
    ),
    (
        "mo_sms without any number",
        changed(fixture("mo_sms"), "user_response.phone_number", None),
        "user_response.phone_number is missing",
    ),
    (
        "mo_sms number not a number",
        changed(fixture("mo_sms"), "user_response.phone_number", "SHORT"),
        "user_response.phone_number is not a phone number",
    ),
    ("no status", changed(callback(3000), "status", None), "status is missing"),
    ("status not an object", changed(callback(3000), "status", 3000), "status must be an object"),
    ("no status code", changed(callback(3000), "status.code", None), "status.code is missing"),
    (
        "status code not a number",
        changed(callback(3000), "status.code", "delivered"),
        "status.code is not a TeleSign status code",
    ),
    ("status code a boolean", changed(callback(3000), "status.code", True), "status.code is not a TeleSign status"),
    ("status code too large", changed(callback(3000), "status.code", 10**6), "status.code is not a TeleSign status"),
    ("status code negative", changed(callback(3000), "status.code", -1), "status.code is not a TeleSign status"),
    (
        "description too long",
        changed(callback(3003), "status.description", "x" * 2001),
        "status.description is longer than 2000",
    ),
    (
        "last_channel not a string",
        changed(callback(3000), "status.last_channel", 1),
        "status.last_channel must be a string",
    ),
    ("delivery without reference id", changed(callback(3000), "reference_id", ""), "reference_id is missing"),
    ("external id too long", changed(callback(3000), "external_id", "e" * 101), "external_id is longer than 100"),
    ("user number not a number", callback(3000, phone_number="+1"), "phone_number is not a phone number"),
    (
        "channel_status not a list",
        changed(callback(3000), "channel_status", {"mms": {}}),
        "channel_status must be a list",
    ),
    (
        "channel_status entry not an object",
        changed(callback(3000), "channel_status", ["mms"]),
        "channel_status\\[0\\] must be an object",
    ),
    (
        "channel_status entry with two channels",
        changed(callback(3000), "channel_status", [{"mms": {"code": 3056}, "sms": {"code": 3000}}]),
        "channel_status\\[0\\] must name one channel",
    ),
    (
        "channel_status entry naming no channel",
        changed(callback(3000), "channel_status", [{" ": {"code": 3000}}]),
        "channel_status\\[0\\] does not name a channel",
    ),
    (
        "channel details not an object",
        changed(callback(3000), "channel_status", [{"mms": 3000}]),
        "channel_status\\[0\\].mms must be an object",
    ),
    (
        "channel code missing",
        changed(callback(3000, ("mms", 3056), ("sms", 3000)), "channel_status.1.sms.code", None),
        "channel_status\\[1\\].sms.code is missing",
    ),
    (
        "channel reference id too long",
        changed(callback(3000, ("mms", 3000)), "channel_status.0.mms.reference_id", "r" * 65),
        "channel_status\\[0\\].mms.reference_id is longer than 64",
    ),
    ("eleven channels", callback(3000, *[("sms", 3000)] * 11), "channel_status has more than 10 items"),
]


@pytest.mark.parametrize(("name", "payload", "match"), MALFORMED_TABLE, ids=[row[0] for row in MALFORMED_TABLE])
def test_parse_refuses_malformed_fields(name: str, payload: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse(payload)


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
        "reference_id",
        "external_id",
        "status",
        "code",
        "description",
        "last_channel",
        "channel_status",
        "mms",
        "sms",
        "sub_resource",
        "phone_number",
        "content",
        "text_1",
        "text_2",
        "subject",
        "url_image_1",
        "url_video_1",
        "url_audio_3",
        "user_response",
        "mo_message",
    ]
)
telesign_values = st.recursive(
    st.none()
    | st.text(max_size=30)
    | st.integers(min_value=-10, max_value=10**6)
    | st.sampled_from(
        [
            "mo_mms",
            "mo_sms",
            "mms",
            "sms",
            "12025550143",
            "+12025550143",
            "https://m.example.com/a.jpg",
            "",
            3000,
            3056,
            3062,
            3055,
            3003,
            3001,
        ]
    ),
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
            assert len(event.media) <= 10 and len(event.text) <= 10_000
            assert event.user_number.startswith("+") and event.user_number[1:].isdigit()
        else:
            assert event.status and event.status == event.status.lower()
            assert not (event.failed and event.fallback)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=30) | interesting_keys, json_values, max_size=6))
def test_parse_arbitrary_json_only_raises_invalid_request(payload: dict[str, Any]) -> None:
    check_parse_total(payload)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([None, "mo_mms", "mo_sms", "other"]), st.dictionaries(interesting_keys, telesign_values, max_size=8)
)
def test_parse_telesign_shaped_json_only_raises_invalid_request(
    sub_resource: str | None, payload: dict[str, Any]
) -> None:
    if sub_resource is not None:
        payload["sub_resource"] = sub_resource
    check_parse_total(payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([row[1] for row in PARSE_TABLE]), st.data())
def test_parse_real_payloads_with_one_field_replaced(payload: dict[str, Any], data: st.DataObject) -> None:
    """A real payload with one value anywhere in it replaced by arbitrary JSON."""
    payload = copy.deepcopy(payload)
    paths: list[tuple[Any, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append((node, key))
                collect(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                paths.append((node, index))
                collect(value)

    collect(payload)
    parent, key = data.draw(st.sampled_from(paths))
    parent[key] = data.draw(json_values)
    check_parse_total(payload)


# ------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    ("number", "sender_id", "expected"),
    [
        ("12345", None, MMS_LIMITS),
        ("123456", None, MMS_LIMITS),
        ("+12025550100", None, SMS_LIMITS),
        ("+12025550100", "+1 202-555-0100", SMS_LIMITS),
        ("1234", None, SMS_LIMITS),
        ("+12025550100", "55555", MMS_LIMITS),
    ],
)
def test_limits(number: str, sender_id: str | None, expected: Any) -> None:
    tenant_config = tenant(replace(TENANT_SETTINGS, sender_id=sender_id), number)
    limits = provider_for(tenant_config).limits(tenant_config)
    assert limits == expected
    assert (limits.max_media_per_message, limits.max_total_bytes, limits.max_body_chars) == (1, 1_000_000, 1600)
    assert limits.media_with_text is False  # TeleSign's MMS carries the media alone
    assert limits.mms_country_prefixes == (("+1",) if expected is MMS_LIMITS else ())
    assert limits_for("".join(ch for ch in (sender_id or number) if ch.isdigit())) == expected


def test_the_provider_is_a_plug_in() -> None:
    assert TeleSignProvider.kind == "telesign"
    assert TeleSignProvider.settings_type is TeleSignConfig
    assert TeleSignProvider.routes == (CALLBACKS,)
    assert CALLBACKS == WebhookRoute("POST", "/sms.receiver/telesign/{tenant}", "telesign")


# ------------------------------------------------------------------------------ request bodies


def outbound(
    text: str = "hello", media: tuple[str, ...] = (), message_id: str = "our-1", user: str = USER
) -> OutboundMessage:
    return OutboundMessage(message_id=message_id, tenant_number=TENANT, user_number=user, text=text, media_urls=media)


def test_the_body_of_a_text_message() -> None:
    body = send_request(outbound("hello there"), TENANT_SETTINGS, TENANT)
    assert body == {
        "channels": [{"channel": "sms"}],
        "recipient": {"phone_number": DEFAULT_USER_NUMBER},
        "message": {"sms": {"template": "text", "parameters": {"text": "hello there"}}},
        "message_type": "ARN",
        "sender_id": TENANT,
        "external_id": "our-1",
    }
    assert validate_omnichannel(body) is None  # TeleSign's OpenAPI rules, as the fake checks them


def test_the_body_of_a_media_message() -> None:
    settings_ = replace(TENANT_SETTINGS, fallback_seconds=120, message_type="MKT")
    body = send_request(outbound("", ("https://cdn.example.com/a.mp4",)), settings_, "55555")
    assert body == {
        "channels": [{"channel": "mms", "fallback_time": 120}, {"channel": "sms"}],
        "recipient": {"phone_number": DEFAULT_USER_NUMBER},
        "message": {
            "mms": {"template": "video", "parameters": {"url": "https://cdn.example.com/a.mp4"}},
            "sms": {"template": "text", "parameters": {"text": "https://cdn.example.com/a.mp4"}},
        },
        "message_type": "MKT",
        "sender_id": "55555",
        "external_id": "our-1",
    }
    assert validate_omnichannel(body) is None


def test_the_sms_fallback_carries_the_text_before_the_link() -> None:
    body = send_request(outbound("see this", ("https://cdn.example.com/a.jpg",)), TENANT_SETTINGS, TENANT)
    assert body["message"]["sms"]["parameters"]["text"] == "see this\nhttps://cdn.example.com/a.jpg"
    assert body["message"]["mms"] == {"template": "image", "parameters": {"url": "https://cdn.example.com/a.jpg"}}


@pytest.mark.parametrize(
    ("message_id", "sent"),
    [("our-1", True), ("m" * 100, True), ("m" * 101, False), ("naïve", False), ("tab\there", False)],
)
def test_external_id_only_when_telesign_takes_it(message_id: str, sent: bool) -> None:
    body = send_request(outbound(message_id=message_id), TENANT_SETTINGS, TENANT)
    assert ("external_id" in body) is sent
    assert validate_omnichannel(body) is None


def test_the_body_is_serialised_once_as_utf_8() -> None:
    body = send_request(outbound("héllo 👋"), TENANT_SETTINGS, TENANT)
    assert json.loads(encode(body)) == body
    assert "héllo 👋".encode() in encode(body)


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("https://cdn.example.com/a.jpg", "image"),
        ("https://cdn.example.com/a.JPEG", "image"),
        ("https://cdn.example.com/a.gif", "image"),
        ("https://cdn.example.com/a.png?v=2", "image"),
        ("https://cdn.example.com/a.mp4", "video"),
        ("https://cdn.example.com/a.3gp", "video"),
        ("https://cdn.example.com/a.mov", "video"),
        ("https://cdn.example.com/a.mp3", "audio"),
        ("https://cdn.example.com/a.amr", "audio"),
        ("https://cdn.example.com/a.wav", "audio"),
        ("https://cdn.example.com/a", "image"),
        ("https://cdn.example.com/a.pdf", "image"),
        ("https://cdn.example.com/media?id=a.mp4", "image"),
        ("http://[bad", "image"),
    ],
)
def test_mms_template_by_extension(url: str, template: str) -> None:
    assert mms_template(url) == template


@pytest.mark.parametrize(
    ("url", "kind", "content_type"),
    [
        ("https://m.example.com/a.mp4", "video", "video/mp4"),
        ("https://m.example.com/a.mp4", "audio", "audio/mp4"),
        ("https://m.example.com/a.3gp", "audio", "audio/3gpp"),
        ("https://m.example.com/a.m4a", "audio", "audio/mp4"),
        ("https://m.example.com/a.mp3", "video", "video/mpeg"),
        ("https://m.example.com/a.jpg", "video", "image/jpeg"),  # only audio and video share containers
        ("https://m.example.com/a", "image", None),
        ("http://[bad", None, None),
    ],
)
def test_content_types(url: str, kind: Any, content_type: str | None) -> None:
    assert content_type_of(url, kind) == content_type


# ------------------------------------------------------------------------------ Digest headers

SDK_DATE = "Tue, 31 Jan 2017 19:36:42 GMT"
SDK_NONCE = "A1592C6F-E384-4CDB-BC42-C3AB970369E9"


def fixed_sender(api_key: str, http: aiohttp.ClientSession, auth_method: Any = "digest") -> TeleSignSender:
    settings_ = TeleSignConfig(customer_id=CUSTOMER_ID, api_key=api_key, auth_method=auth_method)
    return TeleSignSender(
        settings_, http, TENANT, clock=lambda: parsedate_to_datetime(SDK_DATE).timestamp(), nonce=lambda: SDK_NONCE
    )


@pytest.mark.parametrize("api_key", [VECTOR_KEY, API_KEY])
@pytest.mark.parametrize(
    "message", [outbound("hello"), outbound('héllo 👋 "quoted"\n'), outbound("", ("https://cdn.example.com/a.jpg",))]
)
async def test_digest_headers_equal_the_sdks(
    api_key: str, message: OutboundMessage, http: aiohttp.ClientSession
) -> None:
    body = encode(send_request(message, TENANT_SETTINGS, TENANT))
    sdk = RestClient.generate_telesign_headers(
        CUSTOMER_ID,
        api_key,
        "POST",
        "/v1/omnichannel",
        body.decode(),
        date_rfc2616=SDK_DATE,
        nonce=SDK_NONCE,
        content_type="application/json",
    )
    ours = digest_headers(
        CUSTOMER_ID,
        api_key,
        "POST",
        "/v1/omnichannel",
        body.decode(),
        content_type="application/json",
        date=SDK_DATE,
        nonce=SDK_NONCE,
    )
    assert ours == sdk
    assert fixed_sender(api_key, http).headers(body) == {"Accept": "application/json", **sdk}


def test_digest_headers_of_a_get_equal_the_sdks() -> None:
    sdk = RestClient.generate_telesign_headers(
        CUSTOMER_ID, API_KEY, "GET", f"/v1/omnichannel/{REFERENCE_ID}", "", date_rfc2616=SDK_DATE, nonce=SDK_NONCE
    )
    assert (
        digest_headers(
            CUSTOMER_ID,
            API_KEY,
            "GET",
            f"/v1/omnichannel/{REFERENCE_ID}",
            "",
            content_type="",
            date=SDK_DATE,
            nonce=SDK_NONCE,
        )
        == sdk
    )


async def test_basic_headers_equal_the_sdks(http: aiohttp.ClientSession) -> None:
    sdk = RestClient.generate_telesign_headers(
        CUSTOMER_ID, API_KEY, "POST", "/v1/omnichannel", "{}", content_type="application/json", auth_method="Basic"
    )
    headers = fixed_sender(API_KEY, http, "basic").headers(b"{}")
    assert headers["Authorization"] == sdk["Authorization"]
    assert headers["Content-Type"] == "application/json"


# ------------------------------------------------------------------------------ classifying answers


def answer(status: int, body: Any = None, *, raw: bytes | None = None, retry_after: str | None = None) -> Answer:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Answer(status, headers, raw if raw is not None else json.dumps(body).encode())


def telesign_error(code: int, *extra: int) -> dict[str, Any]:
    return {
        "reference_id": None,
        "status": {"code": code, "description": description(code)},
        "errors": [{"code": c, "description": f"error {c}"} for c in extra],
    }


HTML = b"<html><body>Service Unavailable</body></html>"

# (name, the answer, outcome, error code, retry_after)
CLASSIFY_TABLE: list[tuple[str, Answer, SendOutcome, str | None, float | None]] = [
    ("accepted", answer(200, fixture("omnichannel_response_accepted")), SendOutcome.SENT, None, None),
    (
        "accepted without a reference id",
        answer(200, {"status": {"code": 3001}}),
        SendOutcome.UNKNOWN,
        errors.NO_REFERENCE_ID,
        None,
    ),
    ("a 200 that is not JSON", answer(200, raw=b"OK"), SendOutcome.UNKNOWN, errors.NO_REFERENCE_ID, None),
    (
        "a 200 with another code",
        answer(200, {"reference_id": REFERENCE_ID, "status": {"code": 3002}}),
        SendOutcome.UNKNOWN,
        "3002",
        None,
    ),
    (
        "bad message_type (fixture)",
        answer(400, fixture("omnichannel_error_invalid_message_type")),
        SendOutcome.FAILED,
        "3102",
        None,
    ),
    *[
        (f"refused {code}", answer(400, telesign_error(code)), SendOutcome.FAILED, str(code), None)
        for code in (3101, 3103, 3106, 3110, 3113, 3300, 3301, 3302, 3303, 3304, 3206)
    ],
    ("payload too large", answer(413, telesign_error(3116)), SendOutcome.FAILED, "3116", None),
    ("a refusal without a body", answer(400, raw=b""), SendOutcome.FAILED, "400", None),
    ("a redirect", answer(302, raw=b""), SendOutcome.FAILED, "302", None),
    ("an unknown code in a 400", answer(400, telesign_error(3998)), SendOutcome.FAILED, "3998", None),
    ("rate limited", answer(429, telesign_error(3204), retry_after="7"), SendOutcome.RETRY, "3204", 7.0),
    ("SMS rate limited", answer(429, telesign_error(3205)), SendOutcome.RETRY, "3205", None),
    ("a bare 429", answer(429, raw=b"", retry_after="3"), SendOutcome.RETRY, "429", 3.0),
    (
        "system unavailable (fixture)",
        answer(503, fixture("omnichannel_error_system_unavailable"), retry_after="2"),
        SendOutcome.RETRY,
        "3500",
        2.0,
    ),
    ("system unavailable in a 500", answer(500, telesign_error(3500)), SendOutcome.RETRY, "3500", None),
    ("a 503 page", answer(503, raw=HTML), SendOutcome.RETRY, "503", None),
    (
        "not authorized (fixture)",
        answer(401, fixture("omnichannel_error_not_authorized")),
        SendOutcome.FAILED,
        "3400",
        None,
    ),
    ("bad signature", answer(401, telesign_error(3400, 10008, -30006)), SendOutcome.FAILED, "3400", None),
    (
        "nonce reused, old code only",
        answer(401, {"errors": [{"code": -30012, "description": "nonce"}]}),
        SendOutcome.FAILED,
        "-30012",
        None,
    ),
    ("stale date", answer(401, {"status": {"code": 10004}}), SendOutcome.FAILED, "10004", None),
    ("invalid API key", answer(401, telesign_error(3411)), SendOutcome.FAILED, "3411", None),
    ("a bare 401", answer(401, raw=b""), SendOutcome.FAILED, "401", None),
    ("a bare 403", answer(403, raw=HTML), SendOutcome.FAILED, "403", None),
    ("a 500", answer(500, raw=b""), SendOutcome.UNKNOWN, "500", None),
    ("a 502 page", answer(502, raw=HTML), SendOutcome.UNKNOWN, "502", None),
    ("an unknown code in a 500", answer(500, telesign_error(3999)), SendOutcome.UNKNOWN, "3999", None),
]


@pytest.mark.parametrize(
    ("name", "answer_", "outcome", "code", "retry_after"), CLASSIFY_TABLE, ids=[row[0] for row in CLASSIFY_TABLE]
)
def test_answers_are_classified(
    name: str, answer_: Answer, outcome: SendOutcome, code: str | None, retry_after: float | None
) -> None:
    result = errors.send_result(answer_)
    assert (result.outcome, result.error_code, result.retry_after) == (outcome, code, retry_after)
    assert result.throttled is (code in ("3204", "3205", "429")), "a rate limit tells the sender to slow down"
    assert result.http_status == answer_.status
    if outcome is SendOutcome.SENT:
        assert (result.provider_message_id, result.status) == (REFERENCE_ID, "in_progress")
        return
    assert result.error_message and code is not None
    # The outbox looks before sending again after an UNKNOWN, and sends again at once after a RETRY. (A refusal
    # with a code we do not know is FAILED, and is not tried again whatever may_have_sent says.)
    if outcome is not SendOutcome.FAILED:
        assert errors.may_have_sent(code) is (outcome is SendOutcome.UNKNOWN)


def test_error_messages_are_the_descriptions() -> None:
    result = errors.send_result(answer(401, telesign_error(3400, 10008, -30006)))
    assert result.error_message == "Not authorized; error 10008; error -30006"
    assert errors.send_result(answer(502, raw=HTML)).error_message == f"HTTP 502: {HTML.decode()}"
    long = errors.send_result(answer(400, {"status": {"code": 3110, "description": "x" * 5000}}))
    assert long.error_message is not None and len(long.error_message) == 1000


@pytest.mark.parametrize(
    ("code", "may_have_sent"),
    [
        ("3102", False),
        ("3116", False),
        ("3204", False),
        ("3500", False),
        ("3400", False),
        ("10002", False),
        ("10008", False),
        ("-30006", False),
        ("-30012", False),
        ("400", False),
        ("401", False),
        ("403", False),
        ("404", False),
        ("429", False),
        ("503", False),
        ("302", False),
        ("500", True),
        ("502", True),
        ("504", True),
        ("timeout", True),
        ("connectionError", True),
        ("httpError", True),
        ("invalidURL", False),
        (errors.TOO_MANY_MEDIA, False),
        (errors.EMPTY_MESSAGE, False),
        (errors.INVALID_API_KEY, False),
        (errors.NO_REFERENCE_ID, True),
        ("3999", True),
        ("somethingNew", True),
        ("", True),
        ("200", True),
    ],
)
def test_may_have_sent(code: str, may_have_sent: bool) -> None:
    assert errors.may_have_sent(code) is may_have_sent


# ------------------------------------------------------------------------------ sending


@pytest.fixture
async def fake() -> AsyncIterator[FakeTeleSign]:
    async with serve_fake_telesign() as server:
        yield server


def sender_for(
    fake: FakeTeleSign,
    http: aiohttp.ClientSession,
    *,
    number: str = TENANT,
    provider: TeleSignProvider | None = None,
    **overrides: Any,
) -> TeleSignSender:
    tenant_config = tenant(fake.settings(**overrides), number)
    provider = provider or provider_for(tenant_config)
    return provider.sender(tenant_config, http)


async def test_sender_is_a_sender(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    sender: Sender = sender_for(fake, http)
    assert sender.kind == "telesign"


@pytest.mark.parametrize("auth_method", ["basic", "digest"])
async def test_send_text(fake: FakeTeleSign, http: aiohttp.ClientSession, auth_method: str) -> None:
    sender = sender_for(fake, http, auth_method=auth_method)
    result = await sender.send(outbound("hello there"), "https://gw.example.com")
    (sent,) = fake.messages
    assert (result.outcome, result.provider_message_id, result.status) == (
        SendOutcome.SENT,
        sent.reference_id,
        "in_progress",
    )
    assert (sent.channels, sent.sms_text, sent.mms_url, sent.mms_template) == (["sms"], "hello there", None, None)
    assert (sent.phone_number, sent.sender_id, sent.external_id, sent.message_type) == (
        DEFAULT_USER_NUMBER,
        TENANT,
        "our-1",
        "ARN",
    )
    assert "callback_url" not in sent.body  # callbacks go to the URL registered with TeleSign
    assert not fake.rejected


@pytest.mark.parametrize("auth_method", ["basic", "digest"])
async def test_send_media(fake: FakeTeleSign, http: aiohttp.ClientSession, auth_method: str) -> None:
    sender = sender_for(fake, http, auth_method=auth_method, fallback_seconds=60)
    result = await sender.send(outbound("", ("https://cdn.example.com/a.png",)), None)
    (sent,) = fake.messages
    assert result.ok and result.provider_message_id == sent.reference_id
    assert (sent.channels, sent.fallback_time, sent.mms_template, sent.mms_url, sent.sms_text) == (
        ["mms", "sms"],
        60,
        "image",
        "https://cdn.example.com/a.png",
        "https://cdn.example.com/a.png",
    )
    assert sent.mms_supported  # from the account's short code


async def test_the_sender_id_is_the_tenants_number_when_not_set(
    fake: FakeTeleSign, http: aiohttp.ClientSession
) -> None:
    assert (await sender_for(fake, http, sender_id=None).send(outbound(), None)).ok
    assert (await sender_for(fake, http, number="+1 202-555-0100", sender_id=None).send(outbound(), None)).ok
    assert [sent.sender_id for sent in fake.messages] == [TENANT, "12025550100"]


async def test_every_digest_request_has_its_own_nonce(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http, auth_method="digest")
    for index in range(3):
        assert (await sender.send(outbound(message_id=f"our-{index}"), None)).ok
    assert len(fake.nonces) == 3


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"clock": lambda: time.time() - 3600}, "not within tolerable range"),
        ({"nonce": lambda: "the-same-nonce-every-time"}, "used recently"),
    ],
    ids=["stale clock", "reused nonce"],
)
async def test_digest_problems_are_authentication_failures(
    fake: FakeTeleSign, http: aiohttp.ClientSession, options: dict[str, Any], why: str
) -> None:
    tenant_config = tenant(fake.settings(auth_method="digest"))
    sender = provider_for(tenant_config, **options).sender(tenant_config, http)
    results = [await sender.send(outbound(message_id=f"our-{index}"), None) for index in range(2)]
    result = results[-1]
    assert (result.outcome, result.error_code, result.http_status) == (SendOutcome.FAILED, "3400", 401)
    assert why in (result.error_message or "")
    assert not sender.may_have_sent("3400")


@pytest.mark.parametrize("auth_method", ["basic", "digest"])
async def test_a_wrong_api_key_fails(fake: FakeTeleSign, http: aiohttp.ClientSession, auth_method: str) -> None:
    wrong = new_api_key()
    result = await sender_for(fake, http, auth_method=auth_method, api_key=wrong).send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, "3400")
    assert wrong not in (result.error_message or "")
    assert not fake.messages


async def test_a_digest_key_that_is_not_base64_is_refused_unsent(
    fake: FakeTeleSign, http: aiohttp.ClientSession
) -> None:
    sender = sender_for(fake, http, auth_method="digest", api_key="not base64!")
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, errors.INVALID_API_KEY)
    assert "not base64!" not in (result.error_message or "")
    assert fake.request_count == 0


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (outbound("two", ("https://cdn.example.com/a.png", "https://cdn.example.com/b.png")), errors.TOO_MANY_MEDIA),
        (outbound(""), errors.EMPTY_MESSAGE),
    ],
)
async def test_messages_telesign_cannot_carry_are_refused_unsent(
    fake: FakeTeleSign, http: aiohttp.ClientSession, message: OutboundMessage, code: str
) -> None:
    sender = sender_for(fake, http)
    result = await sender.send(message, None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, code)
    assert fake.request_count == 0
    assert not sender.may_have_sent(code)


# (status, fail_next's options, outcome, error code, retry_after)
FAILURE_TABLE: list[tuple[int, dict[str, Any], SendOutcome, str, float | None]] = [
    (400, {"code": 3102}, SendOutcome.FAILED, "3102", None),
    (400, {"code": 3113}, SendOutcome.FAILED, "3113", None),
    (400, {"code": 3304}, SendOutcome.FAILED, "3304", None),
    (413, {"code": 3116}, SendOutcome.FAILED, "3116", None),
    (429, {"code": 3204, "retry_after": 7}, SendOutcome.RETRY, "3204", 7.0),
    (429, {"code": 3204}, SendOutcome.RETRY, "3204", None),
    (503, {"code": 3500, "retry_after": 2}, SendOutcome.RETRY, "3500", 2.0),
    (500, {}, SendOutcome.RETRY, "3500", None),  # the fake's default code for a 500: System Unavailable
    (401, {"code": 3400}, SendOutcome.FAILED, "3400", None),
    (500, {"code": 3999}, SendOutcome.UNKNOWN, "3999", None),
    (502, {"raw_body": "<html><body>Bad gateway</body></html>"}, SendOutcome.UNKNOWN, "502", None),
    (503, {"raw_body": "<html>down</html>", "retry_after": 5}, SendOutcome.RETRY, "503", 5.0),
    (429, {"raw_body": ""}, SendOutcome.RETRY, "429", None),
]


@pytest.mark.parametrize(
    ("status_", "options", "outcome", "code", "retry_after"),
    FAILURE_TABLE,
    ids=[f"{row[0]}-{row[3]}" for row in FAILURE_TABLE],
)
async def test_send_failures_are_classified(
    fake: FakeTeleSign,
    http: aiohttp.ClientSession,
    status_: int,
    options: dict[str, Any],
    outcome: SendOutcome,
    code: str,
    retry_after: float | None,
) -> None:
    fake.fail_next(1, status_, **options)
    sender = sender_for(fake, http)
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.error_code, result.http_status, result.retry_after) == (
        outcome,
        code,
        status_,
        retry_after,
    )
    assert result.error_message
    assert sender.may_have_sent(code) is (outcome is SendOutcome.UNKNOWN)
    assert not fake.messages
    # The next send goes through.
    assert (await sender.send(outbound(), None)).ok


async def test_a_sender_over_telesigns_rate_is_throttled_with_retry_after(
    fake: FakeTeleSign, http: aiohttp.ClientSession
) -> None:
    fake.limit_rate(1, retry_after=1)
    sender = sender_for(fake, http)
    first, second = await sender.send(outbound("one"), None), await sender.send(outbound("two"), None)
    assert first.ok and not first.throttled
    assert (second.outcome, second.error_code, second.http_status) == (SendOutcome.RETRY, "3204", 429)
    assert (second.throttled, second.retry_after) == (True, 1.0)
    assert [m.sms_text for m in fake.messages] == ["one"]


async def test_a_timeout_is_unknown_and_telesign_may_have_sent_it(
    fake: FakeTeleSign, http: aiohttp.ClientSession
) -> None:
    fake.delay_next(1, 1.0)
    sender = sender_for(fake, http, read_timeout_ms=200)
    result = await sender.send(outbound(message_id="our-slow"), None)
    assert (result.outcome, result.error_code) == (SendOutcome.UNKNOWN, "timeout")
    assert sender.may_have_sent("timeout")
    (sent,) = await fake.wait_for(1)  # TeleSign went on and sent it
    assert sent.external_id == "our-slow"
    # TeleSign cannot be asked by our id: the outbox sends it again.
    assert await sender.find_sent(outbound(message_id="our-slow"), since=0.0) is None


async def test_an_unreachable_or_invalid_api(
    fake: FakeTeleSign, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    result = await sender_for(fake, http, url=f"http://127.0.0.1:{unused_tcp_port}").send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.UNKNOWN, "connectionError")
    result = await sender_for(fake, http, url="http://[bad").send(outbound(), None)
    assert (result.outcome, result.error_code) == (SendOutcome.FAILED, "invalidURL")


async def test_find_sent_cannot_look_up_our_id(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    sender = sender_for(fake, http)
    assert (await sender.send(outbound(), None)).ok
    assert await sender.find_sent(outbound(), since=0.0) is None
    assert fake.status_requests == 0


# ------------------------------------------------------------------------------ callbacks over HTTP


def gateway_app(provider: TeleSignProvider, directory: Directory, events: list[Event]) -> web.Application:
    """The core's webhook steps, as far as a provider sees them."""

    async def callbacks(request: web.Request) -> web.Response:
        webhook = WebhookRequest(
            route=CALLBACKS,
            method=request.method,
            url=str(request.url),
            query=request.query,
            headers=request.headers,
            content_type=request.content_type,
            body=await request.read(),
            path_params=request.match_info,
            received_at=time.time(),
        )
        try:
            addressed = await provider.address(webhook, directory)
            verified = provider.verify(webhook, addressed)
            assert verified.replay is None
            events.extend(provider.parse(webhook, addressed))
        except InvalidRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except (UnknownTenant, WebhookRefused) as exc:
            return web.json_response({"error": str(exc)}, status=403)
        return provider.acknowledge(webhook)

    app = web.Application()
    app.router.add_route(CALLBACKS.method, CALLBACKS.path, callbacks)
    return app


async def test_the_fakes_callbacks_pass_address_verify_and_parse(
    fake: FakeTeleSign, http: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    tenant_config = tenant(fake.settings())
    provider = provider_for(tenant_config)
    events: list[Event] = []
    gateway = await aiohttp_server(gateway_app(provider, Directory([tenant_config]), events))
    url = str(gateway.make_url(f"/sms.receiver/telesign/{TENANT}"))
    sender = provider.sender(tenant_config, http)

    assert (await sender.send(outbound("", ("https://cdn.example.com/a.jpg",), message_id="our-7"), None)).ok
    (sent,) = fake.messages
    assert await fake.post_callback(http, url, fake.deliver(sent, final="mms_timeout")) == (
        200,
        '{"status": "accepted"}',
    )
    assert [(e.status, e.fallback, e.our_message_id) for e in events if isinstance(e, DeliveryStatus)] == [
        ("mms_fallback", True, "our-7"),
        ("delivered", False, "our-7"),
    ]

    events.clear()
    assert (await fake.post_callback(http, url, mo_mms(USER, texts=["a photo"], images=[IMAGE]), as_tsa=False))[
        0
    ] == 200
    assert (await fake.post_callback(http, url, mo_sms(USER, "thanks")))[0] == 200
    assert [(e.text, len(e.media), e.user_number) for e in events if isinstance(e, InboundMessage)] == [
        ("a photo", 1, USER),
        ("thanks", 0, USER),
    ]

    assert (await fake.post_callback(http, url, mo_sms(USER, "forged"), api_key=new_api_key()))[0] == 403
    assert (await fake.post_callback(http, url, b"[1]"))[0] == 400
    other = str(gateway.make_url("/sms.receiver/telesign/15550009999"))
    assert (await fake.post_callback(http, other, mo_sms(USER, "hi")))[0] == 403
    assert len(events) == 2


# ------------------------------------------------------------------------------ secrets


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as captured:
        yield captured


async def test_secrets_stay_out_of_reprs_and_logs(
    fake: FakeTeleSign, http: aiohttp.ClientSession, logs: list[MutableMapping[str, Any]]
) -> None:
    tenant_config = tenant(fake.settings(auth_method="digest"))
    provider = provider_for(tenant_config)
    sender = provider.sender(tenant_config, http)
    basic = sender_for(fake, http)
    assert (await sender.send(outbound(), None)).ok
    assert (await basic.send(outbound(), None)).ok
    fake.fail_next(1, 401)
    await basic.send(outbound(), None)
    wrong = new_api_key()
    await sender_for(fake, http, api_key=wrong, auth_method="digest").send(outbound(), None)
    await sender_for(fake, http, api_key="not base64!", auth_method="digest").send(outbound(), None)
    parse({"sub_resource": "mo_rcs", "phone_number": DEFAULT_USER_NUMBER}, tenant_config)
    with pytest.raises(WebhookRefused) as refused:
        provider.verify(signed_hook(fixture("mo_sms"), api_key=wrong), Addressed(tenant_config, {}))
    secrets = [fake.api_key, wrong, "not base64!", base64.b64encode(f"{CUSTOMER_ID}:{fake.api_key}".encode()).decode()]
    texts = [
        repr(sender),
        repr(basic),
        repr(provider),
        repr(tenant_config),
        repr(fake.settings()),
        str(refused.value),
        str(logs),
    ]
    assert not [secret for secret in secrets for text in texts if secret in text]
    assert {entry["event"] for entry in logs} == {"telesign.webhook.ignored"}  # the outbox logs sends itself
    for entry in logs:
        assert DEFAULT_USER_NUMBER not in str(entry)


# ------------------------------------------------------------------------------ the sandbox


async def test_the_sandbox_round_trip(http: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    """The sandbox's API takes what the sender sends; its callbacks pass address, verify and parse."""
    sandbox: Sandbox = TeleSignProvider.sandbox()
    assert sandbox.tenant_number == "12345"
    api = await aiohttp_server(sandbox.api())
    settings_ = sandbox.settings(str(api.make_url("")))
    assert isinstance(settings_, TeleSignConfig)
    decode_api_key(settings_.api_key)
    tenant_config = tenant(settings_, sandbox.tenant_number)
    provider = provider_for(tenant_config)
    assert provider.limits(tenant_config) == MMS_LIMITS
    events: list[Event] = []
    gateway = await aiohttp_server(gateway_app(provider, Directory([tenant_config]), events))
    gateway_url = str(gateway.make_url("")).rstrip("/")

    reply = await sandbox.send_sample_mms(http, gateway_url, sandbox.tenant_number, USER)
    assert (reply.status, reply.media_count) == (200, 1)
    assert json.loads(reply.body) == {"status": "accepted"}
    assert f"/sms.receiver/telesign/{TENANT}" in reply.description
    (message,) = events
    assert isinstance(message, InboundMessage)
    assert (message.user_number, message.tenant_number, len(message.media)) == (USER, TENANT, 1)
    assert message.text and message.media[0].content_type == "image/jpeg"

    sender = provider.sender(tenant_config, http)
    result = await sender.send(outbound("", ("https://cdn.example.com/r.jpg",), message_id="our-42"), gateway_url)
    assert result.ok and sandbox.arrived.is_set()
    (sent,) = sandbox.sent
    assert (sent.provider_message_id, sent.to, sent.from_, sent.text, sent.media_urls, sent.our_message_id) == (
        result.provider_message_id,
        USER,
        TENANT,
        "https://cdn.example.com/r.jpg",
        ("https://cdn.example.com/r.jpg",),
        "our-42",
    )
    assert isinstance(sent.shown, dict) and sent.shown["channels"][0]["channel"] == "mms"
    assert (await sender.send(outbound("just text", message_id="our-43"), None)).ok
    assert (sandbox.sent[1].text, sandbox.sent[1].media_urls) == ("just text", ())

    assert await sandbox.report_delivered(http, gateway_url, sandbox.tenant_number, sent) == 200
    report = events[-1]
    assert isinstance(report, DeliveryStatus)
    assert (report.status, report.failed, report.fallback, report.our_message_id, report.provider_message_id) == (
        "delivered",
        False,
        False,
        "our-42",
        sent.provider_message_id,
    )

    wrong = TeleSignSender(replace(settings_, api_key=new_api_key()), http, TENANT)
    assert (await wrong.send(outbound(), None)).error_code == "3400"


def test_the_sandbox_speaks_telesign() -> None:
    """Its callbacks parse as TeleSign's do, and its settings are a TeleSign tenant's."""
    sandbox = TeleSignSandbox()
    (message,) = parse(sample_mms(USER))
    assert isinstance(message, InboundMessage) and message.media[0].url.startswith("https://mms-media.example.com/")
    assert sandbox.sent == [] and sandbox.tenant_number == TENANT
    delivered = delivered_callback(SandboxMessage(REFERENCE_ID, USER, TENANT, "hi", (), {}, "our-1"))
    assert parse(delivered) == [status("delivered", our_message_id="our-1")]
