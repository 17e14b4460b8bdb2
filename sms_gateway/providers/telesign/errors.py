"""What TeleSign's answers to `POST /v1/omnichannel` mean for a message: the TeleSign sender's error codes and
their outcomes, in one place.

TeleSign says to go by `status.code` (and `errors[].code`), not the HTTP status. An attempt that fails records
TeleSign's code ("3204", "-30006"), else the HTTP status of an answer without one ("503"), else a transport code
from `http_client` ("timeout", "invalidURL"), or one of the codes of our own below.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sms_gateway.http_client import TRANSPORT_NOT_SENT, Answer
from sms_gateway.model import SendOutcome, SendResult


class Kind(enum.Enum):
    """What an error says about the message. Each means TeleSign did not create it."""

    REFUSED = "refused"  # the request is wrong or not allowed: sending it again fails again
    RATE_LIMITED = "rateLimited"  # not processed: send later
    UNAVAILABLE = "unavailable"  # not processed, and TeleSign says to send it again
    AUTH = "auth"  # the credentials or the signature were refused: the settings need fixing


OUTCOMES: Mapping[Kind, SendOutcome] = {
    Kind.REFUSED: SendOutcome.FAILED,
    Kind.RATE_LIMITED: SendOutcome.RETRY,
    Kind.UNAVAILABLE: SendOutcome.RETRY,
    Kind.AUTH: SendOutcome.FAILED,
}

ACCEPTED = 3001  # "Message in progress": the message is TeleSign's, under `reference_id`
ACCEPTED_STATUS = "in_progress"

# TeleSign's codes in answers to a send (developer.telesign.com, "All status and error codes"; the five-digit
# and negative ones are the REST API's authentication errors).
CODES: Mapping[int, Kind] = {
    3006: Kind.REFUSED,  # none of the requested channels is enabled for the customer
    3071: Kind.REFUSED,  # unverified phone number on a trial account
    3073: Kind.REFUSED,  # insufficient funds in the prepaid wallet
    **{code: Kind.REFUSED for code in range(3101, 3117)},  # invalid parameters, bad JSON, payload over 10 KB
    3203: Kind.REFUSED,  # callback_url not enabled for the customer
    3204: Kind.RATE_LIMITED,  # requests per second on the Omnichannel API
    3205: Kind.RATE_LIMITED,  # SMS transactions per second
    **{code: Kind.REFUSED for code in range(3206, 3210)},  # product not enabled, hard cap, test numbers
    **{code: Kind.REFUSED for code in range(3300, 3307)},  # a required parameter is missing
    3400: Kind.AUTH,  # not authorized
    **{code: Kind.AUTH for code in range(3405, 3414)},  # Authorization header, customer id, API key, host
    3500: Kind.UNAVAILABLE,  # system unavailable: resubmit
    10000: Kind.UNAVAILABLE,
    **{code: Kind.AUTH for code in range(10002, 10012)},  # nonce, Date, auth method, signature, account
    10014: Kind.AUTH,  # source IP address
    10015: Kind.AUTH,  # customer id
    10019: Kind.RATE_LIMITED,
    10022: Kind.AUTH,  # API key
    10028: Kind.AUTH,  # Authorization header format
    10030: Kind.REFUSED,  # insufficient funds
    10031: Kind.AUTH,  # host not allowed
    10033: Kind.REFUSED,  # unverified phone number on a trial account
    10035: Kind.AUTH,  # API host not allowed for the customer id
}
# -30000 to -30099: the digest errors' older codes (-30006 invalid signature, -30009 Date not RFC 822, ...).
DIGEST_ERRORS = range(-30099, -29999)

# HTTP statuses of answers that carry no code TeleSign documents.
HTTP_STATUSES: Mapping[int, Kind] = {
    401: Kind.AUTH,
    403: Kind.AUTH,
    408: Kind.UNAVAILABLE,  # the request was not taken in time: not processed
    429: Kind.RATE_LIMITED,
    503: Kind.UNAVAILABLE,  # TeleSign's System Unavailable
}

# Codes of our own. Each but NO_REFERENCE_ID means the request was never made.
TOO_MANY_MEDIA = "tooManyMedia"  # an MMS carries one media; the outbox splits replies to fit
EMPTY_MESSAGE = "emptyMessage"  # neither text nor media
INVALID_API_KEY = "invalidApiKey"  # Digest signs with the API key base64-decoded, and it is not base64
NO_REFERENCE_ID = "noReferenceId"  # a 2xx without "3001 and a reference_id": TeleSign may well have the message
_NOT_SENT = frozenset({TOO_MANY_MEDIA, EMPTY_MESSAGE, INVALID_API_KEY}) | TRANSPORT_NOT_SENT

MAX_ERROR_MESSAGE_CHARS = 1000
MAX_REFERENCE_ID_CHARS = 64  # TeleSign's are 32 hex digits


def kind_of(code: int) -> Kind | None:
    """The kind of a TeleSign code, or of an HTTP status (three digits: TeleSign's codes have four or more)."""
    if 100 <= code <= 599:
        return HTTP_STATUSES.get(code) or (Kind.REFUSED if 300 <= code < 500 else None)
    if code in DIGEST_ERRORS:
        return Kind.AUTH
    return CODES.get(code)


def may_have_sent(error_code: str) -> bool:
    """Whether an attempt that failed with `error_code` may have created the message at TeleSign: not after our
    own refusals, a refusal, a rate limit, System Unavailable or an authentication error; possibly after any
    other 5xx, a timeout, a lost connection or a code we do not know."""
    if error_code in _NOT_SENT:
        return False
    code = _integer(error_code)
    return code is None or kind_of(code) is None


def refused(error_code: str, message: str) -> SendResult:
    """A message the sender will not send as it is."""
    return SendResult(SendOutcome.FAILED, error_code=error_code, error_message=message)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the answer of a send says, as far as the sender cares."""

    reference_id: str | None
    codes: tuple[int, ...]  # status.code first, then errors[].code
    descriptions: tuple[str, ...]

    @classmethod
    def read(cls, payload: Any) -> Reply:
        if not isinstance(payload, dict):
            return cls(None, (), ())
        parts = [payload.get("status")]
        errors = payload.get("errors")
        if isinstance(errors, list):
            parts += errors[:10]
        codes: list[int] = []
        descriptions: list[str] = []
        for part in parts:
            if not isinstance(part, dict):
                continue
            if (code := _integer(part.get("code"))) is not None:
                codes.append(code)
            description = part.get("description")
            if isinstance(description, str) and description.strip() and description.strip() not in descriptions:
                descriptions.append(description.strip())
        reference_id = payload.get("reference_id")
        reference_id = reference_id.strip() if isinstance(reference_id, str) else ""
        return cls(
            reference_id if 0 < len(reference_id) <= MAX_REFERENCE_ID_CHARS else None, tuple(codes), tuple(descriptions)
        )


def send_result(answer: Answer) -> SendResult:
    """The answer of `POST /v1/omnichannel` -> SendResult."""
    reply = Reply.read(answer.json())
    success = 200 <= answer.status < 300
    if success and reply.codes[:1] == (ACCEPTED,) and reply.reference_id is not None:
        return SendResult(
            SendOutcome.SENT, provider_message_id=reply.reference_id, status=ACCEPTED_STATUS, http_status=answer.status
        )
    message = _bounded("; ".join(reply.descriptions) or answer.snippet())
    codes = [code for code in reply.codes if code != ACCEPTED]
    known = next((code for code in codes if kind_of(code) is not None), None)
    kind = kind_of(known if known is not None else answer.status)
    if known is not None:
        error_code = str(known)
    elif codes:
        error_code = str(codes[0])
    else:
        error_code = NO_REFERENCE_ID if success else str(answer.status)
    # Without a kind: a 2xx that is not an acceptance, any other 5xx, a code we do not know in a 2xx or 5xx.
    outcome = OUTCOMES[kind] if kind is not None else SendOutcome.UNKNOWN
    return SendResult(
        outcome,
        error_code=error_code,
        error_message=message,
        http_status=answer.status,
        retry_after=answer.retry_after,
        throttled=kind is Kind.RATE_LIMITED,
    )


def _integer(value: Any) -> int | None:
    """A code as TeleSign writes it (a JSON number, or a string of one), None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(10**6) < value < 10**6 else None
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit() and len(digits) <= 6:
            return int(text)
    return None


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_MESSAGE_CHARS else text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
