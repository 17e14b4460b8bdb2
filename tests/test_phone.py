"""`sms-gateway phone`'s simulator: its HTTP API against a real gateway (real signature checks, a real SQLite
file) with each provider played by its sandbox; the segments a long text arrives in; the configuration it runs.

The page itself is driven in a real browser by tests/test_phone_browser.py.
"""

from __future__ import annotations

import fnmatch
import io
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sms_gateway.config.model import Config, Credentials, EngineConfig, TenantConfig
from sms_gateway.engines.base import EngineError, TurnRequest
from sms_gateway.engines.echo import GOODBYE
from sms_gateway.model import EngineReply
from sms_gateway.phone.gateway import ECHO_TENANT_NUMBERS, Gateway, phone_config, running_gateway
from sms_gateway.phone.observing import ObservingEngine
from sms_gateway.phone.segments import segments
from sms_gateway.phone.server import MAX_UPLOAD_BYTES, STATIC_FILES, create_phone_app
from sms_gateway.phone.simulator import Bubble, Simulator, TenantView, TurnRecord
from sms_gateway.providers.sinch.settings import SinchConfig
from sms_gateway.providers.twilio.settings import TwilioConfig
from tests.waiting import until

PICTURE = (Path(__file__).parent / "fixtures" / "phone" / "picture.png").read_bytes()
USER = "+15551230001"
Client = TestClient[web.Request, web.Application]
# The permanent refusal each sandbox answers with, as the engine then hears it in smsError.code.
REFUSAL_CODES = {"twilio": "21610", "sinch": "400", "telesign": "3071"}


@pytest.fixture
async def phone(
    tmp_path: Path, aiohttp_client: Callable[[web.Application], Any]
) -> AsyncIterator[tuple[Client, Gateway]]:
    async with running_gateway(Config(), tmp_path / "phone.db") as gateway:
        client: Client = await aiohttp_client(create_phone_app(gateway))
        yield client, gateway


def replies(gateway: Gateway, tenant: str, user: str = USER) -> list[Bubble]:
    return [b for b in gateway.simulator.bubbles if b.direction == "to_user" and b.tenant == tenant and b.user == user]


def turns(gateway: Gateway, tenant: str, user: str = USER) -> list[TurnRecord]:
    return [t for t in gateway.simulator.turns if t.tenant == tenant and t.user == user]


async def upload(client: Client, body: bytes, content_type: str) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(body), filename="picture.png", content_type=content_type)
    return await client.post("/api/upload", data=form)


async def say(
    client: Client, tenant: str, text: str, media: list[dict[str, str]] | None = None, user: str = USER
) -> dict[str, Any]:
    answer = await client.post("/api/send", json={"user": user, "tenant": tenant, "text": text, "media": media or []})
    assert answer.status == 200, await answer.text()
    result: dict[str, Any] = await answer.json()
    return result


@pytest.mark.parametrize("kind", sorted(ECHO_TENANT_NUMBERS))
async def test_a_picture_goes_to_the_gateway_signed_and_comes_back_delivered(
    phone: tuple[Client, Gateway], kind: str
) -> None:
    client, gateway = phone
    tenant = ECHO_TENANT_NUMBERS[kind]
    uploaded = await upload(client, PICTURE, "image/png")
    assert uploaded.status == 201
    media = await uploaded.json()

    sent = await say(client, tenant, "look at this", [media])

    # The gateway checked the provider's signature and accepted the webhook.
    assert sent["status"] == "accepted", sent
    await until(
        lambda: any(media["url"] in r.media and r.status == "delivered" for r in replies(gateway, tenant)),
        what=f"the picture back through {kind}, delivered",
    )
    (turn,) = turns(gateway, tenant)
    assert turn.text == "look at this"
    assert [m["mediaURL"] for m in turn.state["smsMedia"]] == [media["url"]]
    if kind == "twilio":  # the one whose webhook carries the media's content type
        assert turn.state["smsMedia"][0]["mediaContentType"] == "image/png"
    assert turn.commands == [{"name": "smsActSendMedia", "parameters": {"mediaURL": [media["url"]]}}]
    assert turn.provider and not any(request["refused"] for request in turn.provider)
    # The picture is served where the gateway and the page fetch it.
    async with client.get(media["url"].removeprefix(str(client.make_url("")).rstrip("/"))) as served:
        assert served.status == 200 and await served.read() == PICTURE
        assert served.content_type == "image/png"
        assert served.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("kind", sorted(ECHO_TENANT_NUMBERS))
