"""The one interface every conversation engine implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sms_gateway.model import JSON, EngineReply


class EngineError(Exception):
    """The engine could not answer this turn (after its own retries)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(slots=True)
class TurnRequest:
    """One conversation turn to run.

    `state` holds IBM's state variables (smsTenantPhoneNumber, smsMedia, ...) for this turn only; the engine
    places them where its API expects them (v1: top-level context keys, v2: main skill user_defined).
    `engine_state` is what the engine returned last turn (v1 context, v2 session id); None/{} on a new session.
    """

    text: str
    state: JSON
    engine_state: JSON = field(default_factory=dict)
    user_id: str = ""


class Engine(Protocol):
    async def turn(self, request: TurnRequest) -> EngineReply: ...

    async def close(self) -> None: ...
