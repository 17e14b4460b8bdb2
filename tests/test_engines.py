from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web import Application

from sms_gateway.config.model import EngineConfig, ProxyConfig
from sms_gateway.engines.auth import (
    BasicAuthorizer,
    BearerAuthorizer,
    IamAuthorizer,
    NoAuthorizer,
    create_authorizer,
)
from sms_gateway.engines.base import EngineError, TurnRequest
from sms_gateway.engines.echo import GOODBYE, WELCOME, EchoEngine
from sms_gateway.engines.factory import create_engine
from sms_gateway.engines.http import HttpOptions
from sms_gateway.engines.watson_v1 import WatsonV1Engine, normalise_text
from sms_gateway.engines.watson_v2 import WatsonV2Engine
from sms_gateway.model import Command
from tests.fakes.watson import FakeWatson, text_output

ServerFactory = Callable[[Application], Awaitable[TestServer]]

TENANT, USER = "+15555550100", "+15555550199"
MEDIA = [{"mediaURL": "https://example.com/cat.jpg", "mediaContentType": "image/jpeg"}]


def state(**extra: Any) -> dict[str, Any]:
    return {
        "smsTenantPhoneNumber": TENANT,
        "smsUserPhoneNumber": USER,
        "smsSessionID": "sess-1",
        "smsMedia": [],
        **extra,
    }


@pytest.fixture
def fake() -> FakeWatson:
    return FakeWatson(workspaces={"WS1"}, assistants={"A1": {"E1"}})


@pytest.fixture
async def base_url(fake: FakeWatson, aiohttp_server: ServerFactory) -> str:
    server = await aiohttp_server(fake.app())
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def sleep(sleeps: list[float]) -> Callable[[float], Awaitable[None]]:
    async def record(delay: float) -> None:
        sleeps.append(delay)

    return record


def v1(base_url: str, **kw: Any) -> EngineConfig:
    return EngineConfig(kind="watson_v1", url=base_url, workspace_id="WS1", **kw)


def v2(base_url: str, **kw: Any) -> EngineConfig:
    return EngineConfig(**{"kind": "watson_v2", "url": base_url, "assistant_id": "A1", "environment_id": "E1", **kw})


# -- Watson Assistant v1 ------------------------------------------------------------------------------


