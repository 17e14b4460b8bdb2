"""IBM's state variables for one turn, and ours: `smsMediaFallback`.

The engines place them (v1: top-level context keys, v2: main skill user_defined); this module only decides
their values. A key set to None means "remove it from the stored context" (e.g. smsError once reported).

What the next turn must hear of (a send that failed, media sent as SMS instead of MMS) waits in the store as a
list of notices per (tenant, user); a media fallback's notice is marked MEDIA_FALLBACK.
"""

from __future__ import annotations

from collections.abc import Sequence

from sms_gateway.model import JSON, Media, Session

NO_INPUT_TURN_TEXT = "smsNoInputTurn"
RESPONSE_TIMEOUT_TEXT = "smsResponseTimeout"
MEDIA_FALLBACK = "mediaFallback"


def media_fallback_notice(code: str, message: str, message_id: str) -> JSON:
    """A message's media reached the user as SMS (links) instead of MMS: the next turn's smsMediaFallback."""
    return {"code": code, "message": message, "messageID": message_id, MEDIA_FALLBACK: True}


def build_state(session: Session, media: Sequence[Media], notices: Sequence[JSON] = ()) -> JSON:
    errors = [n for n in notices if not n.get(MEDIA_FALLBACK)]
    fallbacks = [{k: v for k, v in n.items() if k != MEDIA_FALLBACK} for n in notices if n.get(MEDIA_FALLBACK)]
    state: JSON = {
        "smsTenantPhoneNumber": session.tenant_number,
        "smsUserPhoneNumber": session.user_number,
        "smsSessionID": session.session_id,
        # Always present, so an engine never sees the media of an earlier turn.
        "smsMedia": [m.to_state() for m in media],
        "smsError": dict(errors[-1]) if errors else None,
        "smsMediaFallback": True if fallbacks else None,
        "smsMediaFallbackInfo": fallbacks[-1] if fallbacks else None,
    }
    if session.user_data is not None:
        state["smsUserData"] = session.user_data
    if session.rest_timeout is not None:
        state["smsSessionTimeoutCount"] = session.rest_timeout
    return state
