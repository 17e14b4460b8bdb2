"""Commands of SPEC 2.4 turned into a turn plan, and the state variables of SPEC 2.3."""

from __future__ import annotations

import pytest

from sms_gateway.actions import chosen_option, interpret, media_url_list, render_choices
from sms_gateway.config.model import EngineConfig
from sms_gateway.context import build_state, media_fallback_notice
from sms_gateway.engines.override import InvalidOverride, apply_override
from sms_gateway.model import Choice, Command, EngineReply, Media, Session


def session() -> Session:
    return Session.new("+15005550006", "+15551230000", 3600, now=0.0)


def test_send_media_accepts_list_or_single_string() -> None:
    reply = EngineReply(
        texts=["Here you go"],
        commands=[
            Command("smsActSendMedia", {"mediaURL": ["https://e.com/1.gif", "https://e.com/2.gif"]}),
            Command("smsActSendMedia", {"mediaURL": "https://e.com/3.gif"}),
        ],
    )
    plan = interpret(reply, session())
    assert plan.text == "Here you go"
    assert plan.media_urls == ["https://e.com/1.gif", "https://e.com/2.gif", "https://e.com/3.gif"]


def test_bad_media_parameter_is_ignored_not_fatal() -> None:
    plan = interpret(EngineReply(commands=[Command("smsActSendMedia", {"mediaURL": 42})]), session())
    assert plan.media_urls == [] and plan.ignored == ["smsActSendMedia"]
    assert media_url_list([1, 2]) is None


def test_session_commands() -> None:
    s = session()
    plan = interpret(
        EngineReply(
            commands=[
                Command("setSessionTimeoutCount", {"count": 200}),
                Command("smsActForceNoInputTurn"),
                Command("terminateSession"),
                Command("smsActSetConversationConfig", {"workspaceID": "ws2"}),
            ]
        ),
        s,
    )
    assert plan.session_timeout == 200
    assert plan.force_no_input and plan.terminate
    assert plan.conversation_config == {"workspaceID": "ws2"}


@pytest.mark.parametrize("count", [0, -5, "soon", None, True])
def test_bad_timeout_counts_are_ignored(count: object) -> None:
    plan = interpret(EngineReply(commands=[Command("setSessionTimeoutCount", {"count": count})]), session())
    assert plan.session_timeout is None and plan.ignored == ["setSessionTimeoutCount"]


def test_string_timeout_count_as_ibm_json_writes_it() -> None:
    plan = interpret(EngineReply(commands=[Command("setSessionTimeoutCount", {"count": "300"})]), session())
    assert plan.session_timeout == 300


def test_options_rendered_as_numbered_text_with_configured_prefix() -> None:
    s = session()
    reply = EngineReply(
        choices=[
            Choice(
                "Which of these items do you want to insure?",
                "option",
                ("Boat", "Car", "House"),
                ("boat", "car", "house"),
            )
        ]
    )
    assert interpret(reply, s).text == "Which of these items do you want to insure?\n1. Boat\n2. Car\n3. House"
    reply.commands = [Command("smsActSetOptionsConfig", {"prefixText": "Enter %s for "})]
    assert interpret(reply, s).text.splitlines()[1:] == ["Enter 1 for Boat", "Enter 2 for Car", "Enter 3 for House"]
    assert s.options_prefix == "Enter %s for ", "the prefix stays for the rest of the session"
    suggestion = EngineReply(
        choices=[Choice("Did you mean:", "suggestion", ("Pay a bill", "Open an account"), ("pay", "open"))],
        commands=[Command("smsActSetDisambiguationConfig", {"prefixText": "Press %s for "})],
    )
    assert interpret(suggestion, s).text == "Did you mean:\nPress 1 for Pay a bill\nPress 2 for Open an account"
    assert render_choices("", ["a"], "Option ") == "Option 1 a"


def test_prefix_without_a_trailing_space_gets_one_before_the_label() -> None:
    s = session()
    suggestion = EngineReply(
        choices=[Choice("Did you mean:", "suggestion", ("I'd like to pay a bill", "Open an account"), ("pay", "open"))],
        commands=[Command("smsActSetDisambiguationConfig", {"prefixText": "Enter %s for:"})],
    )
    assert interpret(suggestion, s).text.splitlines()[1:] == [
        "Enter 1 for: I'd like to pay a bill",
        "Enter 2 for: Open an account",
    ]
    options = EngineReply(
        choices=[Choice("Insure what?", "option", ("Boat",), ("boat",))],
        commands=[Command("smsActSetOptionsConfig", {"prefixText": "%s)"})],
    )
    assert interpret(options, s).text.splitlines()[1:] == ["1) Boat"]
    assert render_choices("", ["Boat"], "Choose %s -\t") == "Choose 1 -\tBoat", "a prefix ending in any space is kept"