async def test_v1_request_shape_and_context_echo(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    engine = WatsonV1Engine(v1(base_url), http)
    first = await engine.turn(TurnRequest(text="hello", state=state(smsMedia=MEDIA), user_id=USER))
    assert first.texts == ["You said: hello"]
    context = first.engine_state["context"]
    assert context["conversation_id"] and context["system"]["dialog_turn_counter"] == 1

    await engine.turn(TurnRequest(text="again", state=state(), engine_state=first.engine_state))
    req1, req2 = fake.of_kind("v1")
    assert req1.method == "POST" and req1.path == "/v1/workspaces/WS1/message"
    assert req1.query == {"version": "2021-11-27"}
    assert req1.json["input"] == {"text": "hello"}
    assert req1.json["alternate_intents"] is False
    assert req1.json["context"] == state(smsMedia=MEDIA)
    # the second turn sends back the whole returned context, system included, with fresh state vars
    sent = req2.json["context"]
    assert sent["conversation_id"] == context["conversation_id"]
    assert sent["system"] == context["system"]
    assert sent["smsMedia"] == []
    assert sent["smsTenantPhoneNumber"] == TENANT


async def test_v1_version_date_from_config(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    engine = WatsonV1Engine(v1(base_url + "/", api_version="2018-09-20"), http)
    await engine.turn(TurnRequest(text="hi", state=state()))
    (req,) = fake.of_kind("v1")
    assert req.path == "/v1/workspaces/WS1/message" and req.query == {"version": "2018-09-20"}


async def test_v1_none_state_value_removes_context_key(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    engine = WatsonV1Engine(v1(base_url), http)
    error = {"code": "21610", "message": "unsubscribed"}
    first = await engine.turn(TurnRequest(text="hi", state=state(smsError=error)))
    assert first.engine_state["context"]["smsError"] == error
    await engine.turn(TurnRequest(text="hi", state=state(smsError=None), engine_state=first.engine_state))
    assert fake.of_kind("v1")[0].json["context"]["smsError"] == error
    assert "smsError" not in fake.of_kind("v1")[1].json["context"]


async def test_v1_smsmedia_defaults_to_empty_list() -> None:
    from sms_gateway.engines.watson_v1 import build_context

    assert build_context({"smsMedia": MEDIA, "a": 1}, {"b": 2}) == {"smsMedia": [], "a": 1, "b": 2}
    assert build_context(None, {"smsMedia": None}) == {"smsMedia": []}
    assert build_context({"smsAction": {"command": "x"}}, {}) == {"smsMedia": []}


async def test_v1_text_normalisation(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    engine = WatsonV1Engine(v1(base_url), http)
    await engine.turn(TurnRequest(text="  line one\r\nline\ttwo\n\n  three\t ", state=state()))
    await engine.turn(TurnRequest(text="x" * 3000, state=state()))
    first, second = fake.of_kind("v1")
    assert first.json["input"]["text"] == "line one line two three"
    assert second.json["input"]["text"] == "x" * 2048
    assert normalise_text(("a " * 1024) + "b") == ("a " * 1024).strip()  # no trailing space after the cut


async def test_v1_commands_from_output_and_context_fire_once(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    def dialog(text: str, context: dict[str, Any]) -> dict[str, Any]:
        if text != "media":
            return {"output": text_output("ok")}
        return {
            "output": text_output(
                "Here it is", smsAction={"command": "setSessionTimeoutCount", "parameters": {"count": 60}}
            ),
            "context": {
                "smsAction": {
                    "command": "smsActSendMedia",
                    "parameters": {"mediaURL": ["https://x.test/a.gif"]},
                }
            },
        }

    fake.v1_dialog = dialog
    engine = WatsonV1Engine(v1(base_url), http)
    reply = await engine.turn(TurnRequest(text="media", state=state()))
    assert reply.texts == ["Here it is"]
    assert reply.commands == [
        Command("setSessionTimeoutCount", {"count": 60}),
        Command("smsActSendMedia", {"mediaURL": ["https://x.test/a.gif"]}),
    ]
    assert "smsAction" not in reply.engine_state["context"]
    second = await engine.turn(TurnRequest(text="next", state=state(), engine_state=reply.engine_state))
    assert second.commands == []
    assert "smsAction" not in fake.of_kind("v1")[1].json["context"]


async def test_soe_is_posted_to_the_url_as_given(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    config = EngineConfig(kind="soe", url=f"{base_url}/soe/orchestrate?tenant=t1")
    engine = WatsonV1Engine(config, http)
    reply = await engine.turn(TurnRequest(text="hi", state=state()))
    assert reply.texts == ["You said: hi"]
    (req,) = fake.of_kind("soe")
    assert req.path == "/soe/orchestrate" and req.query == {"tenant": "t1"}
    assert req.json["context"]["smsUserPhoneNumber"] == USER


async def test_v1_answer_without_context_keeps_sent_context(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    fake.fail(status=200, body={"output": {"text": ["no context here"]}})
    engine = WatsonV1Engine(v1(base_url), http)
    reply = await engine.turn(
        TurnRequest(text="hi", state=state(), engine_state={"context": {"conversation_id": "c9"}})
    )
    assert reply.texts == ["no context here"]
    assert reply.engine_state == {"context": {"conversation_id": "c9", **state()}}


# -- retries, timeouts, bad answers ------------------------------------------------------------------


async def test_retries_5xx_then_succeeds(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]
) -> None:
    fake.fail(times=2, status=503)
    engine = WatsonV1Engine(v1(base_url, max_retries=2), http, sleep=sleep)
    reply = await engine.turn(TurnRequest(text="hi", state=state()))
    assert reply.texts == ["You said: hi"]
    assert len(fake.of_kind("v1")) == 3
    assert sleeps == [0.25, 0.5]


async def test_configured_retry_interval_is_the_wait_before_every_retry(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]
) -> None:
    # IBM's convRetryInterval (ms): a fixed wait, not our doubling backoff.
    fake.fail(times=3, status=503)
    engine = WatsonV1Engine(v1(base_url, max_retries=3, retry_interval_ms=1500), http, sleep=sleep)
    reply = await engine.turn(TurnRequest(text="hi", state=state()))
    assert reply.texts == ["You said: hi"]
    assert sleeps == [1.5, 1.5, 1.5]


async def test_gives_up_after_max_retries(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]
) -> None:
    fake.fail(times=5, status=500)
    engine = WatsonV1Engine(v1(base_url, max_retries=3), http, sleep=sleep)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert info.value.status == 500 and info.value.retryable
    assert len(fake.of_kind("v1")) == 4 and len(sleeps) == 3


async def test_zero_retries(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any) -> None:
    fake.fail(times=1, status=502)
    engine = WatsonV1Engine(v1(base_url, max_retries=0), http, sleep=sleep)
    with pytest.raises(EngineError):
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert len(fake.of_kind("v1")) == 1


async def test_429_honours_retry_after(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]
) -> None:
    fake.fail(times=1, status=429, headers={"Retry-After": "1"})
    fake.fail(times=1, status=429, headers={"Retry-After": "3600"})
    engine = WatsonV1Engine(v1(base_url), http, sleep=sleep)
    await engine.turn(TurnRequest(text="hi", state=state()))
    assert sleeps == [1.0, 5.0]  # capped


async def test_4xx_is_not_retried(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]
) -> None:
    fake.fail(times=3, status=400, body={"error": "Invalid request", "code": 400})
    engine = WatsonV1Engine(v1(base_url), http, sleep=sleep)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert info.value.status == 400 and not info.value.retryable
    assert "Invalid request" in str(info.value)
    assert len(fake.of_kind("v1")) == 1 and sleeps == []


async def test_read_timeout_is_retried(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any
) -> None:
    fake.fail(times=1, status=200, delay=0.5)
    engine = WatsonV1Engine(v1(base_url, read_timeout_ms=100, max_retries=1), http, sleep=sleep)
    reply = await engine.turn(TurnRequest(text="hi", state=state()))
    assert reply.texts == ["You said: hi"]
    assert len(fake.of_kind("v1")) == 2


async def test_read_timeouts_exhaust_retries(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any
) -> None:
    fake.fail(times=2, status=200, delay=0.5)
    engine = WatsonV1Engine(v1(base_url, read_timeout_ms=100, max_retries=1), http, sleep=sleep)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert info.value.retryable and info.value.status is None
    assert len(fake.of_kind("v1")) == 2


async def test_connection_refused_is_retried(http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = WatsonV1Engine(v1(f"http://127.0.0.1:{port}", max_retries=2), http, sleep=sleep)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert info.value.retryable and "unreachable" in str(info.value)
    assert len(sleeps) == 2


async def trickle(request: web.Request) -> web.StreamResponse:
    """200 at once, then a JSON body one byte every 50 ms (1.5 s in all): no single read ever waits long."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        for _ in range(30):
            await response.write(b" ")
            await asyncio.sleep(0.05)
        await response.write(b'{"access_token": "t", "expires_in": 3600, "expiration": 9999999999}')
    except ConnectionError:
        pass
    return response


async def test_an_engine_trickling_its_answer_is_cut_at_connect_plus_read(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession, sleep: Any
) -> None:
    app = Application()
    app.router.add_post("/{tail:.*}", trickle)
    server = await aiohttp_server(app)
    engine = WatsonV1Engine(
        v1(str(server.make_url("")).rstrip("/"), connect_timeout_ms=200, read_timeout_ms=300, max_retries=0),
        http,
        sleep=sleep,
    )
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert info.value.retryable and time.monotonic() - started < 0.5 + 0.5


async def test_an_iam_token_endpoint_trickling_its_answer_is_cut_at_connect_plus_read(
    aiohttp_server: ServerFactory,
) -> None:
    app = Application()
    app.router.add_post("/identity/token", trickle)
    server = await aiohttp_server(app)
    authorizer = IamAuthorizer("key", str(server.make_url("/identity/token")), timeout=(0.2, 0.3))
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        await authorizer.headers()
    assert info.value.retryable and time.monotonic() - started < 0.5 + 0.5


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html>proxy error</html>", "text/html"),
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
    ],
)
async def test_non_object_answer_is_an_engine_error(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, body: str, content_type: str
) -> None:
    fake.fail(times=1, status=200, body=body, content_type=content_type)
    engine = WatsonV1Engine(v1(base_url), http, sleep=sleep)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert not info.value.retryable
    assert len(fake.of_kind("v1")) == 1


def test_http_options_from_config() -> None:
    config = EngineConfig(
        connect_timeout_ms=1500,
        read_timeout_ms=2500,
        max_retries=4,
        proxy=ProxyConfig(url="http://proxy:3128", username="u", password="p"),
    )
    options = HttpOptions.from_config(config)
    assert options.timeout.sock_connect == 1.5 and options.timeout.sock_read == 2.5
    assert options.timeout.total == 4.0
    assert options.max_retries == 4
    assert options.proxy == "http://proxy:3128"
    assert options.proxy_headers == {"Proxy-Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert HttpOptions.from_config(EngineConfig()).proxy is None


# -- Watson Assistant v2 ------------------------------------------------------------------------------


async def test_v2_environments_style_session_and_message_shape(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    engine = WatsonV2Engine(v2(base_url), http)
    first = await engine.turn(TurnRequest(text="hi\nthere", state=state(smsMedia=MEDIA), user_id=USER))
    assert first.texts == ["You said: hi there"]
    session_id = first.engine_state["sessionId"]
    (create,) = fake.of_kind("v2_session")
    assert create.path == "/v2/assistants/A1/environments/E1/sessions"
    assert create.query == {"version": "2024-08-25"}
    (message,) = fake.of_kind("v2_message")
    assert message.path == f"/v2/assistants/A1/environments/E1/sessions/{session_id}/message"
    assert message.query == {"version": "2024-08-25"}
    assert message.json == {
        "input": {
            "message_type": "text",
            "text": "hi there",
            "options": {"return_context": True},
            "attachments": [{"url": "https://example.com/cat.jpg", "media_type": "image/jpeg"}],
        },
        "context": {
            "skills": {"main skill": {"user_defined": state(smsMedia=MEDIA)}},
            "integrations": {
                "text_messaging": {"assistant_phone_number": TENANT, "private": {"user_phone_number": USER}}
            },
        },
        "user_id": USER,
    }

    second = await engine.turn(TurnRequest(text="more", state=state(), engine_state=first.engine_state))
    assert second.engine_state["sessionId"] == session_id
    assert len(fake.of_kind("v2_session")) == 1
    last = fake.of_kind("v2_message")[-1].json
    assert "attachments" not in last["input"]
    assert last["context"]["skills"]["main skill"]["user_defined"]["smsMedia"] == []


async def test_v2_legacy_path_style(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    engine = WatsonV2Engine(v2(base_url, v2_path_style="legacy", environment_id=None), http)
    reply = await engine.turn(TurnRequest(text="hi", state=state()))
    assert fake.of_kind("v2_session")[0].path == "/v2/assistants/A1/sessions"
    assert fake.of_kind("v2_message")[0].path == f"/v2/assistants/A1/sessions/{reply.engine_state['sessionId']}/message"


async def test_v2_attachments_capped_at_five(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    media = [{"mediaURL": f"https://x.test/{i}.jpg", "mediaContentType": None} for i in range(7)]
    await WatsonV2Engine(v2(base_url), http).turn(TurnRequest(text="", state=state(smsMedia=media)))
    attachments = fake.of_kind("v2_message")[0].json["input"]["attachments"]
    assert attachments == [{"url": f"https://x.test/{i}.jpg"} for i in range(5)]


async def test_v2_invalid_session_renewed_within_one_turn(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any, sleeps: list[float]
) -> None:
    engine = WatsonV2Engine(v2(base_url), http, sleep=sleep)
    first = await engine.turn(TurnRequest(text="one", state=state()))
    fake.expire_sessions()
    fake.requests.clear()

    second = await engine.turn(TurnRequest(text="two", state=state(), engine_state=first.engine_state))
    assert second.texts == ["You said: two"]
    assert second.engine_state["sessionId"] != first.engine_state["sessionId"]
    kinds = [r.kind for r in fake.requests]
    assert kinds == ["v2_message", "v2_session", "v2_message"]
    stale, fresh = fake.of_kind("v2_message")
    assert stale.json == fresh.json  # the same turn, sent again
    assert first.engine_state["sessionId"] in stale.path and second.engine_state["sessionId"] in fresh.path
    assert sleeps == []


async def test_v2_resource_not_found_is_not_a_session_expiry(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    engine = WatsonV2Engine(v2(base_url, environment_id="E-unknown"), http)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state(), engine_state={"sessionId": "s-1"}))
    assert info.value.status == 404 and "Resource not found" in str(info.value)
    assert fake.of_kind("v2_session") == [] and len(fake.of_kind("v2_message")) == 1

    unknown = WatsonV2Engine(v2(base_url, assistant_id="nope"), http)
    with pytest.raises(EngineError):
        await unknown.turn(TurnRequest(text="hi", state=state()))
    assert len(fake.of_kind("v2_session")) == 1


async def test_v2_context_command_fires_once(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    media = {"command": "smsActSendMedia", "parameters": {"mediaURL": ["https://x.test/a.png"]}}

    def dialog(text: str, user_defined: dict[str, Any]) -> dict[str, Any]:
        generic = [{"response_type": "text", "text": "ok"}]
        if text == "media":
            return {"output": {"generic": generic}, "user_defined": {"smsAction": media}}
        return {"output": {"generic": generic}}

    fake.v2_dialog = dialog
    engine = WatsonV2Engine(v2(base_url), http)
    first = await engine.turn(TurnRequest(text="media", state=state(smsError=None)))
    assert first.commands == [Command("smsActSendMedia", {"mediaURL": ["https://x.test/a.png"]})]
    assert first.engine_state["clearKeys"] == ["smsAction"]
    # None state values are sent as null so the stateful session forgets them
    assert fake.of_kind("v2_message")[0].json["context"]["skills"]["main skill"]["user_defined"]["smsError"] is None

    second = await engine.turn(TurnRequest(text="next", state=state(), engine_state=first.engine_state))
    assert second.commands == []
    assert "clearKeys" not in second.engine_state
    sent = fake.of_kind("v2_message")[1].json["context"]["skills"]["main skill"]["user_defined"]
    assert sent["smsAction"] is None


async def test_v2_generic_user_defined_commands(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    fake.v2_dialog = lambda text, ud: {
        "output": {
            "generic": [
                {"response_type": "text", "text": "Bye"},
                {
                    "response_type": "user_defined",
                    "user_defined": {"smsAction": {"command": "terminateSession"}},
                },
            ],
            "user_defined": {"smsAction": {"command": "setSessionTimeoutCount", "parameters": {"count": 5}}},
        }
    }
    reply = await WatsonV2Engine(v2(base_url), http).turn(TurnRequest(text="bye", state=state()))
    assert reply.texts == ["Bye"]
    assert reply.commands == [Command("setSessionTimeoutCount", {"count": 5}), Command("terminateSession")]


async def test_v2_session_create_without_id_is_an_error(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    fake.fail(status=201, body={}, kinds=("v2_session",))
    with pytest.raises(EngineError, match="session_id"):
        await WatsonV2Engine(v2(base_url), http).turn(TurnRequest(text="hi", state=state()))


async def test_v2_retries_session_create(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any
) -> None:
    fake.fail(status=503, kinds=("v2_session",))
    reply = await WatsonV2Engine(v2(base_url), http, sleep=sleep).turn(TurnRequest(text="hi", state=state()))
    assert reply.texts == ["You said: hi"] and len(fake.of_kind("v2_session")) == 2


# -- auth ---------------------------------------------------------------------------------------------


async def test_basic_auth_header(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    expected = "Basic " + base64.b64encode(b"user:p@ss:word").decode()
    fake.expected_authorization = expected
    engine = WatsonV1Engine(v1(base_url, auth="basic", username="user", password="p@ss:word"), http)
    await engine.turn(TurnRequest(text="hi", state=state()))
    assert fake.of_kind("v1")[0].headers["Authorization"] == expected


async def test_bearer_auth_header(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    fake.expected_authorization = "Bearer tok-123"
    engine = WatsonV2Engine(v2(base_url, auth="bearer", bearer_token="tok-123"), http)
    await engine.turn(TurnRequest(text="hi", state=state()))
    assert {r.headers["Authorization"] for r in fake.requests} == {"Bearer tok-123"}


async def test_no_auth_sends_no_header(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    await WatsonV1Engine(v1(base_url), http).turn(TurnRequest(text="hi", state=state()))
    assert "Authorization" not in fake.of_kind("v1")[0].headers


async def test_wrong_credentials_are_not_retried(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession, sleep: Any
) -> None:
    fake.expected_authorization = "Bearer right"
    engine = WatsonV1Engine(v1(base_url, auth="bearer", bearer_token="wrong"), http, sleep=sleep)
    with pytest.raises(EngineError) as info:
        await engine.turn(TurnRequest(text="hi", state=state()))
    assert info.value.status == 401 and len(fake.of_kind("v1")) == 1


async def test_iam_token_fetched_once_off_the_event_loop(
    fake: FakeWatson, base_url: str, http: aiohttp.ClientSession
) -> None:
    fake.expected_authorization = "iam"
    config = v1(base_url, auth="iam", apikey="good-key", token_url=f"{base_url}/identity/token")
    authorizer = create_authorizer(config)
    assert isinstance(authorizer, IamAuthorizer)
    assert authorizer.authenticator.token_manager.http_config == {"timeout": (30.0, 30.0)}
    threads: list[int] = []
    authenticate = authorizer.authenticator.authenticate

    def spy(request: dict[str, Any]) -> None:
        threads.append(threading.get_ident())
        authenticate(request)

    authorizer.authenticator.authenticate = spy
    engine = WatsonV1Engine(config, http, authorizer=authorizer)
    replies = await asyncio.gather(*(engine.turn(TurnRequest(text=f"t{i}", state=state())) for i in range(20)))
    await engine.turn(TurnRequest(text="later", state=state()))

    assert [r.texts for r in replies] == [[f"You said: t{i}"] for i in range(20)]
    assert fake.token_fetches == 1
    assert len(threads) == 1 and threads[0] != threading.get_ident()
    (token_request,) = fake.of_kind("iam")
    assert token_request.path == "/identity/token"
    assert token_request.json["grant_type"] == "urn:ibm:params:oauth:grant-type:apikey"
    assert token_request.json["apikey"] == "good-key"
    (token,) = fake.issued_tokens
    assert {r.headers["Authorization"] for r in fake.of_kind("v1")} == {f"Bearer {token}"}


async def test_iam_header_cache_expires_at_refresh_time(fake: FakeWatson, base_url: str) -> None:
    now = [0.0]
    authorizer = IamAuthorizer("good-key", f"{base_url}/identity/token", clock=lambda: now[0])
    calls: list[int] = []
    authenticate = authorizer.authenticator.authenticate

    def spy(request: dict[str, Any]) -> None:
        calls.append(1)
        authenticate(request)

    authorizer.authenticator.authenticate = spy
    now[0] = 1.0
    first = await authorizer.headers()
    manager = authorizer.authenticator.token_manager
    now[0] = manager.refresh_time - 1
    assert await authorizer.headers() == first and len(calls) == 1
    now[0] = manager.refresh_time + 1
    assert await authorizer.headers() == first and len(calls) == 2  # SDK still has a valid token
    assert fake.token_fetches == 1


async def test_iam_via_apikey_username_convention(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    fake.expected_authorization = "iam"
    config = v1(base_url, auth="basic", username="apikey", password="good-key", token_url=f"{base_url}/")
    assert isinstance(create_authorizer(config), IamAuthorizer)
    await WatsonV1Engine(config, http).turn(TurnRequest(text="hi", state=state()))
    assert fake.token_fetches == 1


async def test_iam_bad_apikey_is_an_engine_error(fake: FakeWatson, base_url: str, http: aiohttp.ClientSession) -> None:
    config = v1(base_url, auth="iam", apikey="bad-key", token_url=f"{base_url}/identity/token")
    with pytest.raises(EngineError) as info:
        await WatsonV1Engine(config, http).turn(TurnRequest(text="hi", state=state()))
    assert info.value.status == 400 and not info.value.retryable
    assert fake.of_kind("v1") == []


def test_create_authorizer_kinds() -> None:
    assert isinstance(create_authorizer(EngineConfig()), NoAuthorizer)
    assert isinstance(create_authorizer(EngineConfig(auth="basic", username="u", password="p")), BasicAuthorizer)
    assert isinstance(create_authorizer(EngineConfig(auth="bearer", bearer_token="t")), BearerAuthorizer)
    for bad in (EngineConfig(auth="iam"), EngineConfig(auth="basic"), EngineConfig(auth="bearer")):
        with pytest.raises(ValueError):
            create_authorizer(bad)


def test_iam_proxy_and_token_url() -> None:
    proxy = ProxyConfig(url="http://proxy:3128", username="u@x", password="p:w")
    authorizer = IamAuthorizer("key", "https://iam.example.com/identity/token/", proxy=proxy)
    manager = authorizer.authenticator.token_manager
    assert manager.url == "https://iam.example.com"
    assert manager.proxies == {
        "http": "http://u%40x:p%3Aw@proxy:3128",
        "https": "http://u%40x:p%3Aw@proxy:3128",
    }


# -- factory and echo ---------------------------------------------------------------------------------


async def test_factory(http: aiohttp.ClientSession) -> None:
    assert isinstance(
        create_engine(EngineConfig(kind="watson_v1", url="http://x", workspace_id="w"), http), WatsonV1Engine
    )
    assert isinstance(create_engine(EngineConfig(kind="soe", url="http://x/soe"), http), WatsonV1Engine)
    assert isinstance(create_engine(v2("http://x"), http), WatsonV2Engine)
    assert isinstance(create_engine(EngineConfig(kind="echo"), http), EchoEngine)
    for bad in (
        EngineConfig(kind="watson_v1", url="http://x"),
        EngineConfig(kind="soe"),
        replace(v2("http://x"), environment_id=None),
        replace(v2("http://x"), assistant_id=None),
    ):
        with pytest.raises(ValueError):
            create_engine(bad, http)


async def test_echo_engine() -> None:
    engine = EchoEngine()
    first = await engine.turn(TurnRequest(text="", state=state()))
    assert first.texts == [WELCOME] and first.engine_state == {"turns": 1}

    second = await engine.turn(TurnRequest(text="look", state=state(smsMedia=MEDIA), engine_state=first.engine_state))
    assert second.texts == ["You said: look", "Got your 1 media"]
    assert second.commands == [Command("smsActSendMedia", {"mediaURL": ["https://example.com/cat.jpg"]})]
    assert second.engine_state == {"turns": 2}
    assert engine.last_request is not None and engine.last_request.text == "look"
    # What it answered, as a v1 dialog would: the demo prints it.
    assert engine.last_reply is second and second.raw == {
        "output": {
            "text": ["You said: look", "Got your 1 media"],
            "smsAction": {"command": "smsActSendMedia", "parameters": {"mediaURL": ["https://example.com/cat.jpg"]}},
        }
    }

    bye = await engine.turn(TurnRequest(text="smsResponseTimeout", state=state(), engine_state=second.engine_state))
    assert bye.texts == [GOODBYE] and bye.commands == []
    await engine.close()


async def test_echo_engine_answers_options_with_an_option_list() -> None:
    engine = EchoEngine()
    reply = await engine.turn(TurnRequest(text=" Options ", state=state()))
    assert reply.texts == [] and reply.commands == []
    assert [(c.kind, c.labels, c.values) for c in reply.choices] == [
        ("option", ("Red", "Green", "Blue"), ("red", "green", "blue"))
    ]
