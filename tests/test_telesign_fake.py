"""The fake TeleSign behaves like TeleSign, with TeleSign's SDKs (`telesign`, `telesignenterprise`) as the reference."""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from telesign.rest import RestClient
from telesign.util import verify_telesign_callback_signature
from telesignenterprise.messaging import MessagingClient

from sms_gateway.providers.telesign.settings import TeleSignConfig
from tests.fakes.serving import served
from tests.fakes.telesign import (
    DEFAULT_SHORT_CODE,
    FakeTeleSign,
    Outcome,
    TeleSignSent,
    basic_authorization,
    delivery_callback,
    delivery_callback_schema,
    digest_headers,
    mo_mms,
    mo_mms_schema,
    mo_sms,
    mo_sms_schema,
    request_schema,
    response_schema,
    serialize,
    serve_fake_telesign,
    sign_callback,
    status_schema,
    validate_omnichannel,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "telesign"
REFERENCE_RE = re.compile(r"[0-9A-F]{32}")
LEGACY_TS_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}")
RFC3339_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
USER = "15558675309"
LONG_CODE = "15550000000"

# TeleSign's callback-signature vector (python_telesign test/test_util.py); the key's dashes are not base64,
# the SDK's b64decode skips them.
VECTOR_KEY = "EXAMPLE----TE8sTgg45yusumoN6BYsBVkh+yRJ5czgsnCehZaOYldPJdmFh6NeX8kunZ2zU1YWaUw/0wV6xfw=="
VECTOR_BODY = "{'test': 123}"
VECTOR_SIGNATURE = "B97g3N9lPdVaptvifxRau7bzVAC5hhRBZ6HKXABN744="


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture
async def fake() -> AsyncIterator[FakeTeleSign]:
    async with serve_fake_telesign() as served_fake:
        yield served_fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def request_body(**changes: Any) -> dict[str, Any]:
    """TeleSign's MMS example request (tests/fixtures/telesign/omnichannel_request_mms.json), changed."""
    body: dict[str, Any] = fixture("omnichannel_request_mms")
    body.update(changes)
    return body


def basic(fake: FakeTeleSign, api_key: str | None = None) -> dict[str, str]:
    return {"Authorization": basic_authorization(fake.customer_id, fake.api_key if api_key is None else api_key)}


