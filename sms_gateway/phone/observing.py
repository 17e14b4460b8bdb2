"""An engine wrapper that reports each turn (the state variables received, the answer) to the phone's inspector,
so the core never needs to know a phone is watching."""

from __future__ import annotations

from collections.abc import Callable

from sms_gateway.engines.base import Engine, EngineError, TurnRequest
from sms_gateway.model import EngineReply

TurnObserver = Callable[[TurnRequest, EngineReply | None, str | None], None]


class ObservingEngine:
    def __init__(self, engine: Engine, observe: TurnObserver) -> None:
        self._engine = engine
        self._observe = observe

    async def turn(self, request: TurnRequest) -> EngineReply:
        try:
            reply = await self._engine.turn(request)
        except EngineError as exc:
            self._observe(request, None, str(exc))
            raise
        self._observe(request, reply, None)
        return reply

    async def close(self) -> None:
        await self._engine.close()
