"""Watson Assistant v1 (`/v1/workspaces/{id}/message`) and an SOE that speaks the same API at its own URL.

v1 is stateless: the whole context the engine returned is kept (`engine_state["context"]`) and sent back on
the next turn, with this turn's state variables as top-level context keys.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import aiohttp

from sms_gateway.config.model import EngineConfig
from sms_gateway.engines.auth import Authorizer, create_authorizer
from sms_gateway.engines.base import TurnRequest
from sms_gateway.engines.http import HttpOptions, JsonClient, Sleep
from sms_gateway.model import JSON, EngineReply
from sms_gateway.replies import parse_v1_answer, without_actions

MAX_INPUT_CHARS = 2048
_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")


def normalise_text(text: str) -> str:
    """v1 rejects CR, LF and TAB in `input.text` and caps it at 2,048 characters."""
    return _WHITESPACE.sub(" ", text).strip()[:MAX_INPUT_CHARS].rstrip()


def build_context(stored: object, state: JSON) -> JSON:
    """The stored context with this turn's state variables on top; a None state value removes the key."""
    context = without_actions(stored) if isinstance(stored, dict) else {}
    for key, value in state.items():
        if value is None:
            context.pop(key, None)
        else:
            context[key] = value
    if state.get("smsMedia") is None:  # never let an earlier turn's media linger
        context["smsMedia"] = []
    return context


class WatsonV1Engine:
    def __init__(
        self,
        config: EngineConfig,
        http: aiohttp.ClientSession,
        *,
        authorizer: Authorizer | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if config.kind == "soe":
            if not config.url:
                raise ValueError("engine 'soe' needs a url")
            self.url = config.url  # used exactly as given, query string included
            self._params: dict[str, str] | None = None
        else:
            if not config.url or not config.workspace_id:
                raise ValueError("engine 'watson_v1' needs a url and a workspace_id")
            self.url = f"{config.url.rstrip('/')}/v1/workspaces/{quote(config.workspace_id, safe='')}/message"
            self._params = {"version": config.version_date}
        self._client = JsonClient(
            http, authorizer or create_authorizer(config), HttpOptions.from_config(config), sleep=sleep
        )

    async def turn(self, request: TurnRequest) -> EngineReply:
        context = build_context(request.engine_state.get("context"), request.state)
        body: JSON = {
            "input": {"text": normalise_text(request.text)},
            "context": context,
            "alternate_intents": False,
        }
        answer = await self._client.post(self.url, body, params=self._params)
        reply = parse_v1_answer(answer)
        if "context" not in reply.engine_state:
            reply.engine_state = {"context": context}
        return reply

    async def close(self) -> None:
        """The HTTP session belongs to the app, so there is nothing to release."""