async def post(
    http: aiohttp.ClientSession,
    fake: FakeTeleSign,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    data = json.dumps(body).encode() if raw is None else raw
    sent_headers = {"Content-Type": "application/json", **(basic(fake) if headers is None else headers)}
    async with http.post(fake.send_url, data=data, headers=sent_headers) as response:
        return response.status, await response.json(content_type=None), response


async def get_status(
    http: aiohttp.ClientSession, fake: FakeTeleSign, reference_id: str, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with http.get(fake.status_url(reference_id), headers=basic(fake) if headers is None else headers) as r:
        return r.status, await r.json(content_type=None)


def signed(fake: FakeTeleSign, body: str, **kwargs: Any) -> dict[str, str]:
    return digest_headers(fake.customer_id, fake.api_key, "POST", "/v1/omnichannel", body, **kwargs)


def error_codes(body: Any) -> list[int]:
    return [error["code"] for error in body["errors"]]


def assert_validates(schema: dict[str, Any], instance: Any) -> None:
    jsonschema.Draft7Validator(schema).validate(instance)


def sdk_client(fake: FakeTeleSign, auth_method: str | None, api_key: str | None = None) -> MessagingClient:
    assert fake.base_url is not None
    return MessagingClient(
        fake.customer_id,
        fake.api_key if api_key is None else api_key,
        rest_endpoint=fake.base_url,
        auth_method=auth_method,
    )


async def sdk_call(client: RestClient, call: Callable[[], Any]) -> Any:
    """The SDK is synchronous (requests): run it in a thread, then close its session."""
    try:
        return await asyncio.to_thread(call)
    finally:
        client.session.close()


# ------------------------------------------------------------------------------ the SDK's requests


@pytest.mark.parametrize("auth_method", ["Basic", None], ids=["basic", "digest"])
async def test_sdk_omni_message_is_accepted(fake: FakeTeleSign, auth_method: str | None) -> None:
    client = sdk_client(fake, auth_method)
    response = await sdk_call(client, lambda: client.omniMessage(request_body(external_id="gw-1")))
    assert response.status_code == 200, response.body
    assert response.json["status"] == {"code": 3001, "description": "Message in progress"}
    assert REFERENCE_RE.fullmatch(response.json["reference_id"])
    assert response.json["external_id"] == "gw-1"
    assert_validates(response_schema(200), response.json)
    assert set(response.json) == set(fixture("omnichannel_response_accepted"))
    (sent,) = fake.messages
    assert sent.reference_id == response.json["reference_id"]
    assert sent.phone_number == USER  # from the deprecated top-level phone_number of TeleSign's example
    assert sent.channels == ["mms", "sms"]
    assert sent.fallback_time == 600
    assert (sent.mms_template, sent.mms_url) == ("image", "https://acme.co/summer_deals.png")
    assert sent.sms_text == "All purchases today are 20% off!"
    assert (sent.message_type, sent.external_id, sent.sender_id) == ("MKT", "gw-1", None)
    assert sent.mms_supported  # no sender_id: the account's default sender, a short code
    assert fake.arrived.is_set()
    if auth_method is None:
        assert len(fake.nonces) == 1


@pytest.mark.parametrize("auth_method", ["Basic", None], ids=["basic", "digest"])
async def test_sdk_status_get(fake: FakeTeleSign, auth_method: str | None) -> None:
    client = sdk_client(fake, auth_method)
    response = await sdk_call(client, lambda: client.omniMessage(request_body()))
    reference_id = response.json["reference_id"]
    (sent,) = await fake.wait_for(1)

    client = sdk_client(fake, auth_method)
    status = await sdk_call(client, lambda: client.get(f"/v1/omnichannel/{reference_id}"))
    assert status.status_code == 200, status.body
    assert_validates(status_schema(200), status.json)
    assert status.json["status"]["code"] == 3001
    assert status.json["status"]["last_channel"] == "mms"
    assert status.json["channel_status"] == [
        {
            "mms": {
                "code": 3001,
                "description": "Message in progress",
                "updated_on": status.json["status"]["updated_on"],
            }
        }
    ]
    assert status.json["external_id"] is None

    callback = fake.deliver(sent, "mms_timeout")
    client = sdk_client(fake, auth_method)
    status = await sdk_call(client, lambda: client.get(f"/v1/omnichannel/{reference_id}"))
    assert_validates(status_schema(200), status.json)
    assert status.json["status"] == callback["status"]
    assert status.json["channel_status"] == callback["channel_status"]
    assert status.json["status"]["last_channel"] == "sms"
    assert fake.status_requests == 2


async def test_sdk_with_a_wrong_key_is_refused(fake: FakeTeleSign) -> None:
    wrong = base64.b64encode(b"not the key" * 6).decode()
    for auth_method, codes in (("Basic", [10022]), (None, [10008, -30006])):
        client = sdk_client(fake, auth_method, api_key=wrong)
        response = await sdk_call(client, functools.partial(client.omniMessage, request_body()))
        assert response.status_code == 401
        assert response.json["status"] == {"code": 3400, "description": "Not authorized"}
        assert error_codes(response.json) == codes
        assert_validates(response_schema(401), response.json)
    assert fake.messages == []


# ------------------------------------------------------------------------------ Digest signing


@pytest.mark.parametrize("api_key", ["fake", VECTOR_KEY], ids=["random-key", "sdk-example-key"])
def test_digest_headers_equal_the_sdks(api_key: str) -> None:
    key = FakeTeleSign().api_key if api_key == "fake" else api_key
    date, nonce = "Tue, 31 Jan 2024 11:36:42 GMT", "0f3c9e4a-7b1d-4c2e-9a8f-6d5e4c3b2a10"
    body = json.dumps(request_body())
    ours = digest_headers("CUSTOMER-ID", key, "POST", "/v1/omnichannel", body, date=date, nonce=nonce)
    theirs = RestClient.generate_telesign_headers(
        "CUSTOMER-ID",
        key,
        "POST",
        "/v1/omnichannel",
        body,
        date_rfc2616=date,
        nonce=nonce,
        content_type="application/json",
    )
    assert ours == theirs
    ours = digest_headers("CUSTOMER-ID", key, "GET", "/v1/omnichannel/" + "A" * 32, date=date, nonce=nonce)
    theirs = RestClient.generate_telesign_headers(
        "CUSTOMER-ID", key, "GET", "/v1/omnichannel/" + "A" * 32, "", date_rfc2616=date, nonce=nonce
    )
    assert ours == theirs


async def test_digest_request_is_accepted_and_its_nonce_remembered(
    fake: FakeTeleSign, http: aiohttp.ClientSession
) -> None:
    body = json.dumps(request_body())
    headers = signed(fake, body)
    status, answer, _ = await post(http, fake, raw=body.encode(), headers=headers)
    assert status == 200, answer
    status, answer, _ = await post(http, fake, raw=body.encode(), headers=headers)  # a replay
    assert status == 401
    assert answer["status"]["code"] == 3400
    assert error_codes(answer) == [10002, -30012]
    assert len(fake.messages) == 1


async def test_date_within_fifteen_minutes_is_accepted(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    body = json.dumps(request_body())
    for offset in (-14 * 60, 14 * 60):
        headers = signed(fake, body, date=formatdate(time.time() + offset, usegmt=True))
        status, answer, _ = await post(http, fake, raw=body.encode(), headers=headers)
        assert status == 200, answer


def _digest_cases() -> list[Any]:
    def tampered(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.replace("20%", "90%").encode(), signed(fake, body)

    def stale(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), signed(fake, body, date=formatdate(time.time() - 16 * 60, usegmt=True))

    def future(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), signed(fake, body, date=formatdate(time.time() + 16 * 60, usegmt=True))

    def wrong_key(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        other = FakeTeleSign().api_key
        return body.encode(), digest_headers(fake.customer_id, other, "POST", "/v1/omnichannel", body)

    def wrong_resource(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), digest_headers(fake.customer_id, fake.api_key, "POST", "/v1/messaging", body)

    def wrong_customer(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), digest_headers("SOMEONE-ELSE", fake.api_key, "POST", "/v1/omnichannel", body)

    def bad_date(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), signed(fake, body, date="yesterday")

    def no_date(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        headers = signed(fake, body)
        del headers["Date"]
        return body.encode(), headers

    def auth_method(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), {**signed(fake, body), "x-ts-auth-method": "HMAC-SHA1"}

    def short_nonce(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), signed(fake, body, nonce="1")

    def no_colon(fake: FakeTeleSign, body: str) -> tuple[bytes, dict[str, str]]:
        return body.encode(), {**signed(fake, body), "Authorization": "TSA nocolonhere"}

    return [
        pytest.param(tampered, [10008, -30006], id="tampered-body"),
        pytest.param(stale, [10004, -30010], id="stale-date"),
        pytest.param(future, [10004, -30010], id="future-date"),
        pytest.param(wrong_key, [10008, -30006], id="wrong-key"),
        pytest.param(wrong_resource, [10008, -30006], id="signed-for-another-resource"),
        pytest.param(wrong_customer, [10015, -30000], id="wrong-customer"),
        pytest.param(bad_date, [10005, -30009], id="date-not-rfc822"),
        pytest.param(no_date, [10007, -30007], id="no-date"),
        pytest.param(auth_method, [10006, -30008], id="auth-method"),
        pytest.param(short_nonce, [10003, -30011], id="nonce-too-short"),
        pytest.param(no_colon, [10028, -30005], id="malformed-tsa"),
    ]


@pytest.mark.parametrize(("make", "codes"), _digest_cases())
async def test_digest_failures_are_refused(
    fake: FakeTeleSign,
    http: aiohttp.ClientSession,
    make: Callable[[FakeTeleSign, str], tuple[bytes, dict[str, str]]],
    codes: list[int],
) -> None:
    raw, headers = make(fake, json.dumps(request_body(external_id="ext-9")))
    status, answer, _ = await post(http, fake, raw=raw, headers=headers)
    assert status == 401, answer
    assert answer["status"] == {"code": 3400, "description": "Not authorized"}
    assert error_codes(answer) == codes
    assert answer["reference_id"] is None
    assert answer["external_id"] == "ext-9"
    assert_validates(response_schema(401), answer)
    if codes[0] == 10008:
        assert answer["signature_string"].startswith("POST\napplication/json\n")
    assert fake.messages == [] and fake.nonces == {}


@pytest.mark.parametrize(
    ("authorization", "codes"),
    [
        (None, [10009, -30004]),
        ("Basic !!!not-base64", [10028, -30005]),
        ("Basic " + base64.b64encode(b"no-colon").decode(), [10028, -30005]),
        ("Bearer abc", [10028, -30005]),
    ],
    ids=["missing", "basic-not-base64", "basic-no-colon", "other-scheme"],
)
async def test_missing_or_malformed_authorization(
    fake: FakeTeleSign, http: aiohttp.ClientSession, authorization: str | None, codes: list[int]
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, answer, _ = await post(http, fake, request_body(), headers=headers)
    assert status == 401
    assert answer["status"]["code"] == 3400
    assert error_codes(answer) == codes


async def test_basic_with_wrong_customer(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    headers = {"Authorization": basic_authorization("SOMEONE-ELSE", fake.api_key)}
    status, answer, _ = await post(http, fake, request_body(), headers=headers)
    assert (status, error_codes(answer)) == (401, [10015, -30000])


# ------------------------------------------------------------------------------ body validation


def _without(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        node: Any = body
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return change


def _setting(value: Any, *path: str | int) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        node: Any = body
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


VALIDATION_CASES = [
    pytest.param(_without("channels"), 3300, id="no-channels"),
    pytest.param(_setting([], "channels"), 3113, id="empty-channels"),
    pytest.param(_setting("mms", "channels"), 3113, id="channels-not-a-list"),
    pytest.param(_setting([{"channel": "mms"}, {"channel": "mms"}], "channels"), 3113, id="channel-twice"),
    pytest.param(_setting([{"channel": "fax"}], "channels"), 3113, id="unknown-channel"),
    pytest.param(_setting([{"fallback_time": 60}, {"channel": "sms"}], "channels"), 3301, id="item-without-channel"),
    pytest.param(_setting(29, "channels", 0, "fallback_time"), 3113, id="fallback-below-30"),
    pytest.param(_setting(3601, "channels", 0, "fallback_time"), 3113, id="fallback-above-3600"),
    pytest.param(_setting("600", "channels", 0, "fallback_time"), 3113, id="fallback-not-int"),
    pytest.param(_without("phone_number"), 3302, id="no-phone-number"),
    pytest.param(_setting("+15558675309", "phone_number"), 3101, id="phone-with-plus"),
    pytest.param(_setting("555-867-5309", "phone_number"), 3101, id="phone-with-dashes"),
    pytest.param(_without("message"), 3303, id="no-message"),
    pytest.param(_setting("hello", "message"), 3108, id="message-not-an-object"),
    pytest.param(_without("message", "sms"), 3306, id="no-details-for-a-channel"),
    pytest.param(_setting("gif", "message", "mms", "template"), 3112, id="mms-template"),
    pytest.param(_setting({}, "message", "mms", "parameters"), 3305, id="mms-without-url"),
    pytest.param(_setting("/summer_deals.png", "message", "mms", "parameters", "url"), 3108, id="mms-url-relative"),
    pytest.param(_setting("url_action", "message", "sms", "template"), 3112, id="sms-template"),
    pytest.param(_setting({"text": ""}, "message", "sms", "parameters"), 3305, id="sms-empty-text"),
    pytest.param(_without("message_type"), 3304, id="no-message-type"),
    pytest.param(_setting("PROMO", "message_type"), 3102, id="bad-message-type"),
    pytest.param(_setting("x" * 101, "external_id"), 3103, id="external-id-too-long"),
    pytest.param(_setting("café", "external_id"), 3103, id="external-id-not-ascii"),
    pytest.param(_setting("", "callback_url"), 3106, id="empty-callback-url"),
    pytest.param(_setting("login", "account_lifecycle_event"), 3104, id="lifecycle-event"),
    pytest.param(_setting("300.1.2.3", "originating_ip"), 3105, id="originating-ip"),
    pytest.param(_setting("https://acme.co/cb", "callback_URL"), 3110, id="unknown-field"),
    pytest.param(_setting("15558675309", "recipient"), 3110, id="recipient-not-an-object"),
]


@pytest.mark.parametrize(("change", "code"), VALIDATION_CASES)
async def test_validation(
    fake: FakeTeleSign, http: aiohttp.ClientSession, change: Callable[[dict[str, Any]], None], code: int
) -> None:
    body = request_body(external_id="ext-1")
    change(body)
    status, answer, _ = await post(http, fake, body)
    assert status == 400, answer
    assert answer["status"]["code"] == code
    assert REFERENCE_RE.fullmatch(answer["reference_id"])
    assert answer["external_id"] == (body["external_id"] if isinstance(body.get("external_id"), str) else None)
    assert answer["errors"] == []
    assert_validates(response_schema(400), answer)
    assert fake.messages == [] and fake.rejected[-1].code == code


async def test_validation_matches_the_documented_error_body(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    status, answer, _ = await post(http, fake, request_body(message_type="PROMO", external_id="MKT432538"))
    documented = fixture("omnichannel_error_invalid_message_type")
    assert status == 400
    assert answer["status"]["description"] == documented["status"]["description"].replace("{message_type}", "PROMO")
    assert {key: answer[key] for key in documented if key not in ("reference_id", "status")} == {
        key: value for key, value in documented.items() if key not in ("reference_id", "status")
    }


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b'{"channels": []}', "text/plain")],
    ids=["bad-json", "not-an-object", "not-json-content-type"],
)
async def test_invalid_request(fake: FakeTeleSign, http: aiohttp.ClientSession, raw: bytes, content_type: str) -> None:
    headers = {**basic(fake), "Content-Type": content_type}
    async with http.post(fake.send_url, data=raw, headers=headers) as response:
        answer = await response.json()
        assert response.status == 400
    assert answer["status"] == {"code": 3110, "description": "Invalid request"}


async def test_payload_over_10_kb(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    body = request_body()
    body["message"]["sms"]["parameters"]["text"] = "x" * (10 * 1024)
    status, answer, _ = await post(http, fake, body)
    assert status == 413
    assert answer["status"] == {"code": 3116, "description": "Payload limit size exceeded"}


async def test_recipient_default_message_and_options(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    body = request_body(
        channels=[{"channel": "mms"}, {"channel": "sms"}],
        recipient={"phone_number": "12025550143"},
        message={
            "mms": {"template": "video", "parameters": {"url": "https://cdn.example/v.mp4"}},
            "default": {"template": "text", "parameters": {"text": "See https://cdn.example/v.mp4"}},
        },
        message_type="ARN",
        external_id="gw-42",
        callback_url="https://gateway.example/telesign/status",
        sender_id=DEFAULT_SHORT_CODE,
        account_lifecycle_event="transact",
        originating_ip="2001:db8::1",
    )
    del body["phone_number"]
    assert validate_omnichannel(body) is None
    assert_validates(request_schema(), body)
    status, answer, _ = await post(http, fake, body)
    assert status == 200, answer
    (sent,) = fake.messages
    assert sent.phone_number == "12025550143"
    assert sent.fallback_time is None  # not sent: TeleSign's default (300 s) applies
    assert (sent.mms_template, sent.mms_url) == ("video", "https://cdn.example/v.mp4")
    assert sent.sms_text == "See https://cdn.example/v.mp4"  # from message.default
    assert (sent.external_id, sent.sender_id) == ("gw-42", DEFAULT_SHORT_CODE)
    assert sent.callback_url == "https://gateway.example/telesign/status"
    assert sent.mms_supported


def test_the_documented_request_is_valid() -> None:
    body = fixture("omnichannel_request_mms")
    assert_validates(request_schema(), body)
    assert validate_omnichannel(body) is None


# ------------------------------------------------------------------------------ MMS senders


async def test_mms_from_a_long_code_is_accepted_then_fails_with_3062(
    fake: FakeTeleSign, http: aiohttp.ClientSession
) -> None:
    status, answer, _ = await post(http, fake, request_body(sender_id=LONG_CODE))
    assert status == 200, answer
    (sent,) = fake.messages
    assert not sent.mms_supported
    finals: tuple[Outcome | None, ...] = (None, "delivered", "mms_timeout")
    for final in finals:
        callback = fake.deliver(sent, final)
        assert [next(iter(leg)) for leg in callback["channel_status"]] == ["mms", "sms"]
        assert callback["channel_status"][0]["mms"]["code"] == 3062
        assert callback["channel_status"][0]["mms"]["description"] == "MMS not supported"
        assert callback["channel_status"][1]["sms"]["code"] == 3000
        assert callback["status"]["code"] == 3000
    failed = fake.deliver(sent, "failed")
    assert [leg[name]["code"] for leg in failed["channel_status"] for name in leg] == [3062, 3031]
    assert failed["status"]["code"] == 3003


async def test_mms_without_sender_uses_the_accounts_default_sender(http: aiohttp.ClientSession) -> None:
    async with serve_fake_telesign(FakeTeleSign(default_sender=LONG_CODE)) as fake:
        status, _, _ = await post(http, fake, request_body())
        assert status == 200
        assert not fake.messages[0].mms_supported
        status, _, _ = await post(http, fake, request_body(sender_id=DEFAULT_SHORT_CODE))
        assert fake.messages[1].mms_supported


async def test_sms_only_from_a_long_code(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    body = request_body(channels=[{"channel": "sms"}], sender_id=LONG_CODE)
    del body["message"]["mms"]
    status, _, _ = await post(http, fake, body)
    assert status == 200
    (sent,) = fake.messages
    assert sent.mms_supported and sent.mms_url is None
    callback = fake.deliver(sent)
    assert callback["channel_status"][0]["sms"]["code"] == 3000
    assert callback["status"]["last_channel"] == "sms"
    with pytest.raises(ValueError, match="needs mms as the first channel"):
        fake.deliver(sent, "mms_timeout")


# ------------------------------------------------------------------------------ scripting


async def test_fail_next_with_retry_after(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    fake.fail_next(2, 503, retry_after=7)
    for _ in range(2):
        status, answer, response = await post(http, fake, request_body(external_id="e1"))
        assert status == 503
        assert response.headers["Retry-After"] == "7"
        assert answer["status"] == {"code": 3500, "description": "System Unavailable"}
        assert answer["external_id"] == "e1"
        assert_validates(response_schema(503), answer)
    status, _, _ = await post(http, fake, request_body())
    assert status == 200
    assert fake.request_count == 3
    assert [error.status for error in fake.rejected] == [503, 503]
    assert len(fake.messages) == 1


async def test_fail_next_codes_and_raw_body(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, 429, code=3204, retry_after="2")
    fake.fail_next(1, 502, code=3500, raw_body="<html>Bad gateway</html>")
    fake.fail_next(1, 400, code=3203, description="Callback URL parameter not enabled for Customer ID")
    status, answer, response = await post(http, fake, request_body())
    assert (status, answer["status"]["code"], response.headers["Retry-After"]) == (429, 3204, "2")
    async with http.post(fake.send_url, json=request_body(), headers=basic(fake)) as raw_response:
        assert raw_response.status == 502
        assert await raw_response.text() == "<html>Bad gateway</html>"
    status, answer, _ = await post(http, fake, request_body())
    assert (status, answer["status"]["code"]) == (400, 3203)
    assert REFERENCE_RE.fullmatch(answer["reference_id"])


async def test_failures_wait_for_an_authenticated_request(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, 503)
    status, _, _ = await post(http, fake, request_body(), headers=basic(fake, api_key="d3Jvbmc="))
    assert status == 401
    status, _, _ = await post(http, fake, request_body())
    assert status == 503


async def test_delay_next_still_sends(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    fake.delay_next(1, 0.5)
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            fake.send_url, json=request_body(), headers=basic(fake), timeout=aiohttp.ClientTimeout(total=0.1)
        ):
            pass
    (sent,) = await fake.wait_for(1, timeout=3)
    assert sent.channels == ["mms", "sms"]


async def test_reset(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    fake.fail_next(3, 503)
    await post(http, fake, request_body())
    fake.reset()
    status, _, _ = await post(http, fake, request_body())
    assert status == 200
    fake.reset()
    assert (fake.messages, fake.rejected, fake.request_count, fake.nonces) == ([], [], 0, {})
    assert not fake.arrived.is_set()


# ------------------------------------------------------------------------------ status GET


async def test_status_errors(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    status, answer = await get_status(http, fake, "not-a-reference")
    invalid = {"status": {"code": 3311, "description": "Invalid value for parameter reference_id"}}
    assert (status, answer) == (400, invalid)
    status, answer = await get_status(http, fake, "0" * 32)
    assert (status, answer["status"]["code"]) == (404, -10001)
    assert_validates(status_schema(404), answer)

    await post(http, fake, request_body())
    (sent,) = fake.messages
    sent.accepted_at -= 13 * 3600
    status, answer = await get_status(http, fake, sent.reference_id)
    assert (status, answer) == (404, fixture("omnichannel_status_expired"))

    status, answer = await get_status(http, fake, sent.reference_id, headers=basic(fake, api_key="d3Jvbmc="))
    assert (status, answer["status"]) == (401, {"code": 3411, "description": "Invalid API Key."})
    status, answer = await get_status(http, fake, sent.reference_id, headers={"Authorization": "TSA"})
    assert (status, answer["status"]["code"]) == (401, 3412)
    assert_validates(status_schema(401), answer)


async def test_status_get_with_digest(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    await post(http, fake, request_body())
    (sent,) = fake.messages
    fake.deliver(sent, "delivered")
    resource = f"/v1/omnichannel/{sent.reference_id}"
    headers = digest_headers(fake.customer_id, fake.api_key, "GET", resource)
    status, answer = await get_status(http, fake, sent.reference_id, headers=headers)
    assert status == 200, answer
    assert answer["status"]["code"] == 3000
    assert answer["channel_status"][0]["mms"]["code"] == 3000


def test_the_documented_status_example_fits_the_schema() -> None:
    assert_validates(status_schema(200), fixture("omnichannel_status_delivered"))


# ------------------------------------------------------------------------------ callbacks


def test_callback_signature_vector() -> None:
    assert sign_callback(VECTOR_KEY, VECTOR_BODY.encode()) == VECTOR_SIGNATURE
    assert verify_telesign_callback_signature(VECTOR_KEY, VECTOR_SIGNATURE, VECTOR_BODY)


def test_callback_signatures_verify_with_the_sdk() -> None:
    fake = FakeTeleSign()
    raw = serialize(mo_sms("+1 202 555 0143", "Ünïcode ✓ reply"))
    signature = sign_callback(fake.api_key, raw)
    assert verify_telesign_callback_signature(fake.api_key, signature, raw.decode("utf-8"))
    assert not verify_telesign_callback_signature(fake.api_key, signature, raw.decode("utf-8") + " ")


async def test_post_callback(fake: FakeTeleSign, http: aiohttp.ClientSession) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/telesign", handler)
    payload = mo_mms(USER, texts=["hi"], images=["https://example.com/a.jpg"])
    async with served(app) as base:
        assert await fake.post_callback(http, f"{base}/telesign", payload) == (200, '{"ok": true}')
        await fake.post_callback(http, f"{base}/telesign", payload, as_tsa=False)
        await fake.post_callback(http, f"{base}/telesign", payload, signature="forged")
    (tsa_headers, raw), (bare_headers, raw_again), (forged_headers, _) = received
    assert raw == raw_again == serialize(payload)
    assert json.loads(raw) == payload
    assert tsa_headers["Content-Type"] == "application/json"
    scheme, _, credentials = tsa_headers["Authorization"].partition(" ")
    customer_id, _, signature = credentials.partition(":")
    assert (scheme, customer_id) == ("TSA", fake.customer_id)
    assert verify_telesign_callback_signature(fake.api_key, signature, raw.decode())
    assert bare_headers["Authorization"] == signature
    assert forged_headers["Authorization"] == f"TSA {fake.customer_id}:forged"


def shape(value: Any) -> Any:
    """Keys and JSON types, for comparing a built payload with a published one."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return "null" if value is None else type(value).__name__


def legs(callback: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(name, leg[name]["code"], leg[name]["description"]) for leg in callback["channel_status"] for name in leg]


def accepted(**changes: Any) -> TeleSignSent:
    body = request_body(**changes)
    return TeleSignSent(
        reference_id="35C8B5D509BC10689196FED2AD551B8A",
        body=body,
        phone_number=USER,
        channels=[item["channel"] for item in body["channels"]],
        fallback_time=body["channels"][0].get("fallback_time"),
        mms_template="image",
        mms_url="https://acme.co/summer_deals.png",
        sms_text="x",
        message_type="MKT",
        external_id=body.get("external_id"),
        sender_id=None,
        accepted_at=time.time(),
    )


@pytest.mark.parametrize(
    ("final", "name"),
    [
        ("delivered", "callback_delivered"),
        ("mms_timeout", "callback_mms_fallback_to_sms"),
        ("mms_unsupported", "callback_mms_not_supported"),
        ("failed", "callback_failed"),
    ],
)
def test_delivery_callbacks_have_the_published_shape(final: Outcome, name: str) -> None:
    published = fixture(name)
    sent = accepted(external_id=published["external_id"]) if published["external_id"] else accepted()
    built = delivery_callback(sent, final=final)
    assert shape(built) == shape(published)
    assert legs(built) == legs(published)
    assert {key: value for key, value in built["status"].items() if key != "updated_on"} == {
        key: value for key, value in published["status"].items() if key != "updated_on"
    }
    assert built["reference_id"] == sent.reference_id
    for callback in (built, published):
        assert_validates(delivery_callback_schema(), callback)
        *earlier, last = [leg[name]["updated_on"] for leg in callback["channel_status"] for name in leg]
        assert LEGACY_TS_RE.fullmatch(last) and last == callback["status"]["updated_on"]
        assert all(RFC3339_RE.fullmatch(stamp) for stamp in earlier)
        ids = [leg[name]["reference_id"] for leg in callback["channel_status"] for name in leg]
        assert all(REFERENCE_RE.fullmatch(reference_id) for reference_id in ids)


def test_other_delivery_outcomes() -> None:
    sent = accepted()
    assert legs(delivery_callback(sent, final="device_unsupported"))[0][:2] == ("mms", 3055)
    assert legs(delivery_callback(sent, final="failed", failure_code=3033))[-1] == (
        "sms",
        3033,
        "Message expired before delivery",
    )
    alone = accepted(channels=[{"channel": "mms", "fallback_time": 60}])
    callback = delivery_callback(alone, final="mms_timeout")
    assert legs(callback) == [("mms", 3056, "Message failed to deliver in specified fallback time")]
    assert (callback["status"]["code"], callback["status"]["last_channel"]) == (3003, "mms")
    assert_validates(delivery_callback_schema(), callback)


def test_mo_mms_has_the_published_shape() -> None:
    published = fixture("mo_mms")
    built = mo_mms("+1 123 456 7890", texts=["customer support agent"], images=["https://example.com/mo/image_1.jpg"])
    assert shape(built) == shape(published)
    assert {key: built[key] for key in ("phone_number", "sub_resource", "content")} == {
        key: published[key] for key in ("phone_number", "sub_resource", "content")
    }
    assert {key: value for key, value in built["status"].items() if key != "updated_on"} == {
        "code": 1500,
        "description": "Delivered",
    }
    for payload in (built, published):
        assert_validates(mo_mms_schema(), payload)

    many = mo_mms(USER, texts=["a", "b"], subject="Pics", images=["i1", "i2"], videos=["v1"], audios=["a1"])
    assert many["content"] == {
        "text_1": "a",
        "text_2": "b",
        "subject": "Pics",
        "url_image_1": "i1",
        "url_image_2": "i2",
        "url_video_1": "v1",
        "url_audio_1": "a1",
    }
    assert REFERENCE_RE.fullmatch(many["reference_id"])
    with pytest.raises(ValueError):
        mo_mms(USER)


def test_mo_sms_has_the_published_shape() -> None:
    published = fixture("mo_sms")
    built = mo_sms("11234567890", "Start", sender_id="4442")
    assert shape(built) == shape(published)
    assert built["user_response"] == published["user_response"]
    assert (built["sub_resource"], built["errors"]) == ("mo_sms", {})
    for payload in (built, published):
        assert_validates(mo_sms_schema(), payload)
    assert RFC3339_RE.fullmatch(built["submit_timestamp"]) and RFC3339_RE.fullmatch(built["status"]["updated_on"])
    generic = mo_sms(USER, "what time do you open?")["user_response"]
    assert (generic["action"], generic["keyword"], generic["sender_id"]) == ("generic", "", DEFAULT_SHORT_CODE)
    assert mo_sms(USER, "STOP please")["user_response"]["action"] == "stop"


# ------------------------------------------------------------------------------ settings


async def test_settings(fake: FakeTeleSign) -> None:
    config = fake.settings()
    assert isinstance(config, TeleSignConfig)
    assert (config.url, config.customer_id, config.api_key, config.sender_id) == (
        fake.base_url,
        fake.customer_id,
        fake.api_key,
        DEFAULT_SHORT_CODE,
    )
    assert base64.b64decode(config.api_key, validate=True)
    digest = fake.settings(auth_method="digest", sender_id=None, fallback_seconds=60)
    assert (digest.auth_method, digest.sender_id, digest.fallback_seconds) == ("digest", None, 60)


def test_settings_needs_a_served_fake() -> None:
    with pytest.raises(RuntimeError):
        FakeTeleSign().settings()


def test_fixtures_are_unchanged_by_use() -> None:
    # The builders and the validator must not mutate what they are given (tests share the parsed fixtures).
    body = fixture("omnichannel_request_mms")
    before = copy.deepcopy(body)
    validate_omnichannel(body)
    assert body == before
