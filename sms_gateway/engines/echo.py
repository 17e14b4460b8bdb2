"""A network-free engine for the demo, `sms-gateway phone` and tests: echoes text, sends received media back, and
answers "options" with numbered options (as an assistant's option answer)."""

from __future__ import annotations

from sms_gateway.engines.base import TurnRequest
from sms_gateway.model import Choice, Command, EngineReply

WELCOME = "Hello! Send me a text or a picture and I will send it back (or send \"options\" to pick one)."
OPTIONS = Choice("Which colour do you like?", "option", ("Red", "Green", "Blue"), ("red", "green", "blue"))
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
        if request.text.strip().lower() == "options":
            return EngineReply(choices=[OPTIONS], engine_state=state)

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
