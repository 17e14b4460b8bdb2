"""Watson Assistant v2, stateful sessions API.

`engine_state` holds `{"sessionId": ...}` and, when the answer's context still carries a command, the keys to
clear on the next turn (WA keeps that context server-side, so the command would otherwise fire every turn).
State variables go in `context.skills["main skill"].user_defined`; a None value is sent as null so the
session's copy is cleared too. Inbound media and the phone numbers are also given the way WA's own SMS
integration does (`input.attachments`, `context.integrations.text_messaging`).
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from sms_gateway.config.model import EngineConfig
from sms_gateway.engines.auth import Authorizer, create_authorizer
from sms_gateway.engines.base import EngineError, TurnRequest
from sms_gateway.engines.http import EngineHTTPError, HttpOptions, JsonClient, Sleep
from sms_gateway.engines.watson_v1 import normalise_text
from sms_gateway.model import JSON, EngineReply
from sms_gateway.replies import MAIN_SKILL, action_keys_in_v2_context, parse_v2_answer

MAX_ATTACHMENTS = 5
INVALID_SESSION = "invalid session"


class WatsonV2Engine:
    def __init__(
        self,
        config: EngineConfig,
        http: aiohttp.ClientSession,
        *,
        authorizer: Authorizer | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if not config.url or not config.assistant_id:
            raise ValueError("engine 'watson_v2' needs a url and an assistant_id")
        # Ids and session ids are path segments, encoded as the SDK encodes them.
        base = f"{config.url.rstrip('/')}/v2/assistants/{quote(config.assistant_id, safe='')}"
        if config.v2_path_style == "environments":
            if not config.environment_id:
                raise ValueError("engine 'watson_v2' with path style 'environments' needs an environment_id")
            base += f"/environments/{quote(config.environment_id, safe='')}"
        self.sessions_url = f"{base}/sessions"
        self._params = {"version": config.version_date}
        self._client = JsonClient(
            http, authorizer or create_authorizer(config), HttpOptions.from_config(config), sleep=sleep
        )

    async def create_session(self) -> str:
        answer = await self._client.post(self.sessions_url, {}, params=self._params)
        session_id = answer.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise EngineError("engine created a session without a session_id")
        return session_id

    async def turn(self, request: TurnRequest) -> EngineReply:
        body = message_body(request)
        session_id = request.engine_state.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            session_id = await self.create_session()
        try:
            answer = await self._message(session_id, body)
        except EngineHTTPError as exc:
            if exc.status != 404 or (exc.error_message or "").strip().lower() != INVALID_SESSION:
                raise
            session_id = await self.create_session()
            answer = await self._message(session_id, body)
        reply = parse_v2_answer(answer)
        reply.engine_state = {"sessionId": session_id}
        if clear := action_keys_in_v2_context(answer):
            reply.engine_state["clearKeys"] = clear
        return reply

    async def _message(self, session_id: str, body: JSON) -> JSON:
        url = f"{self.sessions_url}/{quote(session_id, safe='')}/message"
        return await self._client.post(url, body, params=self._params)

    async def close(self) -> None:
        """Sessions expire on WA's side; the HTTP session belongs to the app."""


def message_body(request: TurnRequest) -> JSON:
    state = request.state
    user_defined: JSON = {key: None for key in _str_list(request.engine_state.get("clearKeys"))}
    user_defined.update(state)
    if user_defined.get("smsMedia") is None:
        user_defined["smsMedia"] = []
    text_input: JSON = {
        "message_type": "text",
        "text": normalise_text(request.text),
        "options": {"return_context": True},
    }
    if attachments := _attachments(user_defined["smsMedia"]):
        text_input["attachments"] = attachments
    context: JSON = {"skills": {MAIN_SKILL: {"user_defined": user_defined}}}
    if text_messaging := _text_messaging(state):
        context["integrations"] = {"text_messaging": text_messaging}
    body: JSON = {"input": text_input, "context": context}
    if request.user_id:
        body["user_id"] = request.user_id
    return body


def _attachments(media: object) -> list[JSON]:
    if not isinstance(media, list):
        return []
    attachments: list[JSON] = []
    for item in media:
        if isinstance(item, dict) and isinstance(item.get("mediaURL"), str):
            attachment: JSON = {"url": item["mediaURL"]}
            if isinstance(item.get("mediaContentType"), str):
                attachment["media_type"] = item["mediaContentType"]
            attachments.append(attachment)
    return attachments[:MAX_ATTACHMENTS]


def _text_messaging(state: JSON) -> JSON:
    tenant, user = state.get("smsTenantPhoneNumber"), state.get("smsUserPhoneNumber")
    text_messaging: JSON = {}
    if isinstance(tenant, str):
        text_messaging["assistant_phone_number"] = tenant
    if isinstance(user, str):
        text_messaging["private"] = {"user_phone_number": user}
    return text_messaging


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
