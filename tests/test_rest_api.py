"""The session-control REST API (SPEC 2.2) over real HTTP: sessions, one-off sends, configuration tests, auth on
every route, and bad bodies on every route (400 naming the field, nothing stored)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from sms_gateway.config.load import ConfigError, load_config
from sms_gateway.config.model import Config, Credentials
from sms_gateway.control import TEST_MESSAGE
from sms_gateway.web.openapi import API_SCHEMA_DIR, openapi_document
from tests.fakes.vgw import basic_auth
from tests.harness import SOE, USER, V1, V2, Harness, running_gateway

ALICE = ("alice", "alice-secret")  # controlCredentials of V1 (and V2)
BOB = ("bob", "bob-secret")  # controlCredentials of SOE
GLOBAL = ("ctrl", "ctrl-secret")
OTHER_USER = "+15551239999"
UNKNOWN_TENANT = "+15009999999"
CALLBACK = "http://vgw.internal:9080/sms/callback"
ALICE_EVERYWHERE = {"control_credentials": Credentials(*ALICE)}  # for tests about something else than auth


def two_tenants(config: Config) -> Config:
    """V1 and V2 belong to Alice, SOE to Bob, V2OLD has no credentials and the operator opened it to anyone."""
    creds = {V1: ALICE, V2: ALICE, SOE: BOB}
    tenants = tuple(
        dataclasses.replace(
            t, control_credentials=Credentials(*creds[t.phone_number]) if t.phone_number in creds else None
        )
        for t in config.tenants
    )
    return dataclasses.replace(config, tenants=tenants, allow_anonymous_control=True)


def all_closed(config: Config) -> Config:
    """Every tenant has Alice's or Bob's credentials (no open tenant)."""
    creds = {V1: ALICE, V2: ALICE}
    tenants = tuple(
        dataclasses.replace(t, control_credentials=Credentials(*creds.get(t.phone_number, BOB))) for t in config.tenants
    )
    return dataclasses.replace(config, tenants=tenants)


async def call(
    gw: Harness,
    method: str,
    path: str,
    body: Any = None,
    *,
    auth: tuple[str, str] | None = ALICE,
    raw: bytes | None = None,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    all_headers = {"Content-Type": content_type} if (body is not None or raw is not None) else {}
    if auth is not None:
        all_headers["Authorization"] = basic_auth(*auth)
    all_headers.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with gw.http.request(method, f"{gw.url}/sms.gateway{path}", data=data, headers=all_headers) as response:
        text = await response.text()
        parsed = json.loads(text) if text and response.content_type == "application/json" else text
        return response.status, parsed, response.headers


async def nothing_stored(gw: Harness) -> None:
    await gw.settle()
    assert await gw.store.load_session(V1, USER) is None
    assert await gw.store.pipe_for(V1, USER, 0.0) is None
    assert await gw.store.pending_job_count() == 0 and await gw.store.dead_letters(10) == []
    assert gw.twilio.messages == [] and gw.twilio.request_count == 0
    assert gw.watson.requests == []


# Sessions -----------------------------------------------------------------------------------------------------
async def test_create_session_runs_the_first_turn_with_user_data_and_texts_the_reply(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path, configure=two_tenants, tenant_overrides={"allow_session_create_via_sms": False}
    ) as gw:
        user_data = {"accountId": "A-17", "balance": 12.5, "tags": ["gold"]}
        status, body, _ = await call(
            gw,
            "POST",
            "/sessions",
            {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "sessionTimeout": 120, "userData": user_data},
        )
        assert status == 201, body
        session_id = body["smsSessionID"]
        sent = await gw.wait_sent(1)
        assert sent[0].to == USER and sent[0].from_ == V1 and sent[0].body == "Welcome"
        first = gw.watson.of_kind("v1")[0].json
        assert first["input"]["text"] == ""
        assert first["context"]["smsUserData"] == user_data
        assert first["context"]["smsSessionTimeoutCount"] == 120
        assert first["context"]["smsSessionID"] == session_id
        session = await gw.store.load_session(V1, USER)
        assert session is not None and session.session_id == session_id and session.timeout_seconds == 120

        # The user's answer continues the session, even though SMS cannot create one for this tenant.
        await gw.sms("my answer")
        await gw.wait_sent(2)
        second = gw.v1_contexts()[1]
        assert second["smsSessionID"] == session_id and second["smsUserData"] == user_data

        status, body, _ = await call(gw, "POST", "/sessions", {"tenantPhoneNumber": V1, "userPhoneNumber": USER})
        assert status == 409 and body["smsSessionID"] == session_id and body["error"]["code"] == "sessionExists"

        assert (await call(gw, "DELETE", f"/sessions/{session_id}"))[0] == 204
        assert await gw.store.load_session(V1, USER) is None
        status, body, _ = await call(gw, "DELETE", f"/sessions/{session_id}")
        assert status == 404 and body["error"]["code"] == "notFound"
        await gw.sms("anyone?")
        await gw.settle()
        assert len(gw.watson.of_kind("v1")) == 2, "no session, and SMS may not create one"
        async with gw.http.get(f"{gw.url}/metrics") as response:
            metrics = await response.text()
        assert 'smsgw_rest_requests_total{route="sessions.create",status="201"} 1.0' in metrics
        assert 'smsgw_rest_requests_total{route="sessions.create",status="409"} 1.0' in metrics
        assert 'smsgw_rest_requests_total{route="sessions.delete",status="404"} 1.0' in metrics


async def test_create_session_without_options_uses_the_tenant_timeout(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides={**ALICE_EVERYWHERE, "timeout_for_session": 900}) as gw:
        status, body, _ = await call(
            gw, "POST", "/sessions", {"tenantPhoneNumber": "15005550001", "userPhoneNumber": "15551230001"}
        )
        assert status == 201
        await gw.wait_sent(1)
        context = gw.v1_contexts()[0]
        assert "smsUserData" not in context and "smsSessionTimeoutCount" not in context
        session = await gw.store.load_session(V1, USER)
        assert session is not None and session.timeout_seconds == 900 and session.session_id == body["smsSessionID"]


async def test_create_session_when_the_engine_is_down_still_creates_it(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        gw.watson.fail(times=2, status=500)
        status, body, _ = await call(gw, "POST", "/sessions", {"tenantPhoneNumber": V1, "userPhoneNumber": USER})
        assert status == 201
        sent = await gw.wait_sent(1)
        assert sent[0].body == "Sorry, we can't answer right now."
        session = await gw.store.load_session(V1, USER)
        assert session is not None and session.session_id == body["smsSessionID"]


# One-off sends ---------------------------------------------------------------------------------------------------
async def test_one_off_send_with_a_media_url_string_and_a_list(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        status, body, _ = await call(
            gw,
            "POST",
            "/messages",
            {
                "tenantPhoneNumber": V1,
                "userPhoneNumber": USER,
                "smsMessage": "Your boarding pass",
                "smsMediaURL": "https://air.example.com/pass.png",
            },
        )
        assert status == 202 and body["messageIDs"] == [body["messageID"]]
        sent = await gw.wait_sent(1)
        assert sent[0].body == "Your boarding pass" and sent[0].media_urls == ["https://air.example.com/pass.png"]

        media = [f"https://air.example.com/{n}.png" for n in range(12)]
        status, body, _ = await call(
            gw, "POST", "/messages", {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "smsMediaURL": media}
        )
        assert status == 202 and len(body["messageIDs"]) == 2
        sent = await gw.wait_sent(3)
        assert sent[1].media_urls == media[:10] and sent[2].media_urls == media[10:]
        await gw.settle()
        assert gw.watson.requests == [] and await gw.store.load_session(V1, USER) is None


# Configuration tests ---------------------------------------------------------------------------------------------
async def test_provider_test_sends_ibms_test_message_or_says_why_not(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        status, body, _ = await call(gw, "POST", "/test/provider", {"tenantPhoneNumber": V1, "userPhoneNumber": USER})
        assert status == 200 and body["status"] == "ok"
        assert gw.twilio.messages[0].body == TEST_MESSAGE and gw.twilio.messages[0].to == USER
        assert body["messageSid"] == gw.twilio.messages[0].sid

        gw.twilio.fail_next(status=401, code=20003, message="Authenticate")
        status, body, _ = await call(gw, "POST", "/test/provider", {"tenantPhoneNumber": V1})
        assert status == 502 and body["error"]["code"] == "providerError"
        assert "20003" in body["error"]["message"] and "Authenticate" in body["error"]["message"]


async def test_conversation_test_runs_one_turn_without_keeping_a_session(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        status, body, _ = await call(gw, "POST", "/test/conversation", {"tenantPhoneNumber": V1})
        assert status == 200 and body == {"status": "ok", "reply": ["Welcome"]}
        assert gw.watson.of_kind("v1")[0].json["input"]["text"] == ""
        assert await gw.store.load_session(V1, V1) is None and gw.twilio.messages == []

        gw.watson.fail(times=2, status=500)
        status, body, _ = await call(gw, "POST", "/test/conversation", {"tenantPhoneNumber": V1})
        assert status == 502 and body["error"]["code"] == "conversationError"
        assert "500" in body["error"]["message"]

        status, body, _ = await call(gw, "POST", "/test/conversation", {"tenantPhoneNumber": V2})
        assert status == 200 and body["reply"] == ["Welcome"]


# Auth --------------------------------------------------------------------------------------------------------------
async def _routes(gw: Harness) -> list[tuple[str, str, Any]]:
    """Every route with a valid request for V1 (pipe and session made with Alice's credentials)."""
    status, pipe, _ = await call(
        gw, "POST", "/smsPipe", {"tenantPhoneNumber": V1, "userPhoneNumber": OTHER_USER, "callbackURL": CALLBACK}
    )
    assert status == 201
    status, session, _ = await call(gw, "POST", "/sessions", {"tenantPhoneNumber": V1, "userPhoneNumber": OTHER_USER})
    assert status == 201
    await gw.settle()
    return [
        ("POST", "/sessions", {"tenantPhoneNumber": V1, "userPhoneNumber": USER}),
        ("DELETE", f"/sessions/{session['smsSessionID']}", None),
        ("POST", "/smsPipe", {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "callbackURL": CALLBACK}),
        ("POST", f"/smsPipe/{pipe['smsPipeID']}/messages", {"smsMessage": "hi"}),
        ("DELETE", f"/smsPipe/{pipe['smsPipeID']}", None),
        ("POST", "/messages", {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "smsMessage": "hi"}),
        ("POST", "/test/provider", {"tenantPhoneNumber": V1}),
        ("POST", "/test/conversation", {"tenantPhoneNumber": V1}),
    ]


@pytest.mark.parametrize("configure", [two_tenants, all_closed], ids=["with-an-open-tenant", "all-closed"])
async def test_every_route_refuses_missing_wrong_and_other_tenants_credentials(tmp_path: Path, configure: Any) -> None:
    async with running_gateway(tmp_path, configure=configure) as gw:
        routes = await _routes(gw)
        jobs_before = await gw.store.pending_job_count()
        sent_before, engine_before = len(gw.twilio.messages), len(gw.watson.requests)
        for method, path, body in routes:
            status, answer, headers = await call(gw, method, path, body, auth=None)
            assert status == 401, (method, path, answer)
            assert headers["WWW-Authenticate"].startswith("Basic") and answer["error"]["code"] == "unauthorized"
            for creds in (("alice", "wrong"), BOB, ("", "")):
                status, answer, _ = await call(gw, method, path, body, auth=creds)
                assert status == 403, (method, path, creds, answer)
                assert answer["error"]["code"] == "forbidden"
            status, answer, _ = await call(gw, method, path, body, headers={"Authorization": "Bearer abc"}, auth=None)
            assert status == 403, (method, path)
        await gw.settle()
        assert await gw.store.load_session(V1, USER) is None and await gw.store.pipe_for(V1, USER, 0.0) is None
        assert await gw.store.load_session(V1, OTHER_USER) is not None
        assert await gw.store.pipe_for(V1, OTHER_USER, 0.0) is not None
        assert await gw.store.pending_job_count() == jobs_before == 0
        assert (len(gw.twilio.messages), len(gw.watson.requests)) == (sent_before, engine_before)

        expected = [201, 204, 201, 202, 204, 202, 200, 200]
        assert [(await call(gw, m, p, b))[0] for m, p, b in routes] == expected


async def test_credentials_do_not_reveal_whether_another_tenant_exists(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, configure=all_closed) as gw:
        for number in (SOE, UNKNOWN_TENANT):  # Bob's tenant, and no tenant at all: the same answer
            status, body, _ = await call(
                gw, "POST", "/messages", {"tenantPhoneNumber": number, "userPhoneNumber": USER, "smsMessage": "hi"}
            )
            assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body, _ = await call(
            gw, "POST", "/messages", {"tenantPhoneNumber": SOE, "userPhoneNumber": USER, "smsMessage": "hi"}, auth=BOB
        )
        assert status == 202


async def test_global_credentials_reach_every_tenant_and_learn_of_unknown_numbers(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides={"control_credentials": Credentials(*GLOBAL)}) as gw:
        for number in (V1, SOE, V2):
            status, _, _ = await call(gw, "POST", "/test/conversation", {"tenantPhoneNumber": number}, auth=GLOBAL)
            assert status == 200
        status, body, _ = await call(
            gw, "POST", "/test/conversation", {"tenantPhoneNumber": UNKNOWN_TENANT}, auth=GLOBAL
        )
        assert status == 404 and body["error"]["field"] == "tenantPhoneNumber"
        for method, path in (
            ("DELETE", "/sessions/nope"),
            ("DELETE", "/smsPipe/nope"),
            ("POST", "/smsPipe/nope/messages"),
        ):
            status, body, _ = await call(
                gw, method, path, {"smsMessage": "x"} if method == "POST" else None, auth=GLOBAL
            )
            assert status == 404 and body["error"]["code"] == "notFound"


async def test_without_credentials_configured_nobody_can_divert_or_send_and_the_operator_is_told(
    tmp_path: Path,
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with running_gateway(tmp_path) as gw:
            takeovers = [
                (
                    "POST",
                    "/smsPipe",
                    {
                        "tenantPhoneNumber": V1,
                        "userPhoneNumber": USER,
                        "callbackURL": "https://attacker.example.com/steal",
                    },
                ),
                (
                    "POST",
                    "/messages",
                    {
                        "tenantPhoneNumber": V1,
                        "userPhoneNumber": USER,
                        "smsMessage": "Your bank: call +15550000000 now",
                    },
                ),
                ("POST", "/sessions", {"tenantPhoneNumber": V1, "userPhoneNumber": USER}),
                ("POST", "/test/provider", {"tenantPhoneNumber": V1, "userPhoneNumber": USER}),
            ]
            for method, path, body in takeovers:
                status, answer, headers = await call(gw, method, path, body, auth=None)
                assert status == 401 and headers["WWW-Authenticate"].startswith("Basic"), (path, answer)
                status, answer, _ = await call(gw, method, path, body, auth=BOB)  # no credentials are right
                assert status == 403, (path, answer)
            await nothing_stored(gw)
            # The user's SMS still reaches the engine, not someone's callback URL.
            await gw.sms("hello")
            assert [m.body for m in await gw.wait_sent(1)] == ["You said: hello"]
            status, doc, _ = await call(gw, "GET", "/openapi.json", auth=None)
            assert status == 200 and doc["openapi"].startswith("3.1")
    closed = [e for e in logs if e["event"] == "rest_api_closed"]
    assert len(closed) == 1 and closed[0]["log_level"] == "warning"
    assert closed[0]["tenants"] == [t.phone_number for t in gw.config.tenants]
    assert not [e for e in logs if e["event"] == "rest_api_open"]


async def test_an_operator_may_open_tenants_without_credentials_and_is_warned_which(tmp_path: Path) -> None:
    def only_v1_has_credentials(config: Config) -> Config:
        return dataclasses.replace(
            config,
            tenants=tuple(
                dataclasses.replace(t, control_credentials=Credentials(*ALICE) if t.phone_number == V1 else None)
                for t in config.tenants
            ),
        )

    with structlog.testing.capture_logs() as logs:
        async with running_gateway(tmp_path, allow_anonymous_control=True, configure=only_v1_has_credentials) as gw:
            for auth in (None, BOB):  # open to anyone, whatever they present
                status, _, _ = await call(gw, "POST", "/test/conversation", {"tenantPhoneNumber": SOE}, auth=auth)
                assert status == 200
            status, _, _ = await call(gw, "POST", "/test/conversation", {"tenantPhoneNumber": V1}, auth=None)
            assert status == 401, "a tenant with credentials still needs them"
    opened = [e for e in logs if e["event"] == "rest_api_open"]
    assert len(opened) == 1 and opened[0]["log_level"] == "warning"
    assert opened[0]["tenants"] == [t.phone_number for t in gw.config.tenants if t.phone_number != V1]


def test_ctrl_tenant_credentials_protect_every_tenant_of_a_tenant_file_without_its_own(tmp_path: Path) -> None:
    def tenant(number: str, **extra: Any) -> dict[str, Any]:
        return {
            "tenantPhoneNumber": number,
            "conversation": {"url": "https://wa.example.com", "workspaceID": "ws"},
            "smsProvider": {"url": "https://api.twilio.com", "username": "AC1", "password": "tok"},
            **extra,
        }

    tenants = [
        tenant("+15555550100"),
        tenant("+15555550101", controlCredentials={"username": "own", "password": "own-secret"}),
        tenant("+15555550102", controlCredentials={"username": "", "password": ""}),
    ]  # IBM's placeholder
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": tenants}), encoding="utf-8")
    environ = {"MULTI_TENANT_CONFIG_FILE": str(path), "CTRL_TENANT_USERNAME": "ctrl", "CTRL_TENANT_PASSWORD": "pw"}
    config = load_config(None, environ)
    assert [t.control_credentials for t in config.tenants] == [
        Credentials("ctrl", "pw"),
        Credentials("own", "own-secret"),
        Credentials("ctrl", "pw"),
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(None, {**environ, "CTRL_TENANT_PASSWORD": ""})
    assert dict(caught.value.errors)["CTRL_TENANT_PASSWORD"] == "is required when CTRL_TENANT_USERNAME is set"


# Bad bodies ----------------------------------------------------------------------------------------------------------
SESSION = {"tenantPhoneNumber": V1, "userPhoneNumber": USER}
PIPE = {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "callbackURL": CALLBACK}
MESSAGE = {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "smsMessage": "hi"}
TEST = {"tenantPhoneNumber": V1}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


# (path, body, the field the message must name)
BAD_BODIES: list[tuple[str, Any, str | None]] = [
    # Sessions
    ("/sessions", without(SESSION, "tenantPhoneNumber"), "tenantPhoneNumber"),
    ("/sessions", without(SESSION, "userPhoneNumber"), "userPhoneNumber"),
    ("/sessions", {**SESSION, "userPhoneNumber": 15551230001}, "userPhoneNumber"),
    ("/sessions", {**SESSION, "userPhoneNumber": "call me"}, "userPhoneNumber"),
    ("/sessions", {**SESSION, "tenantPhoneNumber": "+1 500 555 0001"}, "tenantPhoneNumber"),
    ("/sessions", {**SESSION, "sessionTimeout": "60"}, "sessionTimeout"),
    ("/sessions", {**SESSION, "sessionTimeout": 0}, "sessionTimeout"),
    ("/sessions", {**SESSION, "sessionTimeout": 10**9}, "sessionTimeout"),
    ("/sessions", {**SESSION, "sessionTimeout": 1.5}, "sessionTimeout"),
    ("/sessions", {**SESSION, "sessionTimeout": True}, "sessionTimeout"),
    ("/sessions", {**SESSION, "userData": "not an object"}, "userData"),
    ("/sessions", {**SESSION, "userData": ["a"]}, "userData"),
    ("/sessions", {**SESSION, "userData": {"blob": "x" * 17000}}, "userData"),
    ("/sessions", {**SESSION, "userData": json.loads('{"a":' * 40 + "1" + "}" * 40)}, "userData"),
    ("/sessions", {**SESSION, "sessionID": "mine"}, "sessionID"),
    # Pipes
    ("/smsPipe", without(PIPE, "callbackURL"), "callbackURL"),
    ("/smsPipe", {**PIPE, "callbackURL": "ftp://vgw/sms"}, "callbackURL"),
    ("/smsPipe", {**PIPE, "callbackURL": "http://"}, "callbackURL"),
    ("/smsPipe", {**PIPE, "callbackURL": "http://vgw:99999/x"}, "callbackURL"),
    ("/smsPipe", {**PIPE, "callbackURL": "http://vgw/a b"}, "callbackURL"),
    ("/smsPipe", {**PIPE, "callbackURL": ["http://vgw/"]}, "callbackURL"),
    ("/smsPipe", {**PIPE, "expirationInterval": 86401}, "expirationInterval"),
    ("/smsPipe", {**PIPE, "expirationInterval": -5}, "expirationInterval"),
    ("/smsPipe", {**PIPE, "expirationInterval": None}, "expirationInterval"),
    ("/smsPipe", without(PIPE, "userPhoneNumber"), "userPhoneNumber"),
    # One-off messages
    ("/messages", without(MESSAGE, "smsMessage"), None),
    ("/messages", {**MESSAGE, "smsMessage": ""}, "smsMessage"),
    ("/messages", {**MESSAGE, "smsMessage": 42}, "smsMessage"),
    ("/messages", {**MESSAGE, "smsMessage": "x" * 10001}, "smsMessage"),
    ("/messages", {**MESSAGE, "smsMessage": "   "}, "smsMessage"),
    ("/messages", {**MESSAGE, "smsMessage": "\ud800 broken"}, "smsMessage"),
    ("/messages", {**MESSAGE, "smsMediaURL": []}, "smsMediaURL"),
    ("/messages", {**MESSAGE, "smsMediaURL": [1, 2]}, "smsMediaURL"),
    ("/messages", {**MESSAGE, "smsMediaURL": {"url": "https://a.example.com/x.png"}}, "smsMediaURL"),
    ("/messages", {**MESSAGE, "smsMediaURL": ["https://a.example.com/x.png"] * 51}, "smsMediaURL"),
    ("/messages", {**without(MESSAGE, "smsMessage"), "smsMediaURL": "http://192.168.1.1/x.png"}, "smsMediaURL"),
    ("/messages", without(MESSAGE, "tenantPhoneNumber"), "tenantPhoneNumber"),
    ("/messages", {**MESSAGE, "mediaURL": "https://a.example.com/x.png"}, "mediaURL"),
    # Configuration tests
    ("/test/provider", {}, "tenantPhoneNumber"),
    ("/test/provider", {**TEST, "userPhoneNumber": "me"}, "userPhoneNumber"),
    ("/test/conversation", {"tenantPhoneNumber": None}, "tenantPhoneNumber"),
    ("/test/conversation", {**TEST, "text": "hello"}, "text"),
]
POST_ROUTES = ["/sessions", "/smsPipe", "/smsPipe/{pipe}/messages", "/messages", "/test/provider", "/test/conversation"]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES)
async def test_bad_bodies_are_refused_naming_the_field_and_nothing_is_stored(
    tmp_path: Path, path: str, body: Any, field: str | None
) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        status, answer, _ = await call(gw, "POST", path, body)
        assert status == 400, answer
        error = answer["error"]
        assert error["code"] in ("badRequest", "nothingToSend")
        if field is None:
            assert "smsMessage" in error["message"] and "smsMediaURL" in error["message"]
        else:
            assert error.get("field") == field and field in error["message"], error
        await nothing_stored(gw)


async def test_pipe_message_bodies_are_validated_and_nothing_is_sent(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        status, pipe, _ = await call(gw, "POST", "/smsPipe", PIPE)
        path = f"/smsPipe/{pipe['smsPipeID']}/messages"
        cases: list[tuple[Any, str | None]] = [
            ({}, None),
            ({"smsMessage": ""}, "smsMessage"),
            ({"smsMessage": ["hi"]}, "smsMessage"),
            ({"smsMediaURL": 7}, "smsMediaURL"),
            ({"smsMessage": "hi", "userPhoneNumber": OTHER_USER}, "userPhoneNumber"),
            ({"smsMediaURL": ["file:///etc/passwd"]}, "smsMediaURL"),
        ]
        for body, field in cases:
            status, answer, _ = await call(gw, "POST", path, body)
            assert status == 400, (body, answer)
            if field is not None:
                assert answer["error"]["field"] == field and field in answer["error"]["message"]
        await gw.settle()
        assert gw.twilio.request_count == 0 and await gw.store.pending_job_count() == 0


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_malformed_json_and_wrong_content_types_on_every_route(tmp_path: Path, path: str) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        if "{pipe}" in path:
            status, pipe, _ = await call(gw, "POST", "/smsPipe", {**PIPE, "userPhoneNumber": OTHER_USER})
            path = path.replace("{pipe}", pipe["smsPipeID"])
        for raw in (
            b"{not json",
            b"",
            b"[1, 2]",
            b'"text"',
            b"null",
            b"\xff\xfe{}",
            b'{"a": NaN}',
            b"[" * 100000,
            b'{"tenantPhoneNumber": "' + b"9" * 5000 + b'"}',
        ):
            status, answer, _ = await call(gw, "POST", path, raw=raw)
            assert status == 400, (raw[:20], answer)
            assert answer["error"]["code"] == "badRequest" and answer["error"]["message"]
        status, answer, _ = await call(
            gw, "POST", path, raw=b"tenantPhoneNumber=1", content_type="application/x-www-form-urlencoded"
        )
        assert status == 415 and answer["error"]["code"] == "unsupportedMediaType"
        status, answer, _ = await call(gw, "POST", path, raw=b'{"x": "' + b"a" * 300_000 + b'"}')
        assert status == 413 and answer["error"]["code"] == "payloadTooLarge"
        await gw.settle()
        assert await gw.store.load_session(V1, USER) is None and await gw.store.pipe_for(V1, USER, 0.0) is None
        assert await gw.store.pending_job_count() == 0 and gw.twilio.request_count == 0 and gw.watson.requests == []


# The OpenAPI document -----------------------------------------------------------------------------------------------
async def test_openapi_document_is_served_and_built_from_the_schema_files(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, configure=all_closed) as gw:
        status, doc, _ = await call(gw, "GET", "/openapi.json", auth=None)
        assert status == 200 and doc == json.loads(json.dumps(openapi_document()))
        assert doc["openapi"].startswith("3.1")
        on_disk = json.loads((API_SCHEMA_DIR / "session_create.json").read_text())
        component = doc["components"]["schemas"]["SessionCreateRequest"]
        assert component["properties"].keys() == on_disk["properties"].keys()
        assert component["properties"]["sessionTimeout"] == on_disk["properties"]["sessionTimeout"]
        routes = {
            (r.method.lower(), r.resource.canonical)
            for r in gw.app.router.routes()  # type: ignore[union-attr]
            if r.resource is not None and r.resource.canonical.startswith("/sms.gateway/") and r.method != "HEAD"
        }
        documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
        assert routes == documented
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if path.endswith("openapi.json"):
                    continue
                assert {"401", "403", "404"} <= set(op["responses"]), (method, path)
                if method == "post":
                    assert {"400", "415"} <= set(op["responses"]), (method, path)


async def test_validation_messages_read_well(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=ALICE_EVERYWHERE) as gw:
        cases = [
            (
                {**SESSION, "userPhoneNumber": "call me"},
                "userPhoneNumber: must be a phone number: 3 to 15 digits, optionally after a '+', not \"call me\"",
            ),
            ({**SESSION, "sessionTimeout": 0}, "sessionTimeout: 0 is less than the minimum of 1"),
            (without(SESSION, "userPhoneNumber"), "missing required field 'userPhoneNumber'"),
            ({**SESSION, "userdata": {}}, "unknown field 'userdata'"),
        ]
        for body, message in cases:
            status, answer, _ = await call(gw, "POST", "/sessions", body)
            assert (status, answer["error"]["message"]) == (400, message)
        status, answer, _ = await call(gw, "POST", "/messages", {**MESSAGE, "smsMessage": "x" * 20000})
        assert answer["error"]["message"].endswith("… is too long") and len(answer["error"]["message"]) < 100
