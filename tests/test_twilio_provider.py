"""Twilio provider: webhook parsing, signatures, status callbacks, TwiML, and sending against the fake API."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator
from yarl import URL

from sms_gateway.config.model import ProxyConfig
from sms_gateway.http_client import basic_authorization
from sms_gateway.model import InboundMessage, Media, OutboundMessage, SendOutcome
from sms_gateway.providers.base import InvalidRequest, Sender
from sms_gateway.providers.transport import proxy_authorization
from sms_gateway.providers.twilio import (
    MESSAGE_STATUSES,
    SIGNATURE_HEADER,
    TWIML_CONTENT_TYPE,
    TwilioConfig,
    TwilioSender,
    build_form,
    empty_twiml,
    parse_inbound,
    parse_status,
    twilio_status_is_final,
    verify_signature,
)
from sms_gateway.providers.twilio.errors import may_have_sent
from sms_gateway.web.webhooks import public_request_url
from tests.fakes.twilio import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    FakeTwilio,
    message_schema,
    serve_fake_twilio,
    validate_create_message,
)

SID = "SM" + "0123456789abcdef" * 2
MMS_SID = "MM" + "fedcba9876543210" * 2
TENANT = "+15005550001"
USER = "+15005550006"

# ------------------------------------------------------------------------------ signatures

VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        (VECTOR_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_official_signature_vectors(url: str, signature: str) -> None:
    assert verify_signature(url, VECTOR_PARAMS, signature, VECTOR_TOKEN)


def test_official_vector_with_duplicate_keys_as_multidictproxy() -> None:
    params = MultiDictProxy(
        MultiDict(
            [
                ("Sid", "CA123"),
                ("SidAccount", "AC123"),
                ("Digits", "5678"),
                ("Digits", "1234"),
                ("Digits", "1234"),
            ]
        )
    )
    assert verify_signature(VECTOR_URL, params, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", VECTOR_TOKEN)


def test_docs_example_vector() -> None:
    params = {
        "Digits": "1234",
        "To": "+18005551212",
        "From": "+14158675310",
        "Caller": "+14158675310",
        "CallSid": "CA1234567890ABCDE",
    }
    url = "https://example.com/myapp.php?foo=1&bar=2"
    assert verify_signature(url, params, "L/OH5YylLD5NRKLltdqwSvS0BnU=", "12345")


def test_inbound_mms_vector() -> None:
    params = {
        "MessageSid": "SM" + "0" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15005550006",
        "To": "+15005550001",
        "Body": "hi",
        "NumMedia": "1",
        "MediaUrl0": "https://api.twilio.com/x",
        "MediaContentType0": "image/jpeg",
    }
    url = "https://gw.example.com/twilio/inbound"
    assert verify_signature(url, params, "UimZCgvaRyv3WeFAuD2PIET+CPg=", "12345")
    sha256 = "O65nKvIxaw0hAGyfHyANejhzQIvRzuc67yIrN/kBkAc="
    assert verify_signature(url, params, sha256, "12345", algorithm="HMAC_SHA256")


@pytest.mark.parametrize(
    ("url", "params", "signature", "token"),
    [
        (VECTOR_URL, VECTOR_PARAMS, None, VECTOR_TOKEN),
        (VECTOR_URL, VECTOR_PARAMS, "", VECTOR_TOKEN),
        (VECTOR_URL, VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", ""),
        (VECTOR_URL, VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "54321"),
        (VECTOR_URL, {**VECTOR_PARAMS, "Digits": "1235"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", VECTOR_TOKEN),
        (VECTOR_URL + "&x=1", VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", VECTOR_TOKEN),
        (
            "https://mycompany.com/myapp.php/?foo=1&bar=2",
            VECTOR_PARAMS,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "12345",
        ),
        ("https://mycompany.com:notaport/x", VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", VECTOR_TOKEN),
        (VECTOR_URL, {"Body": b"bytes"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", VECTOR_TOKEN),
    ],
)
def test_bad_signatures_fail_without_raising(
    url: str, params: dict[str, Any], signature: str | None, token: str
) -> None:
    assert verify_signature(url, params, signature, token) is False


def test_unknown_algorithm_fails() -> None:
    assert not verify_signature(VECTOR_URL, VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "12345", algorithm="MD5")


def test_get_request_signs_url_only() -> None:
    url = "https://example.com/sms?Body=hi&From=%2B1555"
    signature = RequestValidator("tok").compute_signature(url, {})
    assert verify_signature(url, None, signature, "tok")


# ------------------------------------------------------------------------------ the URL Twilio signed

RAW = "/sms.receiver/SmsRecv?msg=Couldn%27t+find&n=%2B1555&x=a%20b"


def test_signature_url_uses_public_url_and_raw_path() -> None:
    request = make_mocked_request("POST", RAW, headers={"Host": "internal:9080"})
    assert public_request_url("https://sms.example.com/", request) == "https://sms.example.com" + RAW
    assert public_request_url("https://example.com/gw", request) == "https://example.com/gw" + RAW


def test_signature_url_honours_forwarded_headers_only_from_a_trusted_proxy() -> None:
    headers = {
        "Host": "internal:9080",
        "X-Forwarded-Proto": "https, http",
        "X-Forwarded-Host": "sms.example.com, proxy.internal",
    }
    request = make_mocked_request("POST", RAW, headers=headers)
    assert public_request_url(None, request, trust_forwarded=True) == "https://sms.example.com" + RAW
    assert public_request_url(None, request) == "http://internal:9080" + RAW


def test_signature_url_falls_back_to_request() -> None:
    request = make_mocked_request("POST", RAW, headers={"Host": "gw.example.com:8443"})
    assert public_request_url(None, request) == "http://gw.example.com:8443" + RAW
    odd = make_mocked_request("POST", "/x", headers={"Host": "h.example.com", "X-Forwarded-Proto": "gopher"})
    assert public_request_url(None, odd, trust_forwarded=True) == "http://h.example.com/x"


async def test_signed_webhook_through_a_real_aiohttp_server(
    aiohttp_client: Callable[[web.Application], Any],
) -> None:
    """The whole inbound path: raw query kept, MultiDictProxy form, proxy headers, TwiML answer."""
    token = "secret-token"

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        url = public_request_url(None, request, trust_forwarded=True)
        if not verify_signature(url, form, request.headers.get(SIGNATURE_HEADER), token):
            return web.Response(status=403)
        message = parse_inbound(form)
        return web.Response(text=empty_twiml() + message.text, content_type=TWIML_CONTENT_TYPE)

    app = web.Application()
    app.router.add_post("/sms.receiver/SmsRecv", handler)
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    form = [
        ("MessageSid", MMS_SID),
        ("From", USER),
        ("To", TENANT),
        ("Body", "  spaced  & ünïcode  "),
        ("NumMedia", "1"),
        ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"),
        ("MediaContentType0", "image/png"),
    ]
    public = "https://sms.example.com" + RAW
    signature = RequestValidator(token).compute_signature(public, dict(form))
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "sms.example.com",
        SIGNATURE_HEADER: signature,
    }

    # encoded=True keeps the client from re-quoting the query, as Twilio sends it byte for byte.
    target = URL(str(client.make_url("/")).rstrip("/") + RAW, encoded=True)
    ok = await client.session.post(target, data=form, headers=headers)
    assert ok.status == 200
    assert ok.content_type == "text/xml"
    assert await ok.text() == empty_twiml() + "  spaced  & ünïcode  "

    tampered = await client.session.post(target, data=[*form[:3], ("Body", "other"), *form[4:]], headers=headers)
    assert tampered.status == 403
    unsigned = await client.post(RAW, data=form, headers={k: v for k, v in headers.items() if k != SIGNATURE_HEADER})
    assert unsigned.status == 403


# ------------------------------------------------------------------------------ parse_inbound


def sms_form(**overrides: str) -> dict[str, str]:
    form = {
        "ToCountry": "US",
        "SmsMessageSid": SID,
        "NumMedia": "0",
        "SmsSid": SID,
        "SmsStatus": "received",
        "Body": "Hello there",
        "To": TENANT,
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": SID,
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "From": USER,
        "ApiVersion": "2010-04-01",
    }
    form.update(overrides)
    return form


def media_url(n: int) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/{MMS_SID}/Media/ME{n:032x}"


def test_parse_sms() -> None:
    message = parse_inbound(sms_form())
    assert message == InboundMessage(
        provider="twilio",
        message_id=SID,
        tenant_number=TENANT,
        user_number=USER,
        text="Hello there",
        media=(),
        received_at=message.received_at,
    )


def test_parse_mms_with_two_media_from_multidictproxy() -> None:
    form = sms_form(MessageSid=MMS_SID, NumMedia="2", Body="")
    form |= {
        "MediaUrl0": media_url(0),
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": media_url(1),
        "MediaContentType1": "video/mp4",
    }
    message = parse_inbound(MultiDictProxy(MultiDict(form)))
    assert message.message_id == MMS_SID
    assert message.text == ""
    assert message.media == (Media(media_url(0), "image/jpeg"), Media(media_url(1), "video/mp4"))


def test_sid_fallbacks_and_optional_fields() -> None:
    form = {"SmsSid": SID, "From": USER, "To": TENANT}
    message = parse_inbound(form)
    assert (message.message_id, message.text, message.media) == (SID, "", ())
    assert parse_inbound({"SmsMessageSid": SID, "From": USER, "To": TENANT}).message_id == SID


def test_num_media_claims_more_than_present() -> None:
    form = sms_form(NumMedia="3", MediaUrl0=media_url(0), MediaUrl2=media_url(2), MediaContentType2="image/gif")
    message = parse_inbound(form)
    assert message.media == (Media(media_url(0), None), Media(media_url(2), "image/gif"))


def test_media_beyond_num_media_is_ignored() -> None:
    form = sms_form(NumMedia="1", MediaUrl0=media_url(0), MediaUrl1=media_url(1), MediaContentType1="image/png")
    assert parse_inbound(form).media == (Media(media_url(0), None),)
    assert parse_inbound(sms_form(NumMedia="0", MediaUrl0=media_url(0))).media == ()


def test_absent_num_media_takes_the_media_present() -> None:
    form = {
        "MessageSid": SID,
        "From": USER,
        "To": TENANT,
        "MediaUrl0": media_url(0),
        "MediaUrl1": media_url(1),
    }
    assert [m.url for m in parse_inbound(form).media] == [media_url(0), media_url(1)]


@pytest.mark.parametrize(
    ("form", "fragment"),
    [
        ({"From": USER, "To": TENANT}, "MessageSid"),
        (sms_form(MessageSid="SM123", SmsSid="", SmsMessageSid=""), "MessageSid"),
        (sms_form(MessageSid="AC" + "0" * 32), "MessageSid"),
        (sms_form(MessageSid=SID + "0"), "MessageSid"),
        (sms_form(From=""), "From"),
        (sms_form(From="   "), "From"),
        ({"MessageSid": SID, "To": TENANT}, "From"),
        ({"MessageSid": SID, "From": USER}, "To"),
        (sms_form(To="+1" * 40), "To"),
        (sms_form(NumMedia="x"), "NumMedia"),
        (sms_form(NumMedia="-1"), "NumMedia"),
        (sms_form(NumMedia="11"), "NumMedia"),
        (sms_form(NumMedia="1.0"), "NumMedia"),
        (sms_form(NumMedia="٣"), "NumMedia"),
        (sms_form(NumMedia="1", MediaUrl0="ftp://example.com/a.jpg"), "MediaUrl0"),
        (sms_form(NumMedia="1", MediaUrl0="/relative/a.jpg"), "MediaUrl0"),
        (sms_form(NumMedia="1", MediaUrl0="https://exa mple.com/a.jpg"), "MediaUrl0"),
        (sms_form(NumMedia="1", MediaUrl0="http://[::1/a.jpg"), "MediaUrl0"),
        (sms_form(Body="x" * 10_001), "Body"),
    ],
)
def test_malformed_inbound(form: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        parse_inbound(form)


def test_non_text_field_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="Body"):
        parse_inbound({**sms_form(), "Body": b"\x00"})


def test_long_but_plausible_body_is_kept() -> None:
    assert len(parse_inbound(sms_form(Body="é" * 10_000)).text) == 10_000


FORM_KEYS = st.sampled_from(
    ["MessageSid", "SmsSid", "SmsMessageSid", "From", "To", "Body", "NumMedia"]
    + [f"MediaUrl{n}" for n in range(12)]
    + [f"MediaContentType{n}" for n in range(12)]
)
FORM_VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from([SID, MMS_SID, USER, "0", "1", "2", "10", "11", media_url(0), "image/png", ""]),
    st.binary(max_size=8),
    st.integers(),
    st.none(),
)


@given(st.lists(st.tuples(st.one_of(FORM_KEYS, st.text(max_size=10)), FORM_VALUES), max_size=30))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_forms_parse_or_are_invalid(pairs: list[tuple[str, Any]]) -> None:
    for form in (dict(pairs), MultiDictProxy(MultiDict(pairs))):
        try:
            message = parse_inbound(form)
        except InvalidRequest:
            continue
        assert isinstance(message, InboundMessage)
        assert len(message.media) <= 10


CONTENT_TYPES = st.sampled_from(["image/jpeg", "image/png", "video/mp4", "text/vcard", "application/pdf"])


@given(
    media=st.lists(st.tuples(st.integers(0, 2**64), CONTENT_TYPES), max_size=10),
    body=st.text(max_size=1600),
)
def test_valid_mms_forms_round_trip(media: list[tuple[int, str]], body: str) -> None:
    form = sms_form(MessageSid=MMS_SID, NumMedia=str(len(media)), Body=body)
    for n, (ident, content_type) in enumerate(media):
        form[f"MediaUrl{n}"] = media_url(ident)
        form[f"MediaContentType{n}"] = content_type
    message = parse_inbound(form)
    assert message.text == body
    assert message.media == tuple(Media(media_url(i), ct) for i, ct in media)
    assert [m.to_state() for m in message.media] == [
        {"mediaURL": media_url(i), "mediaContentType": ct} for i, ct in media
    ]


# ------------------------------------------------------------------------------ status callbacks


def test_parse_status_callback() -> None:
    form = {
        "ErrorCode": "30003",
        "ApiVersion": "2010-04-01",
        "MessageStatus": "undelivered",
        "RawDlrDoneDate": "2405161200",
        "SmsSid": MMS_SID,
        "SmsStatus": "undelivered",
        "To": USER,
        "From": TENANT,
        "MessageSid": MMS_SID,
        "AccountSid": DEFAULT_ACCOUNT_SID,
        "ErrorMessage": "Unreachable destination handset",
    }
    status = parse_status(MultiDictProxy(MultiDict(form)), "our-id-1")
    assert status.provider == "twilio"
    assert status.provider_message_id == MMS_SID
    assert status.status == "undelivered"
    assert status.failed
    assert status.our_message_id == "our-id-1"
    assert (status.error_code, status.error_message) == ("30003", "Unreachable destination handset")
    assert (status.tenant_number, status.user_number) == (TENANT, USER)


def test_parse_status_minimal_with_smsstatus_fallback() -> None:
    status = parse_status({"SmsSid": SID, "SmsStatus": "sent", "ErrorCode": ""}, None)
    assert (status.status, status.our_message_id, status.error_code, status.tenant_number) == (
        "sent",
        None,
        None,
        None,
    )
    assert not status.failed


@pytest.mark.parametrize("value", sorted(MESSAGE_STATUSES))
def test_every_twilio_status_is_accepted(value: str) -> None:
    assert parse_status({"MessageSid": SID, "MessageStatus": value}).status == value


@pytest.mark.parametrize(
    "form",
    [
        {"MessageSid": SID},
        {"MessageSid": SID, "MessageStatus": "exploded"},
        {"MessageSid": SID, "MessageStatus": ""},
        {"MessageStatus": "sent"},
        {"MessageSid": "nope", "MessageStatus": "sent"},
        {"MessageSid": SID, "MessageStatus": "sent", "ErrorCode": "1" * 40},
    ],
)
def test_malformed_status_callbacks(form: dict[str, str]) -> None:
    with pytest.raises(InvalidRequest):
        parse_status(form, None)


def test_final_statuses() -> None:
    assert all(twilio_status_is_final(s) for s in ("delivered", "undelivered", "failed", "read", "canceled"))
    assert not any(twilio_status_is_final(s) for s in ("queued", "accepted", "sending", "sent", "scheduled"))


def test_empty_twiml() -> None:
    assert empty_twiml() == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    assert TWIML_CONTENT_TYPE == "text/xml"


# ------------------------------------------------------------------------------ sending


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with serve_fake_twilio() as server:
        yield server


def outbound(text: str = "Hello", media: tuple[str, ...] = (), to: str = USER) -> OutboundMessage:
    return OutboundMessage(
        message_id="m-1", tenant_number=TENANT, user_number=to, text=text, media_urls=media, session_id="s-1"
    )


def test_sender_implements_protocol(http: aiohttp.ClientSession) -> None:
    sender: Sender = TwilioSender(TwilioConfig(username="AC1", password="tok"), http)
    assert "tok" not in repr(sender)


def test_build_form_repeats_media_and_omits_empty_body() -> None:
    form = build_form(outbound("", ("https://a.example.com/1.jpg", "https://a.example.com/2.jpg")), None)
    assert form == [
        ("To", USER),
        ("From", TENANT),
        ("MediaUrl", "https://a.example.com/1.jpg"),
        ("MediaUrl", "https://a.example.com/2.jpg"),
    ]


async def test_send_sms(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    result = await TwilioSender(fake.provider_config(), http).send(outbound("Hi there"), None)
    assert result.ok and result.outcome is SendOutcome.SENT
    assert result.status == "queued"
    assert result.http_status == 201
    assert result.provider_message_id is not None and result.provider_message_id.startswith("SM")
    [sent] = fake.messages
    assert (sent.sid, sent.to, sent.from_, sent.body, sent.media_urls) == (
        result.provider_message_id,
        USER,
        TENANT,
        "Hi there",
        [],
    )
    assert sent.status_callback is None
    assert sent.auth == (DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
    assert fake.request_count == 1


async def test_send_mms_form_matches_create_message_request(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    media = tuple(f"https://cdn.example.com/{n}.jpg" for n in range(3))
    result = await TwilioSender(fake.provider_config(), http).send(outbound("Look", media), "https://sms.example.com/")
    assert result.ok
    assert result.provider_message_id is not None and result.provider_message_id.startswith("MM")
    [sent] = fake.messages
    assert sent.media_urls == list(media)
    assert [v for k, v in sent.form if k == "MediaUrl"] == list(media)
    # Statuses come back to our route with our own message id.
    assert sent.status_callback == "https://sms.example.com/sms.receiver/twilio/status?mid=m-1"
    _, error = validate_create_message(MultiDictProxy(MultiDict(sent.form)))
    assert error is None
    jsonschema.Draft7Validator(message_schema()).validate(sent.response)
    assert sent.response["num_media"] == "3"


async def test_media_only_message(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    result = await TwilioSender(fake.provider_config(), http).send(outbound("", ("https://e.example.com/a.png",)), None)
    assert result.ok
    assert "Body" not in dict(fake.messages[0].form)


async def test_bad_credentials_fail_for_good(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    result = await TwilioSender(fake.provider_config(password="wrong"), http).send(outbound(), None)
    assert (result.outcome, result.error_code, result.http_status, result.retryable) == (
        SendOutcome.FAILED,
        "20003",
        401,
        False,
    )
    assert fake.request_count == 1
    assert fake.messages == []


@pytest.mark.parametrize(
    ("status", "outcome"), [(429, SendOutcome.RETRY), (500, SendOutcome.UNKNOWN), (503, SendOutcome.UNKNOWN)]
)
async def test_throttling_and_server_errors_are_retryable(
    fake: FakeTwilio, http: aiohttp.ClientSession, status: int, outcome: SendOutcome
) -> None:
    """A 429 was refused before anything was created; after a 5xx Twilio may have the message."""
    sender = TwilioSender(fake.provider_config(), http)
    fake.fail_next(1, status=status)
    result = await sender.send(outbound(), None)
    assert (result.outcome, result.retryable, result.http_status) == (outcome, True, status)
    assert result.throttled is (status == 429), "a 429 (20429) tells the sender to slow down"
    assert result.error_code is not None and may_have_sent(result.error_code) is (outcome is SendOutcome.UNKNOWN)
    assert (await sender.send(outbound(), None)).ok  # the outbox's next attempt
    assert fake.request_count == 2 and len(fake.messages) == 1


async def test_invalid_to_fails_for_good(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    result = await TwilioSender(fake.provider_config(), http).send(outbound(to="12"), None)
    assert (result.outcome, result.error_code, result.http_status) == (SendOutcome.FAILED, "21211", 400)
    assert result.error_message is not None and "not a valid phone number" in result.error_message
    assert fake.request_count == 1


@pytest.mark.parametrize(("status", "code"), [(400, 21610), (400, 21614), (404, 20404), (400, None), (500, 21211)])
async def test_non_retryable_errors(fake: FakeTwilio, http: aiohttp.ClientSession, status: int, code: int) -> None:
    fake.fail_next(1, status=status, code=code)
    result = await TwilioSender(fake.provider_config(), http).send(outbound(), None)
    assert not result.ok and not result.retryable and not result.throttled
    assert result.error_code == str(code or status)
    assert fake.request_count == 1


async def test_throttling_code_on_a_400_is_retried(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, status=400, code=14107)
    result = await TwilioSender(fake.provider_config(), http).send(outbound(), None)
    assert (result.outcome, result.error_code, result.throttled) == (SendOutcome.RETRY, "14107", True)


async def test_a_sender_over_twilios_rate_is_throttled_with_retry_after(
    fake: FakeTwilio, http: aiohttp.ClientSession
) -> None:
    fake.limit_rate(1, retry_after=1)
    sender = TwilioSender(fake.provider_config(), http)
    first, second = await sender.send(outbound("one"), None), await sender.send(outbound("two"), None)
    assert first.ok and not first.throttled
    assert (second.outcome, second.error_code, second.http_status) == (SendOutcome.RETRY, "20429", 429)
    assert (second.throttled, second.retry_after) == (True, 1.0)
    assert [m.body for m in fake.messages] == ["one"]


@pytest.mark.parametrize(
    ("retry_after", "expected"), [("7", 7.0), ("0", 0.0), ("2.5", 2.5), ("3600", 3600.0), ("soon", None), ("-3", None)]
)
async def test_retry_after_is_read(
    fake: FakeTwilio, http: aiohttp.ClientSession, retry_after: str, expected: float | None
) -> None:
    """Read as Twilio sent it; how long the outbox waits at most is its retry policy's cap."""
    fake.fail_next(1, status=429, retry_after=retry_after)
    result = await TwilioSender(fake.provider_config(), http).send(outbound(), None)
    assert result.retry_after == expected


