from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sms_gateway.model import Choice, Command, EngineReply
from sms_gateway.replies import action_keys_in_v2_context, commands_from, parse_v1_answer, parse_v2_answer

MEDIA = Command("smsActSendMedia", {"mediaURL": ["https://example.com/a.gif"]})
TIMEOUT = Command("setSessionTimeoutCount", {"count": 200})
END = Command("terminateSession")


def cmd(command: Command) -> dict[str, Any]:
    return {"command": command.name, "parameters": command.parameters}


def test_v1_output_text_list_and_string() -> None:
    assert parse_v1_answer({"output": {"text": ["Hi.", "", "How can I help?"]}}).texts == [
        "Hi.",
        "How can I help?",
    ]
    assert parse_v1_answer({"output": {"text": "Hi."}}).texts == ["Hi."]
    assert parse_v1_answer({"output": {"text": {"values": ["Hi."], "selection_policy": "sequential"}}}).texts == ["Hi."]


def test_v1_prefers_generic_text_over_duplicate_output_text() -> None:
    body = {
        "output": {
            "text": ["Hello", "Bye"],
            "generic": [{"response_type": "text", "text": "Hello"}, {"response_type": "text", "text": "Bye"}],
        }
    }
    assert parse_v1_answer(body).texts == ["Hello", "Bye"]
    # no generic text items: fall back to output.text
    assert parse_v1_answer({"output": {"text": ["Hello"], "generic": [{"response_type": "pause"}]}}).texts == ["Hello"]


def test_v1_output_text_edited_by_an_soe_wins_over_watsons_generic_text() -> None:
    # IBM's SOE samples rewrite output.text after Watson answers; output.generic still has Watson's text.
    body = {
        "output": {
            "text": ["Your balance is $1,234.56."],
            "generic": [
                {"response_type": "text", "text": "Your balance is <balance>."},
                {"response_type": "image", "source": "https://x.test/chart.png"},
                {
                    "response_type": "option",
                    "title": "Anything else?",
                    "options": [{"label": "Pay a bill", "value": {"input": {"text": "pay"}}}],
                },
                {"response_type": "user_defined", "user_defined": {"smsAction": cmd(TIMEOUT)}},
            ],
        }
    }
    reply = parse_v1_answer(body)
    assert reply.texts == ["Your balance is $1,234.56."]
    assert reply.commands == [
        Command("smsActSendMedia", {"mediaURL": ["https://x.test/chart.png"]}),
        TIMEOUT,
    ], "the generic items that are not text still count"
    assert reply.choices == [Choice("Anything else?", "option", ("Pay a bill",), ("pay",))]


def test_v1_output_text_listing_every_channels_texts_is_not_an_soe_edit() -> None:
    # Watson's output.text holds the texts of every channel; the SMS reply keeps only those for SMS.
    generic = [
        {"response_type": "text", "text": "Say it", "channels": [{"channel": "voice_telephony"}]},
        {"response_type": "text", "text": "Text it", "channels": [{"channel": "text_messaging"}]},
    ]
    assert parse_v1_answer({"output": {"text": ["Say it", "Text it"], "generic": generic}}).texts == ["Text it"]
    assert parse_v1_answer({"output": {"text": [], "generic": generic}}).texts == ["Text it"], (
        "an empty output.text is no edit"
    )


def test_generic_items_for_other_channels_are_skipped() -> None:
    generic = [
        {"response_type": "text", "text": "voice only", "channels": [{"channel": "voice_telephony"}]},
        {"response_type": "text", "text": "sms", "channels": [{"channel": "text_messaging"}]},
        {
            "response_type": "text",
            "text": "both",
            "channels": [{"channel": "chat"}, {"channel": "text_messaging"}],
        },
        {"response_type": "text", "text": "all", "channels": []},
        {"response_type": "text", "text": "any"},
    ]
    assert parse_v2_answer({"output": {"generic": generic}}).texts == ["sms", "both", "all", "any"]


