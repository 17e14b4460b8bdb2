"""A network-free engine for the demo and tests: echoes text and sends received media back."""

from __future__ import annotations

from sms_gateway.engines.base import TurnRequest
from sms_gateway.model import Command, EngineReply

WELCOME = "Hello! Send me a text or a picture and I will send it back."
GOODBYE = "We have not heard from you for a while, so this conversation will end now. Goodbye!"


class EchoEngine:
    def __init__(self) -> None:
        self.last_request: TurnRequest | None = None

    async def turn(self, request: TurnRequest) -> EngineReply:
        self.last_request = request
        turns = request.engine_state.get("turns")
        state = {"turns": (turns if isinstance(turns, int) else 0) + 1}
        if request.text == "smsResponseTimeout":
            return EngineReply(texts=[GOODBYE], engine_state=state)

        urls = media_urls(request.state.get("smsMedia"))
        texts = [f"You said: {request.text}"] if request.text else []
        commands = []
        if urls:
            texts.append(f"Got your {len(urls)} media")
            commands.append(Command("smsActSendMedia", {"mediaURL": urls}))
        return EngineReply(texts=texts or [WELCOME], commands=commands, engine_state=state)

    async def close(self) -> None:
        return None


def media_urls(media: object) -> list[str]:
    if not isinstance(media, list):
        return []
    return [m["mediaURL"] for m in media if isinstance(m, dict) and isinstance(m.get("mediaURL"), str)]
