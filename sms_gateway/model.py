"""Plain data objects passed between the layers of one message's path.

Each arrow of the design (provider -> store -> session -> engine -> actions -> media -> provider) is one
function call taking and returning these; none of them knows about HTTP or storage.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Media:
    """One attachment, in the shape of IBM's `smsMedia` state variable."""

    url: str
    content_type: str | None = None

    def to_state(self) -> JSON:
        return {"mediaURL": self.url, "mediaContentType": self.content_type}

    @classmethod
    def from_state(cls, data: JSON) -> Media:
        return cls(url=str(data["mediaURL"]), content_type=data.get("mediaContentType"))


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An SMS/MMS received from a user, provider-neutral."""

    provider: str
    message_id: str
    tenant_number: str
    user_number: str
    text: str
    media: tuple[Media, ...] = ()
    received_at: float = field(default_factory=time.time)

    def to_json(self) -> JSON:
        return {
            "provider": self.provider,
            "messageId": self.message_id,
            "tenantNumber": self.tenant_number,
            "userNumber": self.user_number,
            "text": self.text,
            "media": [m.to_state() for m in self.media],
            "receivedAt": self.received_at,
        }

    @classmethod
    def from_json(cls, data: JSON) -> InboundMessage:
        return cls(
            provider=data["provider"],
            message_id=data["messageId"],
            tenant_number=data["tenantNumber"],
            user_number=data["userNumber"],
            text=data["text"],
            media=tuple(Media.from_state(m) for m in data.get("media", [])),
            received_at=float(data.get("receivedAt", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message to be handed to the provider (already within the provider's limits)."""

    message_id: str
    tenant_number: str
    user_number: str
    text: str
    media_urls: tuple[str, ...] = ()
    session_id: str | None = None


class SendOutcome(enum.Enum):
    """What became of one attempt to hand a message to the provider."""

    SENT = "sent"  # accepted: the provider's id is known
    RETRY = "retry"  # not sent, and sending again later may work (throttled, provider busy)
    FAILED = "failed"  # not sent, and sending again can only fail again (bad number, opted out, bad credentials)
    UNKNOWN = "unknown"  # may have been sent (a timeout, a 5xx): ask the provider before sending again


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: SendOutcome
    provider_message_id: str | None = None
    status: str | None = None  # the provider's status of an accepted message ("queued", ...)
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    retry_after: float | None = None  # the provider's Retry-After, in seconds
    # The provider refused it for the sending number's (or account's) rate: not sent, the sender is to slow down.
    throttled: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is SendOutcome.SENT

    @property
    def retryable(self) -> bool:
        return self.outcome in (SendOutcome.RETRY, SendOutcome.UNKNOWN)


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """What one outgoing message may carry at a provider; replies are split and checked to fit before sending."""

    max_media_per_message: int
    max_total_bytes: int  # of all the media of one message
    max_body_chars: int
    mms_country_prefixes: tuple[str, ...]  # users whose numbers start so can get MMS; others get the links as text
    media_with_text: bool = True  # False: an MMS carries no text, so text goes in messages of its own


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """A provider's report on a message we sent."""

    provider: str
    provider_message_id: str
    status: str  # the provider's own status name, lower case ("delivered", "undelivered", "switching_channel")
    failed: bool = False  # the message will not reach the user: the engine hears it as smsError
    fallback: bool = False  # the provider gave up on MMS and sends (or sent) the message as SMS instead
    our_message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    tenant_number: str | None = None
    user_number: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """An action command from the engine's answer (`smsAction`, `vgwAction`, ...)."""

    name: str
    parameters: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Choice:
    """An `option` or `suggestion` answer: sent as numbered text; the user may answer with the number."""

    title: str
    kind: str  # "option" | "suggestion"
    labels: tuple[str, ...]
    values: tuple[str, ...]  # the input text each option stands for


@dataclass(slots=True)
class EngineReply:
    """What an engine answered for one turn."""

    texts: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    # Engine-specific state to keep for the next turn (v1 context, v2 session id).
    engine_state: JSON = field(default_factory=dict)
    raw: JSON = field(default_factory=dict)


@dataclass(slots=True)
class Session:
    """A conversation between one user and one tenant number."""

    session_id: str
    tenant_number: str
    user_number: str
    created_at: float
    last_activity: float
    timeout_seconds: int
    engine_state: JSON = field(default_factory=dict)
    user_data: JSON | None = None
    rest_timeout: int | None = None
    pending_error: JSON | None = None
    conversation_override: JSON | None = None
    options_prefix: str | None = None
    disambiguation_prefix: str | None = None
    # The input texts of the numbered options last sent, so "2" can stand for the second one.
    pending_options: list[str] | None = None

    @classmethod
    def new(cls, tenant_number: str, user_number: str, timeout_seconds: int, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        return cls(
            session_id=str(uuid.uuid4()),
            tenant_number=tenant_number,
            user_number=user_number,
            created_at=now,
            last_activity=now,
            timeout_seconds=timeout_seconds,
        )

    def expires_at(self) -> float:
        return self.last_activity + self.timeout_seconds

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at()

    def to_json(self) -> JSON:
        return {
            "sessionId": self.session_id,
            "tenantNumber": self.tenant_number,
            "userNumber": self.user_number,
            "createdAt": self.created_at,
            "lastActivity": self.last_activity,
            "timeoutSeconds": self.timeout_seconds,
            "engineState": self.engine_state,
            "userData": self.user_data,
            "restTimeout": self.rest_timeout,
            "pendingError": self.pending_error,
            "conversationOverride": self.conversation_override,
            "optionsPrefix": self.options_prefix,
            "disambiguationPrefix": self.disambiguation_prefix,
            "pendingOptions": self.pending_options,
        }

    @classmethod
    def from_json(cls, data: JSON) -> Session:
        return cls(
            session_id=data["sessionId"],
            tenant_number=data["tenantNumber"],
            user_number=data["userNumber"],
            created_at=float(data["createdAt"]),
            last_activity=float(data["lastActivity"]),
            timeout_seconds=int(data["timeoutSeconds"]),
            engine_state=data.get("engineState") or {},
            user_data=data.get("userData"),
            rest_timeout=data.get("restTimeout"),
            pending_error=data.get("pendingError"),
            conversation_override=data.get("conversationOverride"),
            options_prefix=data.get("optionsPrefix"),
            disambiguation_prefix=data.get("disambiguationPrefix"),
            pending_options=data.get("pendingOptions"),
        )
