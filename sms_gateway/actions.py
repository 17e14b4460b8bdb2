"""What the engine's commands mean for this turn, decided without doing any I/O.

`interpret` turns an EngineReply into a TurnPlan: the text and media to send as this turn's answer, extra
sends (`vgwActSendSMS`), and the session changes the conversation layer must carry out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from sms_gateway.config.model import normalise_number
from sms_gateway.model import JSON, Command, EngineReply, Session

log = structlog.get_logger("sms_gateway.actions")

MAX_SESSION_TIMEOUT_SECONDS = 7 * 24 * 3600

# Voice Gateway commands that only make sense on a phone call; an SMS session skips them quietly.
VOICE_ONLY_COMMANDS = frozenset(
    {
        "vgwActPlayText",
        "vgwActPlayUrl",
        "vgwActHangup",
        "vgwActTransfer",
        "vgwActCollectDTMF",
        "vgwActPauseDTMF",
        "vgwActUnPauseDTMF",
        "vgwActExcludeFromTranscription",
        "vgwActSetSTTConfig",
        "vgwActSetTTSConfig",
        "vgwActForceNoInputTurn",
        "vgwActPauseSTT",
        "vgwActUnPauseSTT",
        "vgwActSetConversationConfig",
        "vgwActSetSpeechInput",
    }
)


@dataclass(frozen=True, slots=True)
class ExtraSend:
    """A `vgwActSendSMS`: a message of its own, possibly to another user than the session's, always from the
    session's tenant."""

    text: str
    media_urls: tuple[str, ...]
    tenant_number: str
    user_number: str


@dataclass(slots=True)
class TurnPlan:
    text: str = ""
    media_urls: list[str] = field(default_factory=list)
    extra_sends: list[ExtraSend] = field(default_factory=list)
    terminate: bool = False
    force_no_input: bool = False
    session_timeout: int | None = None
    conversation_config: JSON | None = None
    ignored: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # input texts of the numbered options sent


def media_url_list(value: Any) -> list[str] | None:
    """`mediaURL` is a list or a single string; anything else is invalid (None)."""
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if item.strip()]
    return None


def render_choices(title: str, labels: list[str], prefix: str | None) -> str:
    lines = [title] if title else []
    for number, label in enumerate(labels, start=1):
        if prefix:
            head = prefix.replace("%s", str(number)) if "%s" in prefix else f"{prefix}{number} "
            # "Enter %s for:" renders "Enter 1 for: Boat", as Watson's own SMS integration shows it.
            lines.append(f"{head}{label}" if head[-1:].isspace() else f"{head} {label}")
        else:
            lines.append(f"{number}. {label}")
    return "\n".join(lines)


def interpret(reply: EngineReply, session: Session) -> TurnPlan:
    plan = TurnPlan()
    # Prefix settings apply to the options of the same answer, so they are taken first.
    for command in reply.commands:
        _configure_rendering(command, session)
    for command in reply.commands:
        _apply(command, session, plan)

    parts = [text for text in reply.texts if text]
    for choice in reply.choices:
        prefix = session.disambiguation_prefix if choice.kind == "suggestion" else session.options_prefix
        parts.append(render_choices(choice.title, list(choice.labels), prefix))
        plan.options = list(choice.values)  # numbers answer the last list shown
    plan.text = "\n".join(parts)
    return plan


def chosen_option(text: str, options: list[str] | None) -> str | None:
    """The option a user picked by answering with its number ("2", " 2. "), if that is what they did."""
    number = text.strip().rstrip(".)")
    if not options or not number.isdigit():
        return None
    index = int(number)
    return options[index - 1] if 1 <= index <= len(options) else None


def _configure_rendering(command: Command, session: Session) -> None:
    if command.name not in ("smsActSetOptionsConfig", "smsActSetDisambiguationConfig"):
        return
    prefix = command.parameters.get("prefixText")
    if not isinstance(prefix, str):
        log.warning("command_ignored", command=command.name, reason="prefixText must be a string")
        return
    if command.name == "smsActSetOptionsConfig":
        session.options_prefix = prefix
    else:
        session.disambiguation_prefix = prefix


def _apply(command: Command, session: Session, plan: TurnPlan) -> None:
    name, params = command.name, command.parameters
    if name == "smsActSendMedia":
        urls = media_url_list(params.get("mediaURL"))
        if urls is None:
            _ignore(plan, name, "mediaURL must be a URL or a list of URLs")
        else:
            plan.media_urls.extend(url for url in urls if url not in plan.media_urls)
    elif name == "setSessionTimeoutCount":
        count = _positive_int(params.get("count"))
        if count is None:
            _ignore(plan, name, "count must be a positive number of seconds")
        else:
            plan.session_timeout = min(count, MAX_SESSION_TIMEOUT_SECONDS)
    elif name == "smsActForceNoInputTurn":
        plan.force_no_input = True
    elif name == "terminateSession":
        plan.terminate = True
    elif name == "smsActSetConversationConfig":
        plan.conversation_config = dict(params)
    elif name in ("smsActSetOptionsConfig", "smsActSetDisambiguationConfig"):
        pass  # applied before rendering
    elif name == "vgwActSendSMS":
        _vgw_send_sms(params, session, plan)
    elif name in VOICE_ONLY_COMMANDS:
        log.debug("command_skipped", command=name, reason="voice-only command in an SMS session")
    else:
        _ignore(plan, name, "unknown command")


def _vgw_send_sms(params: JSON, session: Session, plan: TurnPlan) -> None:
    message = params.get("message", "")
    urls = media_url_list(params.get("mediaURL", []))
    tenant = params.get("tenantPhoneNumber") or session.tenant_number
    user = params.get("userPhoneNumber") or session.user_number
    if not isinstance(message, str) or urls is None or not isinstance(tenant, str) or not isinstance(user, str):
        _ignore(plan, "vgwActSendSMS", "message, mediaURL and phone numbers must be strings")
        return
    if not message and not urls:
        _ignore(plan, "vgwActSendSMS", "nothing to send")
        return
    if normalise_number(tenant) != normalise_number(session.tenant_number):
        # Another tenant's number would send on that tenant's account, in its name: an engine speaks only for
        # the tenant whose conversation it runs.
        _ignore(plan, "vgwActSendSMS", "tenantPhoneNumber must be this session's own tenant number")
        return
    plan.extra_sends.append(ExtraSend(message, tuple(urls), session.tenant_number, user))


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def _ignore(plan: TurnPlan, name: str, reason: str) -> None:
    plan.ignored.append(name)
    log.warning("command_ignored", command=name, reason=reason)
