"""Twilio's webhooks: the inbound-message form, the status-callback form, and `X-Twilio-Signature`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from multidict import MultiDict, MultiDictProxy, MultiMapping
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from yarl import query_to_pairs

from sms_gateway.media import is_http_url
from sms_gateway.model import DeliveryStatus, InboundMessage, Media
from sms_gateway.providers.base import InvalidRequest
from sms_gateway.providers.json_fields import blank_to_none

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML_CONTENT_TYPE = "text/xml"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# The spec's pattern for a Message SID (schema `api.v2010.account.message`). Kept strict: SMS/MMS webhooks
# always carry SM/MM ids, and anything else is more likely a forged or broken request than a new Twilio id.
MESSAGE_SID_RE = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")

MAX_ADDRESS_CHARS = 64
# Twilio caps bodies at 1,600 characters; more than this is not a Twilio request.
MAX_INBOUND_BODY_CHARS = 10_000
MAX_MEDIA = 10  # Twilio never sends more than 10 media per inbound message
MAX_MEDIA_URL_CHARS = 4096
MAX_CONTENT_TYPE_CHARS = 255
MAX_ERROR_CODE_CHARS = 16
MAX_ERROR_MESSAGE_CHARS = 2000
MAX_FORM_FIELDS = 1000  # Twilio's forms have a few dozen; aiohttp's own limit for a form

# `message_enum_status` in Twilio's OpenAPI spec.
MESSAGE_STATUSES = frozenset(
    {
        "queued",
        "sending",
        "sent",
        "failed",
        "delivered",
        "undelivered",
        "receiving",
        "received",
        "accepted",
        "scheduled",
        "read",
        "partially_delivered",
        "canceled",
    }
)
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "read", "received", "canceled"})
FAILED_STATUSES = frozenset({"failed", "undelivered"})

_EMPTY_TWIML: str = str(MessagingResponse())


def empty_twiml() -> str:
    """`<?xml …?><Response />`: acknowledge an inbound message without replying (serve as text/xml)."""
    return _EMPTY_TWIML


def twilio_status_is_final(status: str) -> bool:
    """True when Twilio sends no further status callbacks for the message after this one."""
    return status.strip().lower() in FINAL_STATUSES


# ------------------------------------------------------------------------------ the form


def decode_form(body: bytes) -> MultiDictProxy[str]:
    """A form-encoded body as aiohttp's `request.post()` gives it (repeated keys kept, blanks kept), with the
    same parser (yarl's, which unquotes in C: a fifth of `urllib.parse.parse_qsl`'s time)."""
    try:
        pairs = query_to_pairs(body.decode("utf-8").rstrip(), max_fields=MAX_FORM_FIELDS, encoding="utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"malformed form body: {exc}") from exc
    return MultiDictProxy(MultiDict(pairs))


def _text(form: Mapping[str, object], name: str, *, max_chars: int) -> str | None:
    """A form field as a string, None when absent; InvalidRequest when not text or too long."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a text field")
    if len(value) > max_chars:
        raise InvalidRequest(f"{name} is longer than {max_chars} characters")
    return value


def _first_text(form: Mapping[str, object], names: Sequence[str], *, max_chars: int) -> str | None:
    for name in names:
        value = _text(form, name, max_chars=max_chars)
        if value:
            return value
    return None


def _message_sid(form: Mapping[str, object]) -> str:
    sid = _first_text(form, ("MessageSid", "SmsMessageSid", "SmsSid"), max_chars=64)
    if sid is None:
        raise InvalidRequest("MessageSid is missing")
    sid = sid.strip()
    if not MESSAGE_SID_RE.fullmatch(sid):
        raise InvalidRequest("MessageSid is not a Twilio message SID (SM/MM + 32 hex digits)")
    return sid


def address(form: Mapping[str, object], name: str) -> str | None:
    """A phone-number field (`To`, `From`), None when absent or blank."""
    return blank_to_none(_text(form, name, max_chars=MAX_ADDRESS_CHARS))


def _required_address(form: Mapping[str, object], name: str) -> str:
    value = address(form, name)
    if value is None:
        raise InvalidRequest(f"{name} is missing")
    return value