def test_vgw_send_sms_defaults_to_session_numbers() -> None:
    s = session()
    plan = interpret(
        EngineReply(
            commands=[
                Command("vgwActSendSMS", {"message": "Your code", "mediaURL": "https://e.com/c.png"}),
                Command("vgwActSendSMS", {"message": "to agent", "userPhoneNumber": "+15559990000"}),
                Command("vgwActPlayText"),
            ]
        ),
        s,
    )
    assert [(e.text, e.media_urls, e.tenant_number, e.user_number) for e in plan.extra_sends] == [
        ("Your code", ("https://e.com/c.png",), s.tenant_number, s.user_number),
        ("to agent", (), s.tenant_number, "+15559990000"),
    ]
    assert plan.ignored == [], "voice-only commands are skipped quietly, not reported as unknown"


def test_unknown_command_is_logged_and_ignored() -> None:
    plan = interpret(EngineReply(texts=["ok"], commands=[Command("smsActTeleport", {})]), session())
    assert plan.text == "ok" and plan.ignored == ["smsActTeleport"]


def test_state_variables() -> None:
    s = session()
    state = build_state(s, [Media("https://e.com/a.jpg", "image/jpeg")])
    assert state == {
        "smsTenantPhoneNumber": "+15005550006",
        "smsUserPhoneNumber": "+15551230000",
        "smsSessionID": s.session_id,
        "smsMedia": [{"mediaURL": "https://e.com/a.jpg", "mediaContentType": "image/jpeg"}],
        "smsError": None,
        "smsMediaFallback": None,
        "smsMediaFallbackInfo": None,
    }
    assert build_state(s, [])["smsMedia"] == []
    s.user_data, s.rest_timeout = {"acct": 7}, 120
    state = build_state(s, [], [{"code": "a", "message": "first"}, {"code": "b", "message": "last"}])
    assert state["smsUserData"] == {"acct": 7} and state["smsSessionTimeoutCount"] == 120
    assert state["smsError"] == {"code": "b", "message": "last"}


def test_a_media_fallback_is_told_apart_from_an_error() -> None:
    notices = [
        {"code": "21610", "message": "unsubscribed"},
        media_fallback_notice("3056", "MMS timed out; sent by SMS", "mg1"),
    ]
    state = build_state(session(), [], notices)
    assert state["smsError"] == {"code": "21610", "message": "unsubscribed"}
    assert state["smsMediaFallback"] is True
    assert state["smsMediaFallbackInfo"] == {
        "code": "3056",
        "message": "MMS timed out; sent by SMS",
        "messageID": "mg1",
    }
    only_fallback = build_state(session(), [], notices[1:])
    assert only_fallback["smsError"] is None and only_fallback["smsMediaFallback"] is True


BASE = EngineConfig(
    kind="watson_v1", url="https://wa.example.com", workspace_id="ws1", auth="basic", username="u", password="p"
)


def test_conversation_config_override() -> None:
    assert apply_override(BASE, {"workspaceID": "ws2"}).workspace_id == "ws2"
    soe = apply_override(EngineConfig(kind="soe", url="https://soe.example.com/a"), {"url": "https://soe2/x"})
    assert soe.kind == "soe" and soe.url == "https://soe2/x"
    iam = apply_override(BASE, {"apikey": "k", "tokenServiceProviderUrl": "https://iam.example.com/identity/token"})
    assert iam.auth == "iam" and iam.token_url == "https://iam.example.com/identity/token"
    assert apply_override(BASE, {"username": "apikey", "password": "key"}).auth == "iam"
    assert apply_override(BASE, {"convReadTimeout": "5000"}).read_timeout_ms == 5000
    v2 = apply_override(BASE, {"convApiVersion": "v2", "assistantID": "a1", "environmentID": "e1"})
    assert v2.kind == "watson_v2" and v2.assistant_id == "a1"
    for bad in (
        {"workspaceID": 5},
        {"convReadTimeout": "x"},
        {"nonsense": 1},
        {"convApiVersion": "v3"},
        {"convApiVersion": "v2"},
    ):
        with pytest.raises(InvalidOverride):
            apply_override(BASE, bad)


def test_a_number_answers_the_last_options_shown() -> None:
    options = ["boat", "car", "house"]
    assert chosen_option("2", options) == "car"
    assert chosen_option(" 3. ", options) == "house"
    assert chosen_option("4", options) is None and chosen_option("0", options) is None
    assert chosen_option("two", options) is None and chosen_option("2", None) is None
