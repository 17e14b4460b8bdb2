"""The simulated phones' state: users, the conversation each has with each tenant, what the engine saw each turn,
the pictures users attached; every change is published to the page's live-update subscribers."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from sms_gateway.config.model import normalise_number
from sms_gateway.engines.base import TurnRequest
from sms_gateway.model import JSON, EngineReply
from sms_gateway.phone.segments import segments
from sms_gateway.providers.sandbox import SandboxMessage

DEFAULT_USERS = ("+15551230001", "+15551230002", "+15551230003")

Direction = Literal["from_user", "to_user"]
# from_user: sending -> accepted (the gateway answered 2xx) | rejected; to_user: sent -> delivered | failed
Status = Literal["sending", "accepted", "rejected", "sent", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class TenantView:
    number: str
    provider: str  # the provider's kind, whose sandbox plays it
    provider_name: str
    description: str


@dataclass(slots=True)
class Bubble:
    """A message on a simulated phone."""

    bubble_id: str
    user: str
    tenant: str
    direction: Direction
    text: str
    media: list[str]
    status: Status
    segments: list[str]  # the text as the phone receives it (one part, or the segments of a long SMS)
    at: float
    detail: str = ""  # why a message was rejected


@dataclass(slots=True)
class TurnRecord:
    """What one engine turn received and answered, and what then went to the provider."""

    turn_id: str
    user: str
    tenant: str
    text: str
    state: JSON  # the state variables the engine received (IBM's names)
    answer: JSON  # the engine's answer: its raw response where it has one
    commands: list[JSON]
    error: str | None
    at: float
    provider: list[JSON] = field(default_factory=list)  # the send requests as the provider received them


@dataclass(frozen=True, slots=True)
class StoredMedia:
    content_type: str
    body: bytes


class MediaStore:
    """Pictures users attached, kept in memory (oldest dropped beyond `max_total_bytes`)."""

    def __init__(self, max_total_bytes: int) -> None:
        self._max_total = max_total_bytes
        self._items: OrderedDict[str, StoredMedia] = OrderedDict()
        self._total = 0

    def add(self, content_type: str, body: bytes) -> str:
        media_id = secrets.token_urlsafe(12)
        self._items[media_id] = StoredMedia(content_type, body)
        self._total += len(body)
        while self._total > self._max_total and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self._total -= len(dropped.body)
        return media_id

    def get(self, media_id: str) -> StoredMedia | None:
        return self._items.get(media_id)


def as_json(item: Bubble | TurnRecord | TenantView) -> JSON:
    return dataclasses.asdict(item)


def answer_of(reply: EngineReply) -> JSON:
    """The engine's answer as the inspector shows it: its raw response, else (a built-in engine) what it said."""
    if reply.raw:
        return reply.raw
    return {
        "texts": reply.texts,
        "commands": [dataclasses.asdict(c) for c in reply.commands],
        "choices": [dataclasses.asdict(c) for c in reply.choices],
        "engineState": reply.engine_state,
    }


