"""Property tests of the state variables: smsMedia is always this turn's media, in the provider's order."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sms_gateway.context import build_state
from sms_gateway.engines.base import TurnRequest
from sms_gateway.engines.watson_v1 import build_context
from sms_gateway.engines.watson_v2 import message_body
from sms_gateway.model import Media, Session

media_items = st.lists(
    st.builds(
        Media,
        url=st.from_regex(r"https://[a-z]{1,10}\.example\.com/[a-zA-Z0-9/]{0,20}", fullmatch=True),
        content_type=st.one_of(st.none(), st.sampled_from(["image/jpeg", "image/png", "video/mp4"])),
    ),
    max_size=10,
)
errors = st.lists(
    st.fixed_dictionaries({"code": st.text(min_size=1, max_size=8), "message": st.text(max_size=30)}), max_size=3
)
contexts = st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(st.integers(), st.text(max_size=10)), max_size=5)


@given(turns=st.lists(st.tuples(media_items, errors), min_size=1, max_size=6), stored=contexts)
@settings(max_examples=60, deadline=None)
def test_v1_context_never_carries_stale_media_or_errors(
    turns: list[tuple[list[Media], list[Any]]], stored: dict[str, Any]
) -> None:
    session = Session.new("+15005550006", "+15551230001", 3600, now=0.0)
    context: dict[str, Any] = dict(stored)
    for media, errs in turns:
        context = build_context(context, build_state(session, media, errs))
        assert context["smsMedia"] == [{"mediaURL": m.url, "mediaContentType": m.content_type} for m in media]
        assert context["smsSessionID"] == session.session_id
        assert context["smsUserPhoneNumber"] == "+15551230001"
        if errs:
            assert context["smsError"] == errs[-1]
        else:
            assert "smsError" not in context
        for key, value in stored.items():
            if not key.startswith("sms"):
                assert context[key] == value, "the dialog's own variables are kept"


@given(
    media=media_items,
    errs=errors,
    user_data=st.one_of(st.none(), contexts),
    timeout=st.one_of(st.none(), st.integers(1, 86400)),
)
@settings(max_examples=60, deadline=None)
def test_v2_state_is_in_main_skill_user_defined(
    media: list[Media], errs: list[Any], user_data: Any, timeout: int | None
) -> None:
    session = Session.new("+15005550006", "+15551230001", 3600, now=0.0)
    session.user_data, session.rest_timeout = user_data, timeout
    body = message_body(TurnRequest(text="hi", state=build_state(session, media, errs), user_id=session.user_number))
    user_defined = body["context"]["skills"]["main skill"]["user_defined"]
    assert user_defined["smsMedia"] == [m.to_state() for m in media]
    assert user_defined.get("smsError") == (errs[-1] if errs else None)
    assert ("smsUserData" in user_defined) == (user_data is not None)
    assert ("smsSessionTimeoutCount" in user_defined) == (timeout is not None)
    if media:
        assert body["input"]["attachments"][0]["url"] == media[0].url