def test_every_command_location_in_order_v1() -> None:
    body = {
        "output": {
            "smsAction": cmd(TIMEOUT),
            "user_defined": {"smsAction": cmd(END), "vgwAction": {"command": "vgwActHangup"}},
            "generic": [
                {"response_type": "user_defined", "user_defined": {"smsAction": [cmd(MEDIA), cmd(END)]}},
                {
                    "response_type": "user_defined",
                    "user_defined": {
                        "vgwAction": {"command": "vgwActSendSMS", "parameters": {"message": "hi"}},
                        "vgwActionSequence": [{"command": "vgwActPlayText"}],
                    },
                },
                {"response_type": "image", "source": "https://example.com/i.png", "title": "pic"},
            ],
            "vgwAction": {"command": "vgwActSendSMS", "parameters": {"message": "a"}},
            "vgwActionSequence": [{"command": "vgwActCollectDTMF"}, {"command": "vgwActSendSMS"}],
        },
        "context": {
            "smsAction": {"command": "smsActForceNoInputTurn"},
            "vgwAction": {"command": "vgwActTransfer"},
            "conversation_id": "c1",
        },
    }
    names = [c.name for c in parse_v1_answer(body).commands]
    assert names == [
        "setSessionTimeoutCount",  # output.smsAction
        "smsActForceNoInputTurn",  # context.smsAction
        "terminateSession",  # output.user_defined.smsAction
        "smsActSendMedia",  # generic user_defined smsAction list ...
        "terminateSession",
        "vgwActSendSMS",  # ... generic user_defined vgwAction
        "vgwActPlayText",  # ... generic user_defined vgwActionSequence
        "smsActSendMedia",  # generic image
        "vgwActSendSMS",  # output.vgwAction
        "vgwActCollectDTMF",  # output.vgwActionSequence
        "vgwActSendSMS",
        "vgwActTransfer",  # context.vgwAction
        "vgwActHangup",  # output.user_defined.vgwAction
    ]


def test_image_item_becomes_send_media_command() -> None:
    reply = parse_v2_answer({"output": {"generic": [{"response_type": "image", "source": "https://x.test/i.png"}]}})
    assert reply.commands == [Command("smsActSendMedia", {"mediaURL": ["https://x.test/i.png"]})]


def test_v2_context_main_skill_smsaction_and_keys_to_clear() -> None:
    body = {
        "output": {"generic": [{"response_type": "text", "text": "Here you go"}]},
        "context": {"skills": {"main skill": {"user_defined": {"smsAction": cmd(MEDIA), "x": 1}}}},
    }
    reply = parse_v2_answer(body)
    assert reply.texts == ["Here you go"]
    assert reply.commands == [MEDIA]
    assert reply.engine_state == {}
    assert action_keys_in_v2_context(body) == ["smsAction"]
    assert action_keys_in_v2_context({"context": {"skills": {"main skill": {"user_defined": {"x": 1}}}}}) == []


def test_v1_stored_context_drops_action_keys() -> None:
    body: dict[str, Any] = {
        "output": {"text": []},
        "context": {
            "conversation_id": "c1",
            "system": {"dialog_turn_counter": 2},
            "smsAction": cmd(END),
            "vgwAction": {"command": "vgwActHangup"},
            "vgwActionSequence": [],
            "mine": 1,
        },
    }
    reply = parse_v1_answer(body)
    assert reply.engine_state == {"context": {"conversation_id": "c1", "system": {"dialog_turn_counter": 2}, "mine": 1}}
    assert body["context"]["smsAction"] == cmd(END)  # the answer itself is not mutated
    assert parse_v1_answer({"output": {}}).engine_state == {}


def test_option_and_suggestion_items_become_choices() -> None:
    generic = [
        {
            "response_type": "option",
            "title": "Which of these items do you want to insure?",
            "options": [
                {"label": "Boat", "value": {"input": {"text": "boat"}}},
                {"label": "Car", "value": {"input": {"text": "car"}}},
                {"nolabel": True},
            ],
        },
        {
            "response_type": "suggestion",
            "title": "Did you mean:",
            "suggestions": [{"label": "Open an account"}, {"label": "Close an account"}],
        },
        {"response_type": "option", "title": "empty", "options": []},
        {"response_type": "option", "description": "Pick one", "options": [{"label": "A"}]},
    ]
    assert parse_v2_answer({"output": {"generic": generic}}).choices == [
        Choice("Which of these items do you want to insure?", "option", ("Boat", "Car"), ("boat", "car")),
        Choice(
            "Did you mean:",
            "suggestion",
            ("Open an account", "Close an account"),
            ("Open an account", "Close an account"),
        ),
        Choice("Pick one", "option", ("A",), ("A",)),
    ]


