"""The fake Sinch behaves like Sinch, with the Sinch SDK (models, webhook code, client) as the reference."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sinch import SinchClient
from sinch.core.models.sinch_raw_response import SinchRawResponse
from sinch.domains.authentication.sinch_events.v1.authentication_validation import (
    calculate_sinch_event_signature,
    compute_signed_data,
)
from sinch.domains.conversation.models.v1.messages.categories.app.app_message import (
    CardAppMessage,
    MediaAppMessage,
    TextAppMessage,
)
from sinch.domains.conversation.models.v1.messages.categories.contact.contact_message import (
    MediaCardContactMessage,
    MediaContactMessage,
    TextContactMessage,
)
from sinch.domains.conversation.models.v1.messages.internal import ListMessagesResponse
from sinch.domains.conversation.models.v1.messages.internal.request.send_message_request import SendMessageRequest
from sinch.domains.conversation.models.v1.messages.response.message_response import AppMessageResponse
from sinch.domains.conversation.models.v1.messages.response.send_message_response import SendMessageResponse
from sinch.domains.conversation.models.v1.sinch_events import (
    ConversationSinchEventBase,
    MessageDeliveryReceiptEvent,
    MessageInboundEvent,
)
from sinch.domains.conversation.sinch_events.v1.conversation_sinch_event import ConversationSinchEvent

from sms_gateway.providers.sinch.settings import SinchConfig
from tests.fakes.sinch import (
    ALGORITHM_HEADER,
    DEFAULT_USER_IDENTITY,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    FakeSinch,
    SinchSent,
    delivery_report,
    inbound_event,
    serialize,
    serve_fake_sinch,
    sign_webhook,
    validate_send_message,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sinch"
USER = "+12025550143"
SENDER = "12345"
ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")

# Sinch's published webhook-signature vector (Node, Java and .NET SDK tests); the body is also
# tests/fixtures/sinch/contact_create_notification.json, byte for byte.
VECTOR_SECRET = "foo_secret1234"
VECTOR_NONCE = "01FJA8B4A7BM43YGWSG9GBV067"
VECTOR_TIMESTAMP = 1634579353
VECTOR_BODY = (
    b'{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z","project_id":"e2df3a34-a71b-4448-9db5-a8d2baad28e4",'
    b'"contact_create_notification":{"contact":{"id":"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":[{"channel":'
    b'"SMS","identity":"48123456789","app_id":""}],"display_name":"New Test Contact","email":"new.contact@email.com",'
    b'"external_id":"","metadata":"","language":"EN_US"}},"message_metadata":""}'
)
VECTOR_SIGNATURE = "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="
# The Python SDK's own vector (tests/unit/domains/conversation/v1/sinch_events/test_conversation_sinch_event.py):
# same secret, nonce and timestamp, another body.
PY_SDK_BODY = (
    b'{"app_id":"01EB37HMH1M6SV18BSNS3G135H","accepted_time":"2020-11-17T15:09:11.659Z",'
    b'"project_id":"c36f3d3d-1513-2edd-ae42-11995557ff61",'
    b'"message_delivery_report":{"message_id":"01EQBC1A3BEK731GY4YXEN0C2R",'
    b'"conversation_id":"01EPYATA64TMNZ1FV02JKF12JF","status":"QUEUED_ON_CHANNEL",'
    b'"contact_id":"01EXA07N79THJ20WSN6AS30TMW"}}'
)
PY_SDK_SIGNATURE = "Yc+3R1pIS78xLASybulhs8BsSo9BPB3Pr92QCUoczfk="


@pytest.fixture
async def fake() -> AsyncIterator[FakeSinch]:
    async with serve_fake_sinch() as served:
        yield served


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def get_token(http: aiohttp.ClientSession, fake: FakeSinch) -> str:
    async with http.post(
        fake.token_url, data={"grant_type": "client_credentials"}, headers=basic(fake.key_id, fake.key_secret)
    ) as response:
        assert response.status == 200, await response.text()
        token: str = (await response.json())["access_token"]
        return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def send(
    http: aiohttp.ClientSession, fake: FakeSinch, body: Any, token: str | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    token = token or fake.issue_token()
    async with http.post(fake.send_url, json=body, headers=bearer(token)) as response:
        return response.status, await response.json(content_type=None), response


def sdk_request(fake: FakeSinch, message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A messages:send body as the SDK itself serialises it."""
    request = SendMessageRequest(
        app_id=fake.app_id,
        recipient={
            "identified_by": {
                "channel_identities": [{"channel": "SMS", "identity": USER}, {"channel": "MMS", "identity": USER}]
            }
        },
        message=message,
        channel_priority_order=["MMS", "SMS"],
        channel_properties={"MMS_SENDER": SENDER, "SMS_SENDER": "+15550000000"},
        **extra,
    )
    body: dict[str, Any] = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def assert_sinch_error(body: Any, code: int, status: str) -> str:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    assert body["error"]["details"] == []
    message: str = body["error"]["message"]
    assert message
    return message