async def test_a_send_the_provider_refuses_reaches_the_engine_as_sms_error(
    phone: tuple[Client, Gateway], kind: str
) -> None:
    client, gateway = phone
    tenant = ECHO_TENANT_NUMBERS[kind]
    armed = await client.post("/api/fail-next-send", json={"tenant": tenant})
    assert (await armed.json()) == {"failNextSend": True}

    await say(client, tenant, "first")
    await until(lambda: any(r.status == "failed" for r in replies(gateway, tenant)), what="a failed reply")
    assert not gateway.sandboxes[kind].fail_next_send  # once only
    assert turns(gateway, tenant)[0].provider[0]["refused"] is True

    await say(client, tenant, "second")
    await until(lambda: len(turns(gateway, tenant)) == 2, what="the second turn")
    error = turns(gateway, tenant)[1].state["smsError"]
    assert isinstance(error, dict) and error["code"] == REFUSAL_CODES[kind], error
    await until(
        lambda: any(r.text == "You said: second" and r.status == "delivered" for r in replies(gateway, tenant)),
        what="the next reply delivered",
    )


async def test_letting_the_session_time_out_ends_it_and_the_next_text_starts_another(
    phone: tuple[Client, Gateway],
) -> None:
    client, gateway = phone
    tenant = ECHO_TENANT_NUMBERS["twilio"]
    none_yet = await client.post("/api/time-out", json={"user": USER, "tenant": tenant})
    assert none_yet.status == 404

    await say(client, tenant, "hello")
    await until(lambda: len(replies(gateway, tenant)) == 1, what="the first reply")
    first_session = turns(gateway, tenant)[0].state["smsSessionID"]
    timed_out = await client.post("/api/time-out", json={"user": USER, "tenant": tenant})
    assert (await timed_out.json()) == {"smsSessionID": first_session}
    # The sweeper ends it as any idle session: the engine's timeout turn, its goodbye to the user.
    await until(lambda: any(r.text == GOODBYE for r in replies(gateway, tenant)), what="the goodbye")

    await say(client, tenant, "hello again")
    await until(lambda: turns(gateway, tenant)[-1].text == "hello again", what="the next turn")
    assert turns(gateway, tenant)[-1].state["smsSessionID"] != first_session


async def test_users_have_their_own_conversations(phone: tuple[Client, Gateway]) -> None:
    client, gateway = phone
    tenant = ECHO_TENANT_NUMBERS["twilio"]
    await say(client, tenant, "from one")
    await say(client, tenant, "from another", user="+1 555 999 0000")
    await until(
        lambda: len(replies(gateway, tenant)) == 1 and len(replies(gateway, tenant, "+15559990000")) == 1,
        what="a reply on each phone",
    )
    assert replies(gateway, tenant)[0].text == "You said: from one"
    state = await (await client.get("/api/state")).json()
    assert "+15559990000" in state["users"]
    assert {t["number"]: t["provider"] for t in state["tenants"]} == {n: k for k, n in ECHO_TENANT_NUMBERS.items()}