async def test_retry_after_as_an_http_date(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, status=503, retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True))
    result = await TwilioSender(fake.provider_config(), http).send(outbound(), None)
    assert result.retry_after is not None and 25 <= result.retry_after <= 30
    fake.fail_next(1, status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")  # in the past: now
    assert (await TwilioSender(fake.provider_config(), http).send(outbound(), None)).retry_after == 0.0


async def test_non_json_error_body(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, status=502, raw_body="<html><body>Bad Gateway</body></html>")
    result = await TwilioSender(fake.provider_config(), http).send(outbound(), None)
    assert not result.ok and result.retryable
    assert result.error_code == "502"
    assert result.error_message is not None and result.error_message.startswith("HTTP 502")


async def test_timeout_is_an_unknown_outcome(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    fake.delay_next(1, 0.5)
    config = fake.provider_config(read_timeout_ms=100, connect_timeout_ms=1000)
    started = time.monotonic()
    result = await TwilioSender(config, http).send(outbound(), None)
    assert time.monotonic() - started < 0.45
    assert (result.outcome, result.error_code, result.http_status) == (SendOutcome.UNKNOWN, "timeout", None)
    assert may_have_sent("timeout")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused(http: aiohttp.ClientSession) -> None:
    config = TwilioConfig(url=f"http://127.0.0.1:{_closed_port()}", username="AC1", password="tok")
    result = await TwilioSender(config, http).send(outbound(), None)
    assert (result.ok, result.error_code, result.retryable) == (False, "connectionError", True)


async def test_invalid_send_url(http: aiohttp.ClientSession) -> None:
    config = TwilioConfig(explicit_url="http://[bad", username="AC1", password="tok")
    result = await TwilioSender(config, http).send(outbound(), None)
    assert (result.ok, result.error_code, result.retryable) == (False, "invalidURL", False)
    assert not may_have_sent("invalidURL")


@pytest.mark.parametrize(
    ("code", "maybe"),
    [
        ("429", False),
        ("20429", False),
        ("14107", False),
        ("21610", False),
        ("400", False),
        ("20003", False),
        ("invalidURL", False),
        ("500", True),
        ("20500", True),
        ("30001", True),
        ("timeout", True),
        ("connectionError", True),
        ("httpError", True),
    ],
)
def test_which_failures_may_have_created_the_message(code: str, maybe: bool) -> None:
    """After these the outbox asks Twilio (ListMessage) before sending again; after the others it just sends."""
    assert may_have_sent(code) is maybe


async def test_send_through_a_proxy(fake: FakeTwilio, http: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    """A forwarding HTTP proxy that checks Proxy-Authorization, relaying to the fake."""
    seen: list[str] = []

    async def relay(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Proxy-Authorization", ""))
        async with http.request(
            request.method, str(request.url), data=await request.read(), headers=request.headers
        ) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(), content_type="application/json")

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", relay)
    proxy = await aiohttp_server(proxy_app)
    config = fake.provider_config(proxy=ProxyConfig(url=str(proxy.make_url("")), username="pu", password="pp"))
    result = await TwilioSender(config, http).send(outbound(), None)
    assert result.ok
    assert seen == ["Basic cHU6cHA="]
    assert len(fake.messages) == 1


async def test_auth_token_never_logged(
    fake: FakeTwilio, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_next(1, status=500)
    await TwilioSender(fake.provider_config(), http).send(outbound(), None)
    await TwilioSender(fake.provider_config(password="wrong-secret"), http).send(outbound(), None)
    captured = capsys.readouterr()
    assert DEFAULT_AUTH_TOKEN not in captured.out + captured.err
    assert "wrong-secret" not in captured.out + captured.err


async def test_concurrent_sends(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    sender = TwilioSender(fake.provider_config(), http)
    results = await asyncio.gather(*(sender.send(outbound(f"n{i}"), None) for i in range(20)))
    assert all(r.ok for r in results)
    assert len({r.provider_message_id for r in results}) == 20
    assert sorted(m.body or "" for m in fake.messages) == sorted(f"n{i}" for i in range(20))


# ------------------------------------------------------------------------------ the fake itself


async def post_raw(fake: FakeTwilio, form: list[tuple[str, str]], *, password: str | None = None) -> tuple[int, Any]:
    auth = basic_authorization(fake.account_sid, password or fake.auth_token)
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.send_url, data=form, headers={"Authorization": auth}) as response:
            return response.status, await response.json()


BASE = [("To", USER), ("From", TENANT)]


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ([*BASE, ("Body", "hi"), ("Bogus", "1")], 400, 20001),
        ([("From", TENANT), ("Body", "hi")], 400, 21604),
        ([("To", USER), ("Body", "hi")], 400, 21603),
        (BASE, 400, 21602),
        ([*BASE, ("Body", "")], 400, 21602),
        ([*BASE, ("Body", "x" * 1601)], 400, 21617),
        ([*BASE, *[("MediaUrl", f"https://e.example.com/{n}.jpg") for n in range(11)]], 400, 21623),
        ([*BASE, ("MediaUrl", "e.example.com/1.jpg")], 400, 21620),
        ([*BASE, ("Body", "hi"), ("StatusCallback", "https://bad_host.example.com/cb")], 400, 21609),
        ([*BASE, ("Body", "hi"), ("ValidityPeriod", "soon")], 400, 20001),
        ([*BASE, ("Body", "hi"), ("Body", "again")], 400, 20001),
        ([*BASE, ("Body", "hi"), ("MessagingServiceSid", "MG123")], 400, 20001),
        ([*BASE, ("Body", "x" * 1600)], 201, None),
        ([*BASE, *[("MediaUrl", f"https://e.example.com/{n}.jpg") for n in range(10)]], 201, None),
        (
            [("To", "whatsapp:+15005550006"), ("MessagingServiceSid", "MG" + "a" * 32), ("Body", "hi")],
            201,
            None,
        ),
        ([*BASE, ("Body", "hi"), ("SendAsMms", "true"), ("ValidityPeriod", "60")], 201, None),
    ],
)
async def test_fake_validates_like_twilio(
    fake: FakeTwilio, form: list[tuple[str, str]], status: int, code: int | None
) -> None:
    got_status, body = await post_raw(fake, form)
    assert got_status == status, body
    if code is None:
        jsonschema.Draft7Validator(message_schema()).validate(body)
    else:
        assert body["code"] == code
        assert body["more_info"].endswith(str(code))


async def test_fake_rejects_bad_auth(fake: FakeTwilio) -> None:
    status, body = await post_raw(fake, [*BASE, ("Body", "hi")], password="nope")
    assert (status, body["code"]) == (401, 20003)


async def test_fake_fetch_and_control_routes(fake: FakeTwilio, http: aiohttp.ClientSession) -> None:
    result = await TwilioSender(fake.provider_config(), http).send(outbound("one"), None)
    base = fake.base_url
    headers = {"Authorization": basic_authorization(fake.account_sid, fake.auth_token)}
    fetch = f"{base}/2010-04-01/Accounts/{fake.account_sid}/Messages/{result.provider_message_id}.json"
    async with http.get(fetch, headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["body"] == "one"
    async with http.get(f"{base}/_fake/messages") as response:
        listed = await response.json()
        assert [m["body"] for m in listed] == ["one"]
        assert DEFAULT_AUTH_TOKEN not in json.dumps(listed)
    async with http.post(f"{base}/_fake/failures", json={"count": 1, "status": 429}) as response:
        assert response.status == 204
    failed = await TwilioSender(fake.provider_config(), http).send(outbound("two"), None)
    assert (failed.error_code, failed.retryable) == ("20429", True)
    async with http.delete(f"{base}/_fake/messages") as response:
        assert response.status == 204
    assert fake.messages == [] and fake.request_count == 0


def test_fake_runs_standalone() -> None:
    port = _closed_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.twilio", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


def test_proxy_credentials_go_on_the_connect_for_https() -> None:
    """Through an https tunnel the credentials go on the CONNECT only, never through the tunnel to Twilio; a
    plain-http request goes to the proxy as is and carries them itself."""
    assert proxy_authorization("https://api.twilio.com/x", "Basic cHU6cHA=") == (
        {},
        {"Proxy-Authorization": "Basic cHU6cHA="},
    )
    assert proxy_authorization("http://fake.example.com/x", "Basic cHU6cHA=") == (
        {"Proxy-Authorization": "Basic cHU6cHA="},
        {},
    )
