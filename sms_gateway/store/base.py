"""The store interface: every piece of state the gateway keeps lives behind it.

One interface, several back ends chosen by `STORE_URL` alone (`memory://`, `sqlite:///file.db`).
Every method is atomic on its own; callers never check-then-mark.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from sms_gateway.model import JSON, InboundMessage, Session


class StoreUnavailable(Exception):
    """The store cannot be reached or written (locked, disk full, server down): answer 503."""


@dataclass(frozen=True, slots=True)
class InboundRecord:
    key: str
    message: InboundMessage
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    message_id: str
    tenant_number: str
    user_number: str
    session_id: str | None
    provider_message_id: str | None


def inbound_key(message: InboundMessage) -> str:
    return f"{message.provider}:{message.message_id}"


class Store(abc.ABC):
    async def open(self) -> None:  # noqa: B027 - optional hook
        pass

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot serve requests."""

    # Inbound queue with dedupe ---------------------------------------------------------------
    @abc.abstractmethod
    async def accept_inbound(self, message: InboundMessage) -> bool:
        """Durably claim the provider's message id and queue the message; False if already claimed."""

    @abc.abstractmethod
    async def lease_inbound(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[InboundRecord]:
        """Take up to `limit` queued messages (oldest first) whose lease is free or expired."""

    @abc.abstractmethod
    async def complete_inbound(self, key: str) -> None:
        """The message was processed; it stays claimed (a replay is still a duplicate)."""

    @abc.abstractmethod
    async def pending_inbound_count(self) -> int: ...

    # Sessions --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def load_session(self, tenant_number: str, user_number: str) -> Session | None: ...

    @abc.abstractmethod
    async def save_session(self, session: Session) -> None: ...

    @abc.abstractmethod
    async def delete_session(self, tenant_number: str, user_number: str, session_id: str) -> bool:
        """Delete the pair's session if it is still the one with `session_id`."""

    @abc.abstractmethod
    async def find_session(self, session_id: str) -> Session | None: ...

    @abc.abstractmethod
    async def expired_sessions(self, now: float, limit: int) -> list[Session]: ...

    # smsError waiting for the session's next turn --------------------------------------------
    @abc.abstractmethod
    async def push_sms_error(self, tenant_number: str, user_number: str, error: JSON) -> None: ...

    @abc.abstractmethod
    async def pop_sms_errors(self, tenant_number: str, user_number: str) -> list[JSON]: ...

    # Outbound messages and their delivery statuses -------------------------------------------
    @abc.abstractmethod
    async def record_outbound(self, record: OutboundRecord) -> None: ...

    @abc.abstractmethod
    async def find_outbound(self, message_id: str) -> OutboundRecord | None: ...

    @abc.abstractmethod
    async def claim_status(self, provider_message_id: str, status: str) -> bool:
        """True the first time this (message, status) pair is seen."""