# ------------------------------------------------------------------------------ messages:send, accepted


CARD: dict[str, Any] = {
    "card_message": {
        "title": "Subject",
        "description": "Body text",
        "media_message": {"url": "https://cdn.example/a.jpg"},
    }
}
MESSAGES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "text_message": ({"text_message": {"text": "Hello there"}}, "Hello there", None),
    "card_message": (CARD, "Body text", "https://cdn.example/a.jpg"),
    "media_message": ({"media_message": {"url": "https://cdn.example/b.png"}}, "", "https://cdn.example/b.png"),
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
async def test_sdk_built_requests_are_accepted(fake: FakeSinch, http: aiohttp.ClientSession, kind: str) -> None:
    message, text, media_url = MESSAGES[kind]
    body = sdk_request(fake, message, message_metadata="turn-7", correlation_id="corr-1", ttl=30)
    before = time.time()
    status, answer, _ = await send(http, fake, body)
    assert status == 200, answer
    assert set(answer) == {"message_id", "accepted_time"}
    parsed = SendMessageResponse.model_validate(answer)
    assert ULID_RE.fullmatch(parsed.message_id)
    assert answer["accepted_time"].endswith("Z") and parsed.accepted_time is not None
    assert fake.arrived.is_set()
    (sent,) = fake.messages
    assert isinstance(sent, SinchSent)
    assert sent.message_id == parsed.message_id
    assert sent.body == body
    assert sent.kind == kind
    assert sent.text == text
    assert sent.media_url == media_url
    assert sent.recipient == USER  # the MMS identity, although SMS came first
    assert sent.recipient_channel == "MMS"
    assert sent.metadata == "turn-7"
    assert sent.correlation_id == "corr-1"
    assert sent.channel_properties == {"MMS_SENDER": SENDER, "SMS_SENDER": "+15550000000"}
    assert sent.channel_priority_order == ["MMS", "SMS"]
    assert before <= sent.accepted_at <= time.time()
    assert fake.request_count == 1 and fake.rejected == []