class Simulator:
    def __init__(
        self, tenants: list[TenantView], users: tuple[str, ...] = DEFAULT_USERS, max_media_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.tenants = tenants
        self.users = list(users)
        self.bubbles: list[Bubble] = []
        self.turns: list[TurnRecord] = []
        self.media = MediaStore(max_media_bytes)
        self._subscribers: set[asyncio.Queue[JSON | None]] = set()
        self._ids = itertools.count(1)
        self._last_tenant: dict[str, str] = {}  # user -> the tenant they last texted
        self._seq = 0  # events so far: a page that loads a snapshot skips the events it already holds

    # Live updates -----------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[JSON | None]:
        """A queue of events; None when the server stops."""
        queue: asyncio.Queue[JSON | None] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[JSON | None]) -> None:
        self._subscribers.discard(queue)

    def close_subscribers(self) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._subscribers.clear()

    def publish(self, kind: str, item: Bubble | TurnRecord) -> None:
        self._seq += 1
        event = {"kind": kind, kind: as_json(item), "seq": self._seq}
        for queue in list(self._subscribers):
            if queue.full():  # a page that stopped reading: it reloads the whole state when it reconnects
                self._subscribers.discard(queue)
            else:
                queue.put_nowait(event)

    def snapshot(self) -> JSON:
        return {
            "seq": self._seq,
            "users": self.users,
            "tenants": [as_json(t) for t in self.tenants],
            "bubbles": [as_json(b) for b in self.bubbles],
            "turns": [as_json(t) for t in self.turns],
        }

    # Lookups ----------------------------------------------------------------------------------
    def tenant(self, number: str) -> TenantView | None:
        digits = normalise_number(number)
        return next((t for t in self.tenants if normalise_number(t.number) == digits), None)

    def user(self, number: str) -> str:
        """The simulated user a number names (providers write it with or without "+"); a new one is added."""
        digits = normalise_number(number)
        known = next((u for u in self.users if normalise_number(u) == digits), None)
        if known is None:
            known = "+" + digits
            self.users.append(known)
        return known

    def last_session_id(self, user: str, tenant: str) -> str | None:
        for turn in reversed(self.turns):
            if turn.user == user and turn.tenant == tenant:
                session_id = turn.state.get("smsSessionID")
                return session_id if isinstance(session_id, str) else None
        return None

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    # Changes ----------------------------------------------------------------------------------
    def user_sends(self, user: str, tenant: str, text: str, media: list[str]) -> Bubble:
        self._last_tenant[user] = tenant
        bubble = Bubble(self._next_id("b"), user, tenant, "from_user", text, media, "sending", [text], time.time())
        self.bubbles.append(bubble)
        self.publish("bubble", bubble)
        return bubble

    def set_status(self, bubble: Bubble, status: Status, detail: str = "") -> None:
        bubble.status, bubble.detail = status, detail
        self.publish("bubble", bubble)

    def engine_turn(self, request: TurnRequest, reply: EngineReply | None, error: str | None) -> None:
        """An engine turn ran (the observing engine calls this)."""
        tenant = self.tenant(str(request.state.get("smsTenantPhoneNumber", "")))
        user = self.user(str(request.state.get("smsUserPhoneNumber", "")))
        turn = TurnRecord(
            self._next_id("t"),
            user,
            tenant.number if tenant else "",
            request.text,
            dict(request.state),
            answer_of(reply) if reply is not None else {},
            [dataclasses.asdict(c) for c in reply.commands] if reply is not None else [],
            error,
            time.time(),
        )
        self.turns.append(turn)
        self.publish("turn", turn)

    def provider_received(self, kind: str, message: SandboxMessage) -> Bubble:
        """A message reached provider `kind`'s sandbox: a bubble on the user's phone (failed when refused)."""
        user = self.user(message.to)
        tenant = self._tenant_of(kind, user, message.from_)
        bubble = Bubble(
            self._next_id("b"),
            user,
            tenant,
            "to_user",
            message.text,
            list(message.media_urls),
            "failed" if message.refused else "sent",
            segments(message.text),
            time.time(),
            "the provider refused it" if message.refused else "",
        )
        self.bubbles.append(bubble)
        self.publish("bubble", bubble)
        for turn in reversed(self.turns):
            if turn.user == user and turn.tenant == tenant:
                turn.provider.append({"request": message.shown, "refused": message.refused})
                self.publish("turn", turn)
                break
        return bubble

    def _tenant_of(self, kind: str, user: str, sender: str) -> str:
        """The tenant a message came from: its sender, else (a provider that does not echo it) the tenant of that
        provider the user last texted."""
        by_sender = self.tenant(sender) if sender else None
        if by_sender is not None:
            return by_sender.number
        last = self._last_tenant.get(user)
        if last is not None and (view := self.tenant(last)) is not None and view.provider == kind:
            return last
        return next((t.number for t in self.tenants if t.provider == kind), "")