def _num_media(form: Mapping[str, object]) -> int:
    """NumMedia as an int 0..10. Absent means "look at what is there" (up to Twilio's 10)."""
    raw = _text(form, "NumMedia", max_chars=8)
    if raw is None or not raw.strip():
        return MAX_MEDIA
    if not re.fullmatch(r"[0-9]{1,2}", raw.strip()):
        raise InvalidRequest("NumMedia must be a whole number from 0 to 10")
    count = int(raw)
    if count > MAX_MEDIA:
        raise InvalidRequest("NumMedia must be a whole number from 0 to 10")
    return count


def _media(form: Mapping[str, object]) -> tuple[Media, ...]:
    """MediaUrl{N}/MediaContentType{N} for N < NumMedia, in Twilio's order.

    NumMedia is trusted as an upper bound only: a MediaUrl{N} missing below it is skipped (a shorter list
    beats dropping the whole message), and MediaUrl{N} at or beyond it is ignored.
    """
    media: list[Media] = []
    for n in range(_num_media(form)):
        url = _text(form, f"MediaUrl{n}", max_chars=MAX_MEDIA_URL_CHARS)
        if not url:
            continue
        if not is_http_url(url):
            raise InvalidRequest(f"MediaUrl{n} is not an http(s) URL")
        content_type = _text(form, f"MediaContentType{n}", max_chars=MAX_CONTENT_TYPE_CHARS)
        media.append(Media(url=url, content_type=blank_to_none(content_type)))
    return tuple(media)


def parse_inbound(form: Mapping[str, object]) -> InboundMessage:
    """Twilio's inbound-message webhook form -> InboundMessage; InvalidRequest when it is malformed.

    Accepts a plain dict or a `MultiDictProxy`; with repeated keys the first value counts.
    """
    sid = _message_sid(form)
    user = _required_address(form, "From")
    tenant = _required_address(form, "To")
    body = _text(form, "Body", max_chars=MAX_INBOUND_BODY_CHARS) or ""
    return InboundMessage(
        provider=PROVIDER,
        message_id=sid,
        tenant_number=tenant,
        user_number=user,
        text=body,
        media=_media(form),
    )


def parse_status(form: Mapping[str, object], our_message_id: str | None = None) -> DeliveryStatus:
    """A status callback form -> DeliveryStatus. `our_message_id` comes from our callback URL (`?mid=`)."""
    sid = _message_sid(form)
    raw_status = _first_text(form, ("MessageStatus", "SmsStatus"), max_chars=32)
    if raw_status is None:
        raise InvalidRequest("MessageStatus is missing")
    status = raw_status.strip().lower()
    if status not in MESSAGE_STATUSES:
        raise InvalidRequest("MessageStatus is not a Twilio message status")
    error_code = _text(form, "ErrorCode", max_chars=MAX_ERROR_CODE_CHARS)
    error_message = _text(form, "ErrorMessage", max_chars=MAX_ERROR_MESSAGE_CHARS)
    return DeliveryStatus(
        provider=PROVIDER,
        provider_message_id=sid,
        status=status,
        failed=status in FAILED_STATUSES,
        our_message_id=our_message_id or None,
        error_code=blank_to_none(error_code),
        error_message=error_message or None,
        # On an outbound message From is our (tenant) number and To is the user.
        tenant_number=address(form, "From"),
        user_number=address(form, "To"),
    )


# ------------------------------------------------------------------------------ signatures


def verify_signature(
    url: str,
    params: MultiMapping[str] | Mapping[str, object] | None,
    signature: str | None,
    auth_token: str,
    *,
    algorithm: str | None = None,
) -> bool:
    """Check `X-Twilio-Signature` with twilio-python's reference validator.

    `params` is the POST form (dict or `MultiDictProxy`; repeated keys are handled), or None for GET.
    A missing signature or an empty auth token never validates. `algorithm` is for SharedKey-signed webhooks
    (`X-Twilio-Webhooks-Signature-Settings`); the default is Twilio's HMAC-SHA1.
    """
    if not signature or not auth_token:
        return False
    try:
        return bool(RequestValidator(auth_token).validate(url, params or {}, signature, algorithm))
    except (ValueError, TypeError, UnicodeError):
        # A bad port in the URL, non-text form values, or an unknown algorithm.
        return False
