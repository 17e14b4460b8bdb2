"""IBM's state variables for one turn.

The engines place them (v1: top-level context keys, v2: main skill user_defined); this module only decides
their values. A key set to None means "remove it from the stored context" (e.g. smsError once reported).
"""

from __future__ import annotations

from collections.abc import Sequence

from sms_gateway.model import JSON, Media, Session

NO_INPUT_TURN_TEXT = "smsNoInputTurn"
RESPONSE_TIMEOUT_TEXT = "smsResponseTimeout"


def build_state(session: Session, media: Sequence[Media], sms_errors: Sequence[JSON] = ()) -> JSON:
    state: JSON = {
        "smsTenantPhoneNumber": session.tenant_number,
        "smsUserPhoneNumber": session.user_number,
        "smsSessionID": session.session_id,
        # Always present, so an engine never sees the media of an earlier turn.
        "smsMedia": [m.to_state() for m in media],
        "smsError": dict(sms_errors[-1]) if sms_errors else None,
    }
    if session.user_data is not None:
        state["smsUserData"] = session.user_data
    if session.rest_timeout is not None:
        state["smsSessionTimeoutCount"] = session.rest_timeout
    return state
