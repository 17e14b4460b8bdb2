"""The inbound webhook's answers (SPEC 2.2): signature, Basic auth, tenants, bad input, dedupe, store down."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import sqlite3
from pathlib import Path
from urllib.parse import urlencode

import pytest
import structlog

from sms_gateway.config.model import Config, Credentials
from tests.harness import USER, V1, inbound_form, new_sid, running_gateway


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def nothing_stored(gw) -> None:  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.1)
    assert await gw.store.pending_inbound_count() == 0
    assert gw.watson.requests == [] and gw.twilio.messages == []


async def test_bad_or_missing_signature_is_403_and_nothing_is_stored(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        form = inbound_form("hi")
        status, body, _ = await gw.post_form(form, signature="RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        assert status == 403 and "X-Twilio-Signature" in body
        status, _, _ = await gw.post_form(form, sign=False)
        assert status == 403
        tampered = dict(form)
        signature = gw.sign(gw.url + "/sms.receiver/SmsRecv", form)
        tampered["Body"] = "transfer all my money"
        status, _, _ = await gw.post_form(tampered, signature=signature)
        assert status == 403
        wrong_key = gw.sign(gw.url + "/sms.receiver/SmsRecv", form, token="another-accounts-token")
        status, _, _ = await gw.post_form(form, signature=wrong_key)
        assert status == 403
        await nothing_stored(gw)


async def test_unknown_to_number_is_403(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        status, body, _ = await gw.post_form(inbound_form("hi", tenant="+19998887777"))
        assert status == 403 and '"forbidden"' in body
        await nothing_stored(gw)


async def test_tenant_matched_by_digits(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        await gw.sms("hi", tenant=V1.lstrip("+"))
        sent = await gw.wait_sent(1)
        assert sent[0].from_ == V1


async def test_basic_auth_challenge_then_credentials(tmp_path: Path) -> None:
    creds = Credentials("twilio-hook", "s3cret-hook-pass")
    async with running_gateway(tmp_path, tenant_overrides={"webhook_credentials": creds}) as gw:
        form = inbound_form("hi")
        status, _, headers = await gw.post_form(form)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic realm=")
        status, _, _ = await gw.post_form(form, headers={"Authorization": basic("twilio-hook", "wrong")})
        assert status == 403
        status, _, _ = await gw.post_form(form, headers={"Authorization": "Basic !!notbase64"})
        assert status == 403
        await nothing_stored(gw)
        status, _, _ = await gw.post_form(form, headers={"Authorization": basic("twilio-hook", "s3cret-hook-pass")})
        assert status == 200
        await gw.wait_sent(1)


def trusting_the_proxy(config: Config) -> Config:
    return dataclasses.replace(config, trust_forwarded_headers=True)


async def test_behind_a_trusted_proxy_the_signature_is_checked_against_the_forwarded_url(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, public_url=False, configure=trusting_the_proxy) as gw:
        form = inbound_form("via proxy")
        public = "https://sms.example.com/sms.receiver/SmsRecv"
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "sms.example.com",
            "X-Twilio-Signature": gw.sign(public, form),
        }
        status, _, _ = await gw.post_form(form, sign=False, headers=headers)
        assert status == 200
        sent = await gw.wait_sent(1)
        # The public URL is never learned from a request: without PUBLIC_URL, no status callback at all.
        assert sent[0].status_callback is None
        # Signed for the public URL but presented without the proxy's headers: rejected.
        form2 = inbound_form("no proxy")
        status, _, _ = await gw.post_form(form2, signature=gw.sign(public, form2))
        assert status == 403


async def test_untrusted_forwarded_headers_neither_pass_a_signature_nor_redirect_status_callbacks(
    tmp_path: Path,
) -> None:
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "attacker.example.com"}
    async with running_gateway(tmp_path, public_url=False) as gw:
        form = inbound_form("forged proxy")
        signed_for_forged = gw.sign("https://attacker.example.com/sms.receiver/SmsRecv", form)
        status, _, _ = await gw.post_form(form, signature=signed_for_forged, headers=forged)
        assert status == 403
        await nothing_stored(gw)
        # Signed for the URL as received, the same headers change nothing: later sends do not report elsewhere.
        status, _, _ = await gw.post_form(form, headers=forged)
        assert status == 200
        sent = await gw.wait_sent(1)
        assert sent[0].status_callback is None
    async with running_gateway(tmp_path, store_url="memory://") as gw:  # with PUBLIC_URL: always that
        status, _, _ = await gw.post_form(inbound_form("forged proxy"), headers=forged)
        assert status == 200
        callback = (await gw.wait_sent(1))[0].status_callback
        assert callback is not None and callback.startswith(f"{gw.url}/sms.receiver/twilio/status?mid=")


async def test_without_a_public_url_the_gateway_warns_at_startup(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running_gateway(tmp_path, public_url=False):
            pass
        async with running_gateway(tmp_path):
            pass
    warnings = [e for e in logs if e["event"] == "public_url_unset"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning" and "StatusCallback" in warnings[0]["reason"]


async def test_get_webhook_signs_the_query_string(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        url = f"{gw.url}/sms.receiver/SmsRecv?{urlencode(inbound_form('by GET'))}"
        async with gw.http.get(url, headers={"X-Twilio-Signature": gw.sign(url, {})}) as response:
            assert response.status == 200
        assert (await gw.wait_sent(1))[0].body == "You said: by GET"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"MessageSid": ""}, "MessageSid"),
        ({"MessageSid": "not-a-sid"}, "MessageSid"),
        ({"From": ""}, "From"),
        ({"NumMedia": "x"}, "NumMedia"),
        ({"NumMedia": "-1"}, "NumMedia"),
        ({"NumMedia": "11"}, "NumMedia"),
        ({"NumMedia": "1", "MediaUrl0": "ftp://files.example.com/a.jpg", "MediaContentType0": "image/jpeg"}, "Media"),
        ({"Body": "x" * 20_000}, "Body"),
    ],
)
async def test_malformed_webhooks_are_400(tmp_path: Path, change: dict[str, str], fragment: str) -> None:
    async with running_gateway(tmp_path) as gw:
        form = {**inbound_form("hi"), **change}
        for key in [k for k, v in change.items() if v == "" and k != "MessageSid"]:
            form.pop(key)
        if change.get("MessageSid") == "":
            for key in ("MessageSid", "SmsSid", "SmsMessageSid"):
                form.pop(key)
        status, body, _ = await gw.post_form(form)
        assert status == 400, body
        assert fragment in body
        await nothing_stored(gw)


async def test_missing_to_non_form_and_oversized_bodies(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        form = inbound_form("hi")
        del form["To"]
        status, _, _ = await gw.post_form(form)
        assert status == 400
        url = gw.url + "/sms.receiver/SmsRecv"
        async with gw.http.post(url, json={"From": USER, "To": V1}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "badRequest"
        async with gw.http.post(
            url, data=b"\xff\xfe=%%%&&=", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ) as response:
            assert response.status in (400, 403)
        huge = urlencode({"Body": "y" * 400_000, "To": V1}).encode()
        async with gw.http.post(
            url, data=huge, headers={"Content-Type": "application/x-www-form-urlencoded"}
        ) as response:
            assert response.status == 413
            assert "Traceback" not in await response.text()
        async with gw.http.post(url + "/nope") as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "notFound"
        async with gw.http.put(url) as response:
            assert response.status == 405
        await nothing_stored(gw)


async def test_concurrent_identical_deliveries_make_one_turn(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        form = inbound_form("only once", sid=new_sid())
        results = await asyncio.gather(*(gw.post_form(form) for _ in range(25)))
        assert {status for status, _, _ in results} == {200}, "every delivery is acknowledged"
        await gw.wait_sent(1)
        await gw.settle()
        # A replay after processing is still a duplicate.
        status, _, _ = await gw.post_form(form)
        assert status == 200
        await asyncio.sleep(0.2)
        await gw.settle()
        assert len(gw.watson.of_kind("v1")) == 1
        assert len(gw.twilio.messages) == 1


async def test_locked_sqlite_file_is_503_so_twilio_uses_its_fallback(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            form = inbound_form("while locked")
            status, body, _ = await gw.post_form(form)
            assert status == 503 and "storeUnavailable" in body and "Traceback" not in body
            async with gw.http.get(gw.url + "/ready") as response:
                assert response.status == 503
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Twilio's retry after the lock is gone is accepted and answered once.
        status, _, _ = await gw.post_form(form)
        assert status == 200
        assert (await gw.wait_sent(1))[0].body == "You said: while locked"


@pytest.mark.parametrize("path", ["/sms.receiver/SmsRecv", "/sms.receiver/sinch", "/sms.receiver/telesign/12345"])
async def test_a_webhook_declaring_a_charset_other_than_utf8_is_400(tmp_path: Path, path: str) -> None:
    async with running_gateway(tmp_path, sinch=True, telesign=True) as gw:
        form = inbound_form("hi")
        for charset in ("foo", "latin-1"):
            content_type = (
                "application/json" if "sinch" in path or "telesign" in path else "application/x-www-form-urlencoded"
            ) + f"; charset={charset}"
            async with gw.http.post(
                gw.url + path, data=urlencode(form).encode(), headers={"Content-Type": content_type}
            ) as response:
                body = await response.json()
                assert response.status == 400 and body["error"]["code"] == "badRequest", body
                assert "charset" in body["error"]["message"]
        async with gw.http.post(
            gw.url + "/sms.receiver/SmsRecv",
            data=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
                "X-Twilio-Signature": gw.sign(gw.url + "/sms.receiver/SmsRecv", form),
            },
        ) as response:
            assert response.status == 200, "UTF-8 declared is fine"
        await assert_turns(gw, 1)


async def assert_turns(gw, count: int) -> None:  # type: ignore[no-untyped-def]
    await gw.settle()
    assert len(gw.watson.of_kind("v1")) == count
