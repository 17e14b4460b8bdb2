"""IBM's own SDK (`ibm-watson`) is the reference for the Watson Assistant wire format.

The gateway's engines and the SDK send the same turn to the fake Watson; the requests must agree in method,
path, query, the headers that matter (Content-Type, Accept, Authorization) and JSON body. The SDK's request
models must read the gateway's bodies without losing a field, and its response models must read the fake's
answers, so the fake is held to the real shape too.

Not compared: an SOE (any URL, which the SDK cannot address) and v2's "legacy" path without an environment
(ibm-watson 11 only knows the environments path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import (
    Authenticator,
    BasicAuthenticator,
    BearerTokenAuthenticator,
    IAMAuthenticator,
    NoAuthAuthenticator,
)
from ibm_watson import AssistantV1, AssistantV2
from ibm_watson import assistant_v1 as v1_models
from ibm_watson import assistant_v2 as v2_models

from sms_gateway.config.model import V1_DEFAULT_VERSION, V2_DEFAULT_VERSION, EngineConfig
from sms_gateway.engines.base import TurnRequest
from sms_gateway.engines.watson_v1 import WatsonV1Engine
from sms_gateway.engines.watson_v2 import INVALID_SESSION, WatsonV2Engine
from tests import test_engines
from tests.fakes.watson import FakeWatson, Recorded, text_output

# The engine tests' fixtures: the fake Watson (workspace WS1, assistant A1 in environment E1) and its URL.
fake, base_url = test_engines.fake, test_engines.base_url
TENANT, USER = "+15555550100", "+15555550199"
MEDIA = [{"mediaURL": "https://example.com/cat.jpg", "mediaContentType": "image/jpeg"}]
# What a request is, for the comparison: the SDK's User-Agent and analytics header, and the HTTP clients' own
# connection headers, say nothing about the API call.
COMPARED_HEADERS = ("Content-Type", "Accept", "Authorization")


def wire(request: Recorded) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": {name: request.headers.get(name) for name in COMPARED_HEADERS},
        "json": request.json,
    }


AUTHS: dict[str, tuple[dict[str, Any], Callable[[str], Authenticator]]] = {
    "none": ({"auth": "none"}, lambda base: NoAuthAuthenticator()),
    "basic": (
        {"auth": "basic", "username": "wa-user", "password": "wa-pass"},
        lambda base: BasicAuthenticator("wa-user", "wa-pass"),
    ),
    "bearer": (
        {"auth": "bearer", "bearer_token": "a-static-token"},
        lambda base: BearerTokenAuthenticator("a-static-token"),
    ),
    "iam": ({"auth": "iam", "apikey": "good-key"}, lambda base: IAMAuthenticator("good-key", url=base)),
}


def engine_config(base_url: str, auth: str, **kw: Any) -> EngineConfig:
    fields, _ = AUTHS[auth]
    if auth == "iam":
        fields = {**fields, "token_url": f"{base_url}/identity/token"}
    return EngineConfig(url=base_url, **fields, **kw)


def sdk_v1(base_url: str, auth: str) -> AssistantV1:
    sdk = AssistantV1(version=V1_DEFAULT_VERSION, authenticator=AUTHS[auth][1](base_url))
    sdk.set_service_url(base_url)
    return sdk


def sdk_v2(base_url: str, auth: str) -> AssistantV2:
    sdk = AssistantV2(version=V2_DEFAULT_VERSION, authenticator=AUTHS[auth][1](base_url))
    sdk.set_service_url(base_url)
    return sdk


def same_authorization(fake: FakeWatson, gateway: dict[str, Any], sdk: dict[str, Any]) -> None:
    """IAM tokens differ per fetch: both must be a Bearer token the IAM endpoint issued. Then set equal."""
    ours, theirs = gateway["headers"]["Authorization"], sdk["headers"]["Authorization"]
    if ours != theirs:
        assert ours.removeprefix("Bearer ") in fake.issued_tokens
        assert theirs.removeprefix("Bearer ") in fake.issued_tokens
        gateway["headers"]["Authorization"] = theirs


# -- v1 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", sorted(AUTHS))
async def test_v1_message_request_is_the_sdks(fake: FakeWatson, base_url: str, http: Any, auth: str) -> None:
    stored = {"conversation_id": "c-1", "system": {"dialog_turn_counter": 1}, "smsAction": {"command": "x"}}
    state = {"smsTenantPhoneNumber": TENANT, "smsUserPhoneNumber": USER, "smsSessionID": "s-1", "smsMedia": MEDIA}
    engine = WatsonV1Engine(engine_config(base_url, auth, kind="watson_v1", workspace_id="WS1"), http)
    await engine.turn(TurnRequest(text="  I'd like\tto pay\na bill ", state=state, engine_state={"context": stored}))

    # The same turn as the SDK's documented call: the stored context without the command it carried, this
    # turn's state variables on top; input text with CR/LF/TAB folded, as v1 requires.
    context = v1_models.Context.from_dict(
        {
            "conversation_id": "c-1",
            "system": {"dialog_turn_counter": 1},
            **state,
        }
    )
    result = await asyncio.to_thread(
        sdk_v1(base_url, auth).message,
        "WS1",
        input=v1_models.MessageInput(text="I'd like to pay a bill"),
        context=context,
        alternate_intents=False,
    )
    ours, theirs = (wire(r) for r in fake.of_kind("v1"))
    same_authorization(fake, ours, theirs)
    assert ours == theirs
    assert theirs["path"] == "/v1/workspaces/WS1/message" and theirs["query"] == {"version": V1_DEFAULT_VERSION}
    if auth == "iam":
        our_token_request, sdk_token_request = (wire(r) for r in fake.of_kind("iam"))
        assert our_token_request == sdk_token_request

    answer = result.get_result()
    parsed = v1_models.MessageResponse.from_dict(answer)
    assert parsed.output.text == ["You said: I'd like to pay a bill"] and parsed.context.conversation_id == "c-1"
    assert parsed.output.generic[0].text == "You said: I'd like to pay a bill"


async def test_v1_answers_of_every_response_type_the_gateway_reads_parse_with_the_sdk(
    fake: FakeWatson, base_url: str
) -> None:
    output = text_output("Here it is.", smsAction={"command": "terminateSession"})
    output["generic"] += [
        {"response_type": "image", "source": "https://example.com/a.png", "title": "A"},
        {
            "response_type": "option",
            "title": "Which?",
            "options": [{"label": "Boat", "value": {"input": {"text": "boat"}}}],
        },
        {
            "response_type": "suggestion",
            "title": "Did you mean:",
            "suggestions": [{"label": "Pay a bill", "value": {"input": {"text": "pay"}}}],
        },
        {"response_type": "user_defined", "user_defined": {"smsAction": {"command": "terminateSession"}}},
        {"response_type": "pause", "time": 500, "typing": True},
    ]
    fake.v1_dialog = lambda text, context: {"output": output}
    result = await asyncio.to_thread(sdk_v1(base_url, "none").message, "WS1", input={"text": "hi"})
    parsed = v1_models.MessageResponse.from_dict(result.get_result())
    assert [item.response_type for item in parsed.output.generic] == [
        "text",
        "image",
        "option",
        "suggestion",
        "user_defined",
        "pause",
    ]
    assert parsed.output.generic[2].options[0].value.input.text == "boat"
    assert parsed.output.generic[3].suggestions[0].value.input.text == "pay"


# -- v2 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", sorted(AUTHS))
async def test_v2_session_and_message_requests_are_the_sdks(
    fake: FakeWatson, base_url: str, http: Any, auth: str
) -> None:
    state = {"smsTenantPhoneNumber": TENANT, "smsUserPhoneNumber": USER, "smsSessionID": "s-1", "smsMedia": MEDIA}
    config = engine_config(base_url, auth, kind="watson_v2", assistant_id="A1", environment_id="E1")
    engine = WatsonV2Engine(config, http)
    await engine.turn(TurnRequest(text="pay\na bill", state=state, user_id="u-1"))
    (session_id,) = fake.sessions  # the SDK sends its message in the session the gateway opened

    sdk = sdk_v2(base_url, auth)
    await asyncio.to_thread(sdk.create_session, "A1", "E1")
    message_input = v2_models.MessageInput(
        message_type="text",
        text="pay a bill",
        options=v2_models.MessageInputOptions(return_context=True),
        attachments=[v2_models.MessageInputAttachment(url="https://example.com/cat.jpg", media_type="image/jpeg")],
    )
    context = v2_models.MessageContext(
        skills=v2_models.MessageContextSkills.from_dict({"main skill": {"user_defined": state}}),
        integrations={"text_messaging": {"assistant_phone_number": TENANT, "private": {"user_phone_number": USER}}},
    )
    result = await asyncio.to_thread(
        sdk.message, "A1", "E1", session_id, input=message_input, context=context, user_id="u-1"
    )

    (our_session, sdk_session) = (wire(r) for r in fake.of_kind("v2_session"))
    same_authorization(fake, our_session, sdk_session)
    assert our_session == sdk_session
    assert sdk_session["path"] == "/v2/assistants/A1/environments/E1/sessions"
    assert sdk_session["query"] == {"version": V2_DEFAULT_VERSION} and sdk_session["json"] == {}

    (ours, theirs) = (wire(r) for r in fake.of_kind("v2_message"))
    same_authorization(fake, ours, theirs)
    assert ours == theirs
    assert theirs["path"] == f"/v2/assistants/A1/environments/E1/sessions/{session_id}/message"

    parsed = v2_models.StatefulMessageResponse.from_dict(result.get_result())
    assert parsed.output.generic[0].text == "You said: pay a bill"
    assert parsed.context.skills.main_skill.user_defined["smsSessionID"] == "s-1"
    assert parsed.user_id == "u-1"


async def test_v2_bodies_lose_nothing_in_the_sdks_request_models(fake: FakeWatson, base_url: str, http: Any) -> None:
    state = {"smsTenantPhoneNumber": TENANT, "smsUserPhoneNumber": USER, "smsSessionID": "s-1", "smsMedia": MEDIA}
    engine = WatsonV2Engine(EngineConfig(kind="watson_v2", url=base_url, assistant_id="A1", environment_id="E1"), http)
    await engine.turn(TurnRequest(text="hi", state=state, user_id="u-1"))
    body = fake.of_kind("v2_message")[0].json
    assert v2_models.MessageInput.from_dict(body["input"]).to_dict() == body["input"]
    assert v2_models.MessageContext.from_dict(body["context"]).to_dict() == body["context"]


async def test_v2_answers_the_gateway_reads_parse_with_the_sdk(fake: FakeWatson, base_url: str) -> None:
    fake.v2_dialog = lambda text, user_defined: {
        "output": {
            "generic": [
                {"response_type": "text", "text": "Here"},
                {"response_type": "image", "source": "https://example.com/a.png"},
                {
                    "response_type": "option",
                    "title": "Which?",
                    "options": [{"label": "Boat", "value": {"input": {"text": "boat"}}}],
                },
                {"response_type": "user_defined", "user_defined": {"smsAction": {"command": "terminateSession"}}},
            ]
        },
        "user_defined": {"smsAction": {"command": "smsActForceNoInputTurn"}},
    }
    sdk = sdk_v2(base_url, "none")
    session = (await asyncio.to_thread(sdk.create_session, "A1", "E1")).get_result()
    assert v2_models.SessionResponse.from_dict(session).session_id == session["session_id"]
    answer = (
        await asyncio.to_thread(
            sdk.message,
            "A1",
            "E1",
            session["session_id"],
            input=v2_models.MessageInput(text="hi", options=v2_models.MessageInputOptions(return_context=True)),
        )
    ).get_result()
    parsed = v2_models.StatefulMessageResponse.from_dict(answer)
    assert [item.response_type for item in parsed.output.generic] == ["text", "image", "option", "user_defined"]
    assert parsed.context.skills.main_skill.user_defined["smsAction"] == {"command": "smsActForceNoInputTurn"}


async def test_expired_session_error_reads_as_the_sdk_reads_it(fake: FakeWatson, base_url: str) -> None:
    # The gateway opens a new session on this 404 only: the text it matches must be what the SDK reports.
    sdk = sdk_v2(base_url, "none")
    with pytest.raises(ApiException) as caught:
        await asyncio.to_thread(sdk.message, "A1", "E1", "gone", input=v2_models.MessageInput(text="hi"))
    assert caught.value.status_code == 404
    assert caught.value.message.strip().lower() == INVALID_SESSION


@pytest.mark.parametrize("odd", ["ws 1?x=1", "a#b", "100%"])
async def test_ids_and_session_ids_are_path_encoded_as_the_sdk_encodes_them(
    base_url: str, fake: FakeWatson, http: Any, odd: str
) -> None:
    # Ids are the operator's and session ids are Watson's: neither may end the path early or start a query.
    fake.workspaces, fake.assistants = {odd}, {odd: {odd}}
    config = EngineConfig(kind="watson_v1", url=base_url, workspace_id=odd)
    await WatsonV1Engine(config, http).turn(TurnRequest(text="hi", state={}))
    await asyncio.to_thread(
        sdk_v1(base_url, "none").message, odd, input={"text": "hi"}, context={"smsMedia": []}, alternate_intents=False
    )
    ours, theirs = (wire(r) for r in fake.of_kind("v1"))
    assert ours == theirs and theirs["path"] == f"/v1/workspaces/{odd}/message"

    v2 = EngineConfig(kind="watson_v2", url=base_url, assistant_id=odd, environment_id=odd)
    await WatsonV2Engine(v2, http).turn(TurnRequest(text="hi", state={}))
    (session_id,) = fake.sessions
    fake.sessions[odd] = fake.sessions.pop(session_id)  # Watson's session ids are opaque: make it odd too
    await WatsonV2Engine(v2, http).turn(TurnRequest(text="hi", state={}, engine_state={"sessionId": odd}))
    sdk = sdk_v2(base_url, "none")
    await asyncio.to_thread(sdk.create_session, odd, odd)
    await asyncio.to_thread(
        sdk.message,
        odd,
        odd,
        odd,
        input=v2_models.MessageInput(
            message_type="text", text="hi", options=v2_models.MessageInputOptions(return_context=True)
        ),
        context=v2_models.MessageContext.from_dict({"skills": {"main skill": {"user_defined": {"smsMedia": []}}}}),
    )
    our_session, sdk_session = (wire(r) for r in fake.of_kind("v2_session"))
    assert our_session == sdk_session
    messages = [wire(r) for r in fake.of_kind("v2_message")]
    assert messages[1] == messages[2] and messages[1]["path"].endswith(f"/sessions/{odd}/message")
