"""A network-free engine for the demo, `sms-gateway phone` and tests: echoes text, sends received media back, and
answers "options" with an option list (numbered options a user answers with a number).

It answers the way a Watson Assistant v1 dialog would (`output.text`, the command in `output.smsAction`), and
that answer is read by the same parser as a real v1 engine's, so the demo shows an answer the gateway really
interprets.
"""

from __future__ import annotations

from sms_gateway.engines.base import TurnRequest
from sms_gateway.model import JSON, EngineReply
from sms_gateway.replies import parse_v1_answer

WELCOME = 'Hello! Send me a text or a picture and I will send it back (or send "options" to pick one).'
# A v1 dialog's option answer (output.generic), each option's value the input text it stands for.
OPTIONS: JSON = {
    "response_type": "option",
    "title": "Which colour do you like?",
    "options": [{"label": label, "value": {"input": {"text": label.lower()}}} for label in ("Red", "Green", "Blue")],
}
GOODBYE = "We have not heard from you for a while, so this conversation will end now. Goodbye!"


class EchoEngine:
    def __init__(self) -> None:
        self.last_request: TurnRequest | None = None
        self.last_reply: EngineReply | None = None  # its `raw` is the v1 answer it gave

    async def turn(self, request: TurnRequest) -> EngineReply:
        self.last_request = request
        turns = request.engine_state.get("turns")
        state = {"turns": (turns if isinstance(turns, int) else 0) + 1}
        reply = parse_v1_answer(v1_answer(request))
        reply.engine_state = state
        self.last_reply = reply
        return reply

    async def close(self) -> None:
        return None


def v1_answer(request: TurnRequest) -> JSON:
    """The v1 `/message` answer for the turn: the text echoed, and the media sent back with smsActSendMedia."""
    if request.text == "smsResponseTimeout":
        return {"output": {"text": [GOODBYE]}}
    if request.text.strip().lower() == "options":
        return {"output": {"text": [], "generic": [OPTIONS]}}
    urls = media_urls(request.state.get("smsMedia"))
    texts = [f"You said: {request.text}"] if request.text else []
    if urls:
        texts.append(f"Got your {len(urls)} media")
    output: JSON = {"text": texts or [WELCOME]}
    if urls:
        output["smsAction"] = {"command": "smsActSendMedia", "parameters": {"mediaURL": urls}}
    return {"output": output}


def media_urls(media: object) -> list[str]:
    if not isinstance(media, list):
        return []
    return [m["mediaURL"] for m in media if isinstance(m, dict) and isinstance(m.get("mediaURL"), str)]