def test_malformed_commands_are_skipped() -> None:
    value = [
        {"command": "ok", "parameters": {"a": 1}},
        {"command": "noparams"},
        {"command": "badparams", "parameters": ["x"]},
        {"command": 5},
        {"command": ""},
        {"parameters": {}},
        "terminateSession",
        None,
        [{"command": "nested"}],
    ]
    assert commands_from(value) == [Command("ok", {"a": 1}), Command("noparams"), Command("badparams")]
    assert commands_from(None) == []
    assert commands_from({"command": "single"}) == [Command("single")]


def test_a_command_in_a_shape_the_gateway_does_not_read_is_a_warning_naming_the_expected_shape() -> None:
    media = {"mediaURL": ["https://example.com/a.gif"]}
    with capture_logs() as logs:
        reply = parse_v1_answer({"output": {"smsAction": {"smsActSendMedia": media}}})
    assert reply.commands == []
    (warning,) = logs
    assert warning["event"] == "command_unreadable" and warning["log_level"] == "warning"
    assert warning["where"] == "output.smsAction" and warning["found"] == '{"smsActSendMedia": ...}'
    assert warning["expected"] == '{"command": "smsActSendMedia", "parameters": {...}}'
    assert "example.com" not in str(warning)  # the shape by its keys, not the engine's values

    with capture_logs() as logs:
        reply = parse_v2_answer(
            {
                "output": {
                    "generic": [
                        {
                            "response_type": "user_defined",
                            "user_defined": {"smsAction": {"command": "smsActSendMedia", **media}},
                        },
                    ]
                },
                "context": {"skills": {"main skill": {"user_defined": {"smsAction": "terminateSession"}}}},
            }
        )
    assert reply.commands == [Command("smsActSendMedia")]  # run, and ignored for its missing mediaURL, as before
    assert [(w["where"], w["found"]) for w in logs] == [
        ("context.skills['main skill'].user_defined.smsAction", "a str"),
        ("output.generic[].user_defined.smsAction", 'smsActSendMedia with mediaURL beside "parameters"'),
    ]


def test_well_formed_commands_log_nothing() -> None:
    with capture_logs() as logs:
        reply = parse_v1_answer(
            {"output": {"smsAction": [cmd(MEDIA), {"command": "terminateSession"}]}, "context": {"smsAction": None}}
        )
    assert reply.commands == [MEDIA, END] and logs == []


def test_non_object_answers_give_empty_replies() -> None:
    bodies: tuple[object, ...] = (
        None,
        [],
        "text",
        3,
        {"output": "x", "context": []},
        {"output": {"generic": "x", "text": 3}},
    )
    for body in bodies:
        empty = EngineReply(raw=body if isinstance(body, dict) else {})
        assert parse_v1_answer(body) == empty
        assert parse_v2_answer(body) == empty


KEYS = st.sampled_from(
    [
        "output",
        "context",
        "text",
        "generic",
        "response_type",
        "user_defined",
        "smsAction",
        "vgwAction",
        "vgwActionSequence",
        "command",
        "parameters",
        "skills",
        "main skill",
        "options",
        "suggestions",
        "label",
        "title",
        "description",
        "source",
        "channels",
        "channel",
        "values",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=5)
    | st.sampled_from(["text", "option", "suggestion", "image", "user_defined", "text_messaging", "sms"])
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=3), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(JSONISH)
def test_arbitrary_json_never_raises(body: object) -> None:
    for parse in (parse_v1_answer, parse_v2_answer):
        reply = parse(body)
        assert all(isinstance(t, str) for t in reply.texts)
        assert all(isinstance(c.name, str) and isinstance(c.parameters, dict) for c in reply.commands)
    action_keys_in_v2_context(body)