async def test_recipient_is_the_first_identity_without_mms(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    body = {
        "app_id": fake.app_id,
        "recipient": {
            "identified_by": {
                "channel_identities": [
                    {"channel": "SMS", "identity": "+15550001111"},
                    {"channel": "WHATSAPP", "identity": "+15550002222"},
                ]
            }
        },
        "message": {"text_message": {"text": "hi"}},
    }
    status, answer, _ = await send(http, fake, body)
    assert status == 200, answer
    assert (fake.messages[0].recipient, fake.messages[0].recipient_channel) == ("+15550001111", "SMS")
    assert fake.messages[0].metadata is None and fake.messages[0].channel_properties == {}


async def test_documented_limits_are_inclusive(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    card = {"card_message": {"title": "t" * 80, "media_message": {"url": "https://cdn.example/a.jpg"}}}
    body = sdk_request(fake, card, message_metadata="m" * 1024, correlation_id="c" * 128)
    status, answer, _ = await send(http, fake, body)
    assert status == 200, answer


def test_app_message_overrides_are_not_unknown_fields() -> None:
    fake = FakeSinch()
    body = sdk_request(fake, {"text_message": {"text": "hi"}})
    body["message"]["explicit_channel_message"] = {"SMS": "plain text for SMS"}
    body["message"]["agent"] = {"display_name": "Bot"}
    assert validate_send_message(body, app_id=fake.app_id) is None


async def test_wait_for(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await send(http, fake, sdk_request(fake, {"text_message": {"text": "one"}}))

    task = asyncio.create_task(later())
    (sent,) = await fake.wait_for(1, timeout=5)
    await task
    assert sent.text == "one"
    with pytest.raises(TimeoutError, match="accepted 1 message"):
        await fake.wait_for(2, timeout=0.05)


# ------------------------------------------------------------------------------ messages:send, rejected


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = body
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value

    return mutate


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        for key in keys:
            body.pop(key)

    return mutate


IDENTITIES = "recipient.identified_by.channel_identities"
MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing app_id": (_drop("app_id"), "app_id"),
    "app_id not a string": (_set("app_id", 7), "app_id"),
    "unknown app": (_set("app_id", "01HZZZZZZZZZZZZZZZZZZZZZZZ"), "unknown app"),
    "missing recipient": (_drop("recipient"), "recipient"),
    "empty recipient": (_set("recipient", {}), "recipient"),
    "contact_id recipient": (_set("recipient", {"contact_id": "01CONTACT"}), "contact_id"),
    "contact_id and identified_by": (_set("recipient.contact_id", "01CONTACT"), "only one of"),
    "no channel identities": (_set(IDENTITIES, []), "at least one"),
    "unknown channel": (_set(f"{IDENTITIES}.0.channel", "CARRIER_PIGEON"), "CARRIER_PIGEON"),
    "empty identity": (_set(f"{IDENTITIES}.0.identity", ""), "identity"),
    "missing message": (_drop("message"), "message"),
    "no message kind": (_set("message", {}), "one of"),
    "two message kinds": (_set("message.text_message", {"text": "x"}), "only one of"),
    "empty text": (_set("message", {"text_message": {"text": ""}}), "text"),
    "relative media url": (_set("message", {"media_message": {"url": "/img.png"}}), "http(s)"),
    "ftp media url": (_set("message", {"media_message": {"url": "ftp://cdn.example/a.png"}}), "http(s)"),
    "bad thumbnail url": (
        _set("message", {"media_message": {"url": "https://cdn.example/a.png", "thumbnail_url": "x.png"}}),
        "thumbnail_url",
    ),
    "bad card media url": (_set("message.card_message.media_message.url", "cdn.example/a.jpg"), "media_message.url"),
    "channel property not a string": (_set("channel_properties.MMS_STRICT_VALIDATION", True), "channel_properties"),
    "no MMS_SENDER": (_set("channel_properties", {"SMS_SENDER": "+15550000000"}), "MMS_SENDER"),
    "no MMS_SENDER, MMS by identity": (_drop("channel_priority_order", "channel_properties"), "MMS_SENDER"),
    "unknown channel in priority order": (_set("channel_priority_order", ["MMS", "FAX"]), "FAX"),
    "message_metadata too long": (_set("message_metadata", "m" * 1025), "message_metadata"),
    "correlation_id too long": (_set("correlation_id", "c" * 129), "correlation_id"),
    "card title too long for MMS": (_set("message.card_message.title", "t" * 81), "title"),
    "unknown field": (_set("channel_propertiez", {}), "channel_propertiez"),
    "unknown nested field": (_set("message.card_message.subtitle", "x"), "subtitle"),
    "python name instead of JSON name": (_set("event_destination_target", "https://gw.example/cb"), "event_dest"),
    "ttl as a number": (_set("ttl", 30), "ttl"),
    "unknown queue": (_set("queue", "URGENT"), "queue"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_requests_get_400(fake: FakeSinch, http: aiohttp.ClientSession, case: str) -> None:
    mutate, expected = MALFORMED[case]
    body = sdk_request(fake, json.loads(json.dumps(CARD)))
    mutate(body)
    status, answer, _ = await send(http, fake, body)
    assert status == 400, answer
    assert expected in assert_sinch_error(answer, 400, "INVALID_ARGUMENT")
    assert fake.messages == [] and len(fake.rejected) == 1 and fake.rejected[0].status == 400
    assert not fake.arrived.is_set()
    assert validate_send_message(body, app_id=fake.app_id) is not None  # the same verdict without HTTP


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[]", "application/json"),
        (b"app_id=x", "application/x-www-form-urlencoded"),
    ],
)
async def test_bodies_that_are_not_a_json_object_get_400(
    fake: FakeSinch, http: aiohttp.ClientSession, data: bytes, content_type: str
) -> None:
    headers = {**bearer(fake.issue_token()), "Content-Type": content_type}
    async with http.post(fake.send_url, data=data, headers=headers) as response:
        assert response.status == 400
        assert_sinch_error(await response.json(), 400, "INVALID_ARGUMENT")


async def test_unknown_project_is_404(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/v1/projects/00000000-0000-0000-0000-000000000000/messages:send"
    body = sdk_request(fake, {"text_message": {"text": "hi"}})
    async with http.post(url, json=body, headers=bearer(fake.issue_token())) as response:
        assert response.status == 404
        assert_sinch_error(await response.json(), 404, "NOT_FOUND")
    assert fake.messages == []


# ------------------------------------------------------------------------------ OAuth2 tokens


async def test_token_for_good_credentials(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    async with http.post(
        fake.token_url, data={"grant_type": "client_credentials"}, headers=basic(fake.key_id, fake.key_secret)
    ) as response:
        assert response.status == 200
        answer = await response.json()
    assert set(answer) == {"access_token", "expires_in", "scope", "token_type"}
    assert answer["expires_in"] == 3600 and answer["token_type"] == "bearer" and answer["scope"] == ""
    assert answer["access_token"] in fake.tokens
    assert fake.token_requests == 1
    body = sdk_request(fake, {"text_message": {"text": "hi"}})
    status, body, _ = await send(http, fake, body, answer["access_token"])
    assert status == 200, body


@pytest.mark.parametrize(
    "headers",
    [{}, basic(DEFAULT_USER_IDENTITY, "nope"), {"Authorization": "Basic !!!"}, {"Authorization": "Bearer abc"}],
    ids=["missing", "wrong", "garbled", "not basic"],
)
async def test_token_for_bad_credentials_is_401(
    fake: FakeSinch, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with http.post(fake.token_url, data={"grant_type": "client_credentials"}, headers=headers) as response:
        assert response.status == 401
        body = await response.json()
    assert body["error"] == "invalid_client" and body["error_description"]
    assert fake.tokens == {} and fake.token_requests == 1 and len(fake.token_errors) == 1


async def test_token_wrong_secret_is_401(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    headers = basic(fake.key_id, fake.key_secret + "x")
    async with http.post(fake.token_url, data={"grant_type": "client_credentials"}, headers=headers) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": {"grant_type": "password"}}, "unsupported_grant_type"),
        ({"data": {"scope": "x"}}, "invalid_request"),
        ({"json": {"grant_type": "client_credentials"}}, "invalid_request"),
    ],
    ids=["wrong grant", "no grant", "json body"],
)
async def test_token_bad_request_is_400(
    fake: FakeSinch, http: aiohttp.ClientSession, kwargs: dict[str, Any], error: str
) -> None:
    async with http.post(fake.token_url, headers=basic(fake.key_id, fake.key_secret), **kwargs) as response:
        assert response.status == 400
        assert (await response.json())["error"] == error
    assert fake.tokens == {}


async def test_expired_token_is_401_with_expired_challenge_then_a_new_token_works(
    fake: FakeSinch, http: aiohttp.ClientSession
) -> None:
    body = sdk_request(fake, {"text_message": {"text": "hi"}})
    old = await get_token(http, fake)
    fake.expire_tokens()
    status, answer, response = await send(http, fake, body, old)
    assert status == 401
    assert_sinch_error(answer, 401, "UNAUTHENTICATED")
    assert "expired" in response.headers["WWW-Authenticate"]
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    new = await get_token(http, fake)
    status, answer, _ = await send(http, fake, body, new)
    assert status == 200, answer
    assert len(fake.messages) == 1 and fake.token_requests == 2


async def test_tokens_expire_after_their_lifetime(http: aiohttp.ClientSession) -> None:
    async with serve_fake_sinch(FakeSinch(token_lifetime=0)) as fake:
        async with http.post(
            fake.token_url, data={"grant_type": "client_credentials"}, headers=basic(fake.key_id, fake.key_secret)
        ) as response:
            answer = await response.json()
        assert answer["expires_in"] == 0
        body = sdk_request(fake, {"text_message": {"text": "hi"}})
        status, _, response = await send(http, fake, body, answer["access_token"])
        assert status == 401 and "expired" in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer never-issued"}, {"Authorization": "Bearer "}],
    ids=["missing", "unknown", "empty"],
)
async def test_unknown_or_missing_token_is_401_without_expired(
    fake: FakeSinch, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    async with http.post(fake.send_url, json=sdk_request(fake, CARD), headers=headers) as response:
        assert response.status == 401
        assert_sinch_error(await response.json(), 401, "UNAUTHENTICATED")
        assert "expired" not in response.headers.get("WWW-Authenticate", "")
    assert fake.messages == [] and fake.request_count == 1


async def test_basic_auth_on_the_api_only_when_allowed(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    body = sdk_request(fake, CARD)
    async with http.post(fake.send_url, json=body, headers=basic(fake.key_id, fake.key_secret)) as response:
        assert response.status == 401
    fake.allow_basic_auth = True
    async with http.post(fake.send_url, json=body, headers=basic(fake.key_id, fake.key_secret)) as response:
        assert response.status == 200
    async with http.post(fake.send_url, json=body, headers=basic(fake.key_id, "wrong")) as response:
        assert response.status == 401


async def test_scripted_token_failures(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.fail_tokens_next(1, 503, retry_after=2)
    async with http.post(
        fake.token_url, data={"grant_type": "client_credentials"}, headers=basic(fake.key_id, fake.key_secret)
    ) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "2"
        assert (await response.json())["error"] == "temporarily_unavailable"
    await get_token(http, fake)
    assert fake.token_requests == 2


# ------------------------------------------------------------------------------ scripted failures


async def test_fail_next_with_retry_after(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.fail_next(2, 429, message="Too many requests", retry_after=3)
    body = sdk_request(fake, CARD)
    for _ in range(2):
        status, answer, response = await send(http, fake, body)
        assert status == 429
        assert assert_sinch_error(answer, 429, "RESOURCE_EXHAUSTED") == "Too many requests"
        assert response.headers["Retry-After"] == "3"
    status, answer, _ = await send(http, fake, body)
    assert status == 200, answer
    assert fake.request_count == 3 and len(fake.rejected) == 2 and len(fake.messages) == 1


@pytest.mark.parametrize(
    ("status", "rpc"),
    [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ],
)
async def test_fail_next_default_statuses(fake: FakeSinch, http: aiohttp.ClientSession, status: int, rpc: str) -> None:
    fake.fail_next(1, status)
    got, answer, response = await send(http, fake, sdk_request(fake, CARD))
    assert got == status
    assert_sinch_error(answer, status, rpc)
    assert "Retry-After" not in response.headers


async def test_fail_next_overrides(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, 503, sinch_status="UNKNOWN", message="maintenance")
    fake.fail_next(1, 502, raw_body="<html>Bad Gateway</html>")
    status, answer, _ = await send(http, fake, sdk_request(fake, CARD))
    assert (status, answer["error"]["status"], answer["error"]["message"]) == (503, "UNKNOWN", "maintenance")
    async with http.post(fake.send_url, json=sdk_request(fake, CARD), headers=bearer(fake.issue_token())) as response:
        assert response.status == 502
        assert response.content_type == "text/html"
        assert await response.text() == "<html>Bad Gateway</html>"


async def test_delay_next_provokes_a_client_timeout_but_still_sends(
    fake: FakeSinch, http: aiohttp.ClientSession
) -> None:
    fake.delay_next(1, 0.5)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            fake.send_url,
            json=sdk_request(fake, CARD),
            headers=bearer(fake.issue_token()),
            timeout=aiohttp.ClientTimeout(total=0.1),
        ):
            pass
    (sent,) = await fake.wait_for(1, timeout=5)
    assert sent.kind == "card_message"


# ------------------------------------------------------------------------------ ListMessages


async def list_messages(http: aiohttp.ClientSession, fake: FakeSinch, **params: Any) -> tuple[int, Any]:
    url = f"{fake.base_url}/v1/projects/{fake.project_id}/messages"
    async with http.get(url, params=params, headers=bearer(fake.issue_token())) as response:
        return response.status, await response.json()


async def send_some(http: aiohttp.ClientSession, fake: FakeSinch) -> list[SinchSent]:
    messages = [MESSAGES["text_message"][0], CARD, MESSAGES["media_message"][0]]
    for index, message in enumerate(messages):
        status, answer, _ = await send(http, fake, sdk_request(fake, message, message_metadata=f"m{index}"))
        assert status == 200, answer
    return list(fake.messages)


async def test_list_messages_validates_with_the_sdk_model(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sent = await send_some(http, fake)
    status, answer = await list_messages(http, fake, messages_source="DISPATCH_SOURCE")
    assert status == 200, answer
    parsed = ListMessagesResponse.model_validate(answer)  # request policy: no silent raw fallback
    assert parsed.messages is not None and len(parsed.messages) == 3
    expected_types = [MediaAppMessage, CardAppMessage, TextAppMessage]  # newest first
    for item, original, app_type in zip(parsed.messages, reversed(sent), expected_types, strict=True):
        assert isinstance(item, AppMessageResponse)
        assert isinstance(item.app_message, app_type)
        assert item.id == original.message_id
        assert item.direction == "TO_CONTACT"
        assert item.metadata == original.metadata
        assert item.processing_mode == "DISPATCH"
        assert item.channel_identity is not None
        assert (item.channel_identity.channel, item.channel_identity.identity) == ("MMS", USER)
        assert item.channel_identity.app_id == fake.app_id
        assert item.accept_time is not None
    assert answer["next_page_token"] == ""


async def test_list_messages_source_follows_the_processing_mode(http: aiohttp.ClientSession) -> None:
    async with serve_fake_sinch() as fake:
        await send_some(http, fake)
        assert (await list_messages(http, fake))[1]["messages"] == []  # default: CONVERSATION_SOURCE
        assert len((await list_messages(http, fake, messages_source="DISPATCH_SOURCE"))[1]["messages"]) == 3
    async with serve_fake_sinch(FakeSinch(processing_mode="CONVERSATION")) as fake:
        await send_some(http, fake)
        body = sdk_request(fake, CARD, processing_strategy="DISPATCH_ONLY")
        assert (await send(http, fake, body))[0] == 200
        assert len((await list_messages(http, fake))[1]["messages"]) == 3
        assert len((await list_messages(http, fake, messages_source="CONVERSATION_SOURCE"))[1]["messages"]) == 3
        dispatched = (await list_messages(http, fake, messages_source="DISPATCH_SOURCE"))[1]["messages"]
        assert [item["id"] for item in dispatched] == [fake.messages[-1].message_id]


async def test_list_messages_filters(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    sent = await send_some(http, fake)
    await asyncio.sleep(0.01)
    other = sdk_request(fake, CARD)
    other["recipient"] = {"identified_by": {"channel_identities": [{"channel": "MMS", "identity": "+15557654321"}]}}
    assert (await send(http, fake, other))[0] == 200
    dispatch = {"messages_source": "DISPATCH_SOURCE"}

    async def ids(**params: Any) -> list[str]:
        status, answer = await list_messages(http, fake, **dispatch, **params)
        assert status == 200, answer
        return [item["id"] for item in answer["messages"]]

    everything = [item.message_id for item in reversed(fake.messages)]
    assert await ids() == everything
    assert await ids(channel_identity="1 (202) 555-0143") == [item.message_id for item in reversed(sent)]
    assert await ids(channel_identity="15557654321") == [fake.messages[-1].message_id]
    assert await ids(app_id=fake.app_id) == everything
    assert await ids(app_id="01HZZZZZZZZZZZZZZZZZZZZZZZ") == []
    assert await ids(start_time=fake.messages[-1].accepted_time) == [fake.messages[-1].message_id]
    assert await ids(start_time="2000-01-01T00:00:00Z") == everything
    assert await ids(start_time="2999-01-01T00:00:00Z") == []
    assert await ids(direction="TO_CONTACT") == everything
    assert await ids(direction="TO_APP") == []
    assert await ids(channel="SMS") == []
    status, answer = await list_messages(http, fake, **dispatch, view="WITHOUT_METADATA")
    assert all("metadata" not in item for item in answer["messages"])
    for bad in ({"direction": "SIDEWAYS"}, {"start_time": "yesterday"}, {"messages_source": "X"}, {"page_size": "x"}):
        status, answer = await list_messages(http, fake, **{**dispatch, **bad})
        assert status == 400, bad
        assert_sinch_error(answer, 400, "INVALID_ARGUMENT")


async def test_list_messages_pages(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    for index in range(5):
        assert (await send(http, fake, sdk_request(fake, {"text_message": {"text": f"t{index}"}})))[0] == 200
    expected = [item.message_id for item in reversed(fake.messages)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params: dict[str, Any] = {"messages_source": "DISPATCH_SOURCE", "page_size": 2}
        if token:
            params["page_token"] = token
        status, answer = await list_messages(http, fake, **params)
        assert status == 200, answer
        ListMessagesResponse.model_validate(answer)
        seen += [item["id"] for item in answer["messages"]]
        pages += 1
        token = answer["next_page_token"]
        if not token:
            break
    assert seen == expected and pages == 3
    status, answer = await list_messages(http, fake, messages_source="DISPATCH_SOURCE")
    assert len(answer["messages"]) == 5  # default page size 10
    status, answer = await list_messages(http, fake, messages_source="DISPATCH_SOURCE", page_size=5000)
    assert status == 200 and len(answer["messages"]) == 5  # capped at 1000, not refused
    status, answer = await list_messages(http, fake, messages_source="DISPATCH_SOURCE", page_token="garbage")
    assert status == 400


async def test_list_and_get_need_a_token(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{fake.base_url}/v1/projects/{fake.project_id}/messages") as response:
        assert response.status == 401


async def test_get_message(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    (sent, *_) = await send_some(http, fake)
    url = f"{fake.base_url}/v1/projects/{fake.project_id}/messages/{sent.message_id}"
    headers = bearer(fake.issue_token())
    async with http.get(url, params={"messages_source": "DISPATCH_SOURCE"}, headers=headers) as response:
        assert response.status == 200
        item = AppMessageResponse.model_validate(await response.json())
    assert item.id == sent.message_id and isinstance(item.app_message, TextAppMessage)
    async with http.get(url + "X", params={"messages_source": "DISPATCH_SOURCE"}, headers=headers) as response:
        assert response.status == 404


# ------------------------------------------------------------------------------ the SDK's own client


async def test_the_sdk_client_sends_refreshes_its_token_and_lists(fake: FakeSinch) -> None:
    client = SinchClient(
        key_id=fake.key_id, key_secret=fake.key_secret, project_id=fake.project_id, conversation_region="us"
    )
    client.configuration.auth_origin = fake.base_url
    client.configuration.conversation_origin = fake.base_url
    messages = client.conversation.messages

    def send_text(text: str) -> Any:
        return messages.send_text_message(
            app_id=fake.app_id,
            text=text,
            recipient_identities=[{"channel": "MMS", "identity": USER}],
            channel_properties={"MMS_SENDER": SENDER},
            message_metadata="sdk",
        )

    first = await asyncio.to_thread(send_text, "one")
    fake.expire_tokens()
    second = await asyncio.to_thread(send_text, "two")  # 401 "token expired" -> new token -> retried
    assert [sent.message_id for sent in fake.messages] == [first.message_id, second.message_id]
    assert [sent.text for sent in fake.messages] == ["one", "two"]
    assert fake.token_requests == 2
    assert [error.status for error in fake.rejected] == [401]
    page = await asyncio.to_thread(messages.list, messages_source="DISPATCH_SOURCE", page_size=1)
    listed = await asyncio.to_thread(lambda: [item.id for item in page.iterator()])
    assert listed == [second.message_id, first.message_id]


# ------------------------------------------------------------------------------ fixtures and builders


def parse(body: bytes | dict[str, Any]) -> Any:
    return ConversationSinchEvent(VECTOR_SECRET).parse_event(body)


INBOUND_FIXTURES = {
    "message_inbound_text.json": TextContactMessage,
    "message_inbound_media.json": MediaContactMessage,
    "message_inbound_media_card.json": MediaCardContactMessage,
}
DELIVERY_FIXTURES = {
    "message_delivery_delivered.json": ("DELIVERED", None),
    "message_delivery_failed.json": ("FAILED", "OUTSIDE_ALLOWED_SENDING_WINDOW"),
    "message_delivery_switching_channel.json": ("SWITCHING_CHANNEL", "RECIPIENT_NOT_REACHABLE"),
}


def test_every_fixture_is_covered() -> None:
    names = {path.name for path in FIXTURES.glob("*.json")}
    assert names == {*INBOUND_FIXTURES, *DELIVERY_FIXTURES, "contact_create_notification.json"}


@pytest.mark.parametrize("name", sorted(INBOUND_FIXTURES))
def test_inbound_fixtures_parse(name: str) -> None:
    event = parse((FIXTURES / name).read_bytes())
    assert isinstance(event, MessageInboundEvent)
    assert isinstance(event.message.contact_message, INBOUND_FIXTURES[name])
    assert event.message.channel_identity is not None
    assert (event.message.channel_identity.channel, event.message.channel_identity.identity) == ("MMS", "12025550143")
    assert event.message.direction == "TO_APP"


@pytest.mark.parametrize("name", sorted(DELIVERY_FIXTURES))
def test_delivery_fixtures_parse(name: str) -> None:
    status, code = DELIVERY_FIXTURES[name]
    event = parse((FIXTURES / name).read_bytes())
    assert isinstance(event, MessageDeliveryReceiptEvent)
    report = event.message_delivery_report
    assert report.status == status
    assert report.channel_identity is not None and report.channel_identity.channel == "MMS"
    if code is None:
        assert report.reason is None
    else:
        assert report.reason is not None and report.reason.code == code and report.reason.description


def test_contact_create_fixture_is_the_vector_body_and_parses() -> None:
    raw = (FIXTURES / "contact_create_notification.json").read_bytes()
    assert raw == VECTOR_BODY  # byte for byte: no trailing newline
    event = parse(raw)
    assert type(event) is ConversationSinchEventBase  # not a message event
    assert event.project_id == "e2df3a34-a71b-4448-9db5-a8d2baad28e4"


def key_paths(node: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON object, to compare shapes without values."""
    paths: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | key_paths(value, path)
    return paths


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("message_inbound_text.json", {"text": "Hi from contact"}),
        ("message_inbound_media.json", {"media_url": "https://cdn.example/a.png"}),
        ("message_inbound_media_card.json", {"media_url": "https://cdn.example/a.png", "caption": "caption text"}),
    ],
)
def test_inbound_builder_matches_the_fixture_shape_and_parses(name: str, kwargs: dict[str, Any]) -> None:
    payload = inbound_event("01E3S8B6YCMRNR0GGM94H80ACX", "12025550143", **kwargs)
    assert key_paths(payload) == key_paths(fixture(name))
    event = parse(serialize(payload))
    assert isinstance(event, MessageInboundEvent)
    assert isinstance(event.message.contact_message, INBOUND_FIXTURES[name])
    assert ULID_RE.fullmatch(event.message.id or "")


def test_inbound_builder_details() -> None:
    card = inbound_event(
        "APP", USER, text="look", media_url="https://cdn.example/a.png", message_id="01ID", sender_id=SENDER
    )
    assert card["message"]["contact_message"] == {
        "media_card_message": {"url": "https://cdn.example/a.png", "caption": "look"}
    }
    assert card["message"]["id"] == "01ID" and card["message"]["sender_id"] == SENDER
    assert card["message"]["channel_identity"] == {"channel": "MMS", "identity": USER, "app_id": ""}
    sms = inbound_event("APP", USER, text="hi", channel="SMS")
    assert sms["message"]["channel_identity"]["channel"] == "SMS"
    event = parse(serialize(card))
    assert isinstance(event.message.contact_message, MediaCardContactMessage)
    with pytest.raises(ValueError):
        inbound_event("APP", USER)
    with pytest.raises(ValueError):
        inbound_event("APP", USER, text="x", caption="y")


@pytest.mark.parametrize(
    ("name", "status", "kwargs"),
    [
        ("message_delivery_delivered.json", "DELIVERED", {}),
        ("message_delivery_switching_channel.json", "SWITCHING_CHANNEL", {"reason_code": "RECIPIENT_NOT_REACHABLE"}),
    ],
)
def test_delivery_builder_matches_the_fixture_shape_and_parses(name: str, status: str, kwargs: dict[str, Any]) -> None:
    payload = delivery_report("APP", "01MSG", status, metadata="turn-1", **kwargs)
    assert key_paths(payload) == key_paths(fixture(name))
    event = parse(serialize(payload))
    assert isinstance(event, MessageDeliveryReceiptEvent)
    assert event.message_delivery_report.status == status
    assert event.message_delivery_report.metadata == "turn-1"


def test_failed_delivery_builder_covers_the_fixture_shape() -> None:
    payload = delivery_report(
        "APP", "01MSG", "FAILED", reason_code="MEDIA_NOT_REACHABLE", reason_description="media unreachable"
    )
    assert key_paths(fixture("message_delivery_failed.json")) <= key_paths(payload)
    event = parse(serialize(payload))
    reason = event.message_delivery_report.reason
    assert (reason.code, reason.description, reason.sub_code) == (
        "MEDIA_NOT_REACHABLE",
        "media unreachable",
        "UNSPECIFIED_SUB_CODE",
    )
    assert delivery_report("APP", "01MSG", "FAILED")["message_delivery_report"]["reason"]["code"] == "UNKNOWN"
    assert "reason" not in delivery_report("APP", "01MSG", "DELIVERED")["message_delivery_report"]


async def test_deliver_reports_on_a_sent_message(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    body = sdk_request(fake, CARD, message_metadata="turn-9", correlation_id="c-9")
    assert (await send(http, fake, body))[0] == 200
    (sent,) = fake.messages
    payload = fake.deliver(sent, "FAILED", reason_code="RECIPIENT_NOT_REACHABLE", reason_description="gone")
    event = parse(serialize(payload))
    assert isinstance(event, MessageDeliveryReceiptEvent)
    report = event.message_delivery_report
    assert (report.message_id, report.status, report.metadata) == (sent.message_id, "FAILED", "turn-9")
    assert report.channel_identity is not None and report.channel_identity.identity == USER
    assert (event.app_id, event.project_id, event.correlation_id) == (fake.app_id, fake.project_id, "c-9")
    assert report.reason is not None and report.reason.code == "RECIPIENT_NOT_REACHABLE"
    assert not isinstance(report.reason, SinchRawResponse)


# ------------------------------------------------------------------------------ signatures and posting


def test_signature_reproduces_sinchs_published_vector() -> None:
    headers = sign_webhook(VECTOR_SECRET, VECTOR_BODY, nonce=VECTOR_NONCE, timestamp=VECTOR_TIMESTAMP)
    assert headers == {
        SIGNATURE_HEADER: VECTOR_SIGNATURE,
        NONCE_HEADER: VECTOR_NONCE,
        TIMESTAMP_HEADER: str(VECTOR_TIMESTAMP),
        ALGORITHM_HEADER: "HmacSHA256",
    }
    signed = compute_signed_data(VECTOR_BODY.decode(), VECTOR_NONCE, str(VECTOR_TIMESTAMP))
    assert calculate_sinch_event_signature(signed, VECTOR_SECRET) == VECTOR_SIGNATURE
    assert ConversationSinchEvent(VECTOR_SECRET).validate_authentication_header(headers, VECTOR_BODY)
    assert not ConversationSinchEvent("other secret").validate_authentication_header(headers, VECTOR_BODY)


def test_signature_reproduces_the_python_sdk_vector() -> None:
    headers = sign_webhook(VECTOR_SECRET, PY_SDK_BODY, nonce=VECTOR_NONCE, timestamp=VECTOR_TIMESTAMP)
    assert headers[SIGNATURE_HEADER] == PY_SDK_SIGNATURE


def test_signature_defaults_and_algorithms() -> None:
    before = int(time.time())
    headers = sign_webhook("s", b"{}")
    assert ULID_RE.fullmatch(headers[NONCE_HEADER])
    assert before <= int(headers[TIMESTAMP_HEADER]) <= time.time()
    assert ConversationSinchEvent("s").validate_authentication_header(headers, b"{}")
    sha512 = sign_webhook("s", b"{}", nonce="n", timestamp=1, algorithm="HmacSHA512")
    assert len(base64.b64decode(sha512[SIGNATURE_HEADER])) == 64
    assert sha512[ALGORITHM_HEADER] == "HmacSHA512"


async def test_post_webhook_signs_the_exact_bytes_it_sends(fake: FakeSinch, http: aiohttp.ClientSession) -> None:
    received: list[tuple[bytes, dict[str, str]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=202, text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        payload = inbound_event(fake.app_id, "12025550143", text="héllo ✓", project_id=fake.project_id)
        status, text = await fake.post_webhook(http, f"http://{host}:{port}/hook", payload, nonce="N1", timestamp=42)
    finally:
        await runner.cleanup()
    assert (status, text) == (202, "ok")
    ((raw, headers),) = received
    assert raw == serialize(payload)
    assert headers["Content-Type"] == "application/json"
    assert headers[NONCE_HEADER] == "N1" and headers[TIMESTAMP_HEADER] == "42"
    lowered = {key.lower(): value for key, value in headers.items()}
    assert ConversationSinchEvent(fake.webhook_secret).validate_authentication_header(lowered, raw)
    event = parse(raw)
    assert isinstance(event, MessageInboundEvent) and event.message.contact_message.text_message.text == "héllo ✓"


# ------------------------------------------------------------------------------ settings


async def test_settings_point_at_the_fake(fake: FakeSinch) -> None:
    config = fake.settings(mms_sender=SENDER)
    assert isinstance(config, SinchConfig)
    assert config.api_base == fake.base_url
    assert config.auth_url == f"{fake.base_url}/oauth2/token"
    assert (config.project_id, config.app_id, config.key_id, config.key_secret) == (
        fake.project_id,
        fake.app_id,
        fake.key_id,
        fake.key_secret,
    )
    assert config.webhook_secret == fake.webhook_secret and config.mms_sender == SENDER


def test_settings_need_a_serving_fake() -> None:
    with pytest.raises(RuntimeError):
        FakeSinch().settings()