async def test_uploads_are_pictures_video_or_audio_of_limited_size(phone: tuple[Client, Gateway]) -> None:
    client, _ = phone
    html = await upload(client, b"<script>alert(1)</script>", "text/html")
    assert html.status == 415 and "error" in await html.json()
    too_big = await upload(client, b"\0" * (MAX_UPLOAD_BYTES + 1), "image/png")
    assert too_big.status == 413 and "error" in await too_big.json()
    not_multipart = await client.post("/api/upload", json={"file": "x"})
    assert not_multipart.status == 400
    unknown = await client.get("/media/nothing-here")
    assert unknown.status == 404
    odd_type = await upload(client, PICTURE, "image/p\u2603g")
    assert odd_type.status < 500
    if odd_type.status == 201:
        served = await client.get("/media/" + (await odd_type.json())["url"].rsplit("/", 1)[1])
        assert served.status == 200


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"user": "+15551230001", "tenant": "+19999999999", "text": "hi"}',
        b'{"user": "nobody", "tenant": "+15005550006", "text": "hi"}',
        b'{"user": "+15551230001", "tenant": "+15005550006", "text": "  "}',
        b'{"user": "+15551230001", "tenant": "+15005550006", "text": "hi", "media": [{"url": "file:///etc/passwd"}]}',
        b'{"user": "+15551230001", "tenant": "+15005550006", "text": "\\ud800 a lone surrogate"}',
    ],
)
async def test_a_bad_send_is_a_json_400_and_nothing_is_sent(phone: tuple[Client, Gateway], body: bytes) -> None:
    client, gateway = phone
    answer = await client.post("/api/send", data=body, headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert (await answer.json())["error"]["message"]
    assert gateway.simulator.bubbles == []


async def test_the_page_and_its_files_are_served_with_no_outside_resource(phone: tuple[Client, Gateway]) -> None:
    client, _ = phone
    page = await client.get("/")
    html = await page.text()
    assert page.status == 200 and page.content_type == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name in ("phone.css", "phone.js"):
        assert f"/static/{name}" in html
        static = await client.get(f"/static/{name}")
        assert static.status == 200
        assert "http://" not in await static.text() and "https://" not in await static.text()
    assert (await client.get("/static/../server.py")).status == 404
    assert (await client.get("/static/missing.js")).status == 404


async def test_live_updates_arrive_as_server_sent_events(phone: tuple[Client, Gateway]) -> None:
    client, _ = phone
    async with client.get("/api/events") as stream:
        assert stream.content_type == "text/event-stream"
        assert (await stream.content.readline()) == b": connected\n"
        await say(client, ECHO_TENANT_NUMBERS["twilio"], "hi")
        while not (line := await stream.content.readline()).startswith(b"data: "):
            pass
        assert b'"kind": "bubble"' in line and b'"text": "hi"' in line


def test_long_texts_arrive_in_segments_as_a_phone_receives_them() -> None:
    assert segments("a" * 160) == ["a" * 160]
    assert [len(s) for s in segments("a" * 161)] == [153, 8]
    # A character of the GSM extension table takes two of a segment's septets.
    assert [len(s) for s in segments("€" * 81)] == [76, 5]
    # Any character outside GSM 03.38 makes the text UCS-2: 70 in one SMS, 67 per segment.
    assert segments("ж" * 70) == ["ж" * 70]
    assert [len(s) for s in segments("ж" * 71)] == [67, 4]
    # An emoji is two UTF-16 units, never split.
    assert [len(s) for s in segments("😀" * 40)] == [33, 7]
    assert "".join(segments("ok 😀 " * 50)) == "ok 😀 " * 50


def test_the_phone_runs_the_configured_engines_with_each_provider_played_by_its_sandbox(tmp_path: Path) -> None:
    watson = EngineConfig(kind="watson_v1", url="https://watson.example.com", workspace_id="w")
    configured = Config(
        tenants=(
            TenantConfig(
                "+15550001111",
                watson,
                TwilioConfig(url="https://api.twilio.com", username="AC1", password="real"),
                webhook_credentials=Credentials("u", "p"),
            ),
            TenantConfig(
                "+15550002222",
                watson,
                SinchConfig(project_id="p", app_id="a", key_id="k", key_secret="s", webhook_secret="w"),
            ),
        ),
        http_host="0.0.0.0",
        store_url="redis://production:6379/0",
    )
    api_urls = {"twilio": "http://127.0.0.1:1", "sinch": "http://127.0.0.1:2"}

    config = phone_config(configured, "http://127.0.0.1:3", api_urls, tmp_path / "p.db")

    assert [t.engine for t in config.tenants] == [watson, watson]
    twilio, sinch = (t.provider for t in config.tenants)
    assert isinstance(twilio, TwilioConfig) and twilio.url == "http://127.0.0.1:1" and twilio.password != "real"
    assert isinstance(sinch, SinchConfig) and sinch.url == "http://127.0.0.1:2"
    assert all(t.allow_session_create_via_sms and t.webhook_credentials is None for t in config.tenants)
    assert config.http_host == "127.0.0.1" and config.store_url == f"sqlite:///{tmp_path / 'p.db'}"
    assert config.public_url == "http://127.0.0.1:3" and config.media.allow_private_hosts

    echo = phone_config(
        Config(), "http://127.0.0.1:3", {k: "http://127.0.0.1:4" for k in ECHO_TENANT_NUMBERS}, tmp_path / "e.db"
    )
    assert {t.provider.kind: t.engine.kind for t in echo.tenants} == {k: "echo" for k in ECHO_TENANT_NUMBERS}


def test_the_page_ships_with_the_package() -> None:
    """`pip install .` (not only an editable install) carries the page: pyproject's package data covers it."""
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["sms_gateway"]
    static = Path(__file__).parent.parent / "sms_gateway" / "phone" / "static"
    shipped = {f"phone/static/{name}" for name in STATIC_FILES}
    assert {f"phone/static/{p.name}" for p in static.iterdir()} == shipped
    assert all(any(fnmatch.fnmatch(path, pattern) for pattern in patterns) for path in shipped)


async def test_the_inspector_sees_what_the_engine_received_even_when_it_fails() -> None:
    class Failing:
        async def turn(self, request: TurnRequest) -> EngineReply:
            raise EngineError("Watson answered 503", status=503, retryable=True)

        async def close(self) -> None:
            return None

    simulator = Simulator([TenantView("+15005550006", "twilio", "Twilio", "")])
    engine = ObservingEngine(Failing(), simulator.engine_turn)
    state = {"smsTenantPhoneNumber": "15005550006", "smsUserPhoneNumber": USER, "smsSessionID": "s1"}
    with pytest.raises(EngineError):
        await engine.turn(TurnRequest(text="hi", state=state))
    (turn,) = simulator.turns
    assert (turn.user, turn.tenant, turn.text) == (USER, "+15005550006", "hi")
    assert turn.state == state and turn.error == "Watson answered 503" and turn.answer == {}
