"""The interface every SMS/MMS provider implements for sending."""

from __future__ import annotations

from typing import Protocol

from sms_gateway.model import OutboundMessage, SendResult


class InvalidRequest(Exception):
    """A provider webhook that cannot be understood (answered 400)."""


class Sender(Protocol):
    async def send(self, message: OutboundMessage, status_callback_url: str | None) -> SendResult: ...

    async def find_sent(self, message: OutboundMessage, since: float) -> str | None:
        """The provider's id of this message if the provider already has it (LookupError: cannot tell)."""
        ...
