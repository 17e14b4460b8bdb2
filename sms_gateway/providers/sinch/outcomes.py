"""What Sinch's answers mean for a message: the error codes of the Sinch sender and their outcomes, in one place.

An attempt that fails records an error code: the HTTP status of `messages:send` ("400", "503"), a transport code
from `http_client` ("timeout", "invalidURL"), or one of the codes below. `messages:send` answers 200 when it
has accepted a message; whether it is valid and delivered comes later, in delivery reports.
"""

from __future__ import annotations

from typing import Any

from sms_gateway.http_client import TRANSPORT_NOT_SENT, Answer, TransportError
from sms_gateway.model import SendOutcome, SendResult

# Codes of our own. Each but NO_MESSAGE_ID means the message request was never made.
AUTH_FAILED = "authFailed"  # the token endpoint refused the access key (400/401/403): fix the settings
AUTH_UNAVAILABLE = "authUnavailable"  # no token for now (429, 5xx, no or an unreadable answer): try later
TOO_MANY_MEDIA = "tooManyMedia"  # a Sinch message carries one media; the outbox splits replies to fit
EMPTY_MESSAGE = "emptyMessage"  # neither text nor media
NO_MESSAGE_ID = "noMessageId"  # a 200 without a message_id: Sinch may well have the message

_NOT_SENT = frozenset({AUTH_FAILED, AUTH_UNAVAILABLE, TOO_MANY_MEDIA, EMPTY_MESSAGE}) | TRANSPORT_NOT_SENT

# HTTP statuses of messages:send (Sinch: 400 malformed, 401 bad credentials, 403 no access or billing limit,
# 404 not found or wrong region, 429 rate limit, 5xx retry with backoff). These two say the request was not
# processed, so sending later is safe; any other 4xx (or 3xx: a redirect is not followed) would fail again, and
# after a 5xx Sinch may have the message.
NOT_PROCESSED = frozenset({408, 429})
RATE_LIMITED = 429  # the project's request rate or the app's queue: the sender is to slow down

MAX_ERROR_MESSAGE_CHARS = 1000


def may_have_sent(error_code: str) -> bool:
    """Whether an attempt that failed with `error_code` may have created the message at Sinch: not after our own
    refusals, a token failure or a 3xx/4xx answer; possibly after a 5xx, a timeout, a lost connection or an
    error code we do not know."""
    if error_code in _NOT_SENT:
        return False
    if error_code.isdigit() and len(error_code) == 3:
        return int(error_code) >= 500
    return True


def refused(error_code: str, message: str) -> SendResult:
    """A message the sender will not send as it is."""
    return SendResult(SendOutcome.FAILED, error_code=error_code, error_message=message)


def send_result(answer: Answer) -> SendResult:
    """The answer of `messages:send` (after at most one token refresh) -> SendResult."""
    payload = answer.json()
    if 200 <= answer.status < 300:
        message_id = payload.get("message_id") if isinstance(payload, dict) else None
        if isinstance(message_id, str) and message_id.strip():
            return SendResult(
                SendOutcome.SENT, provider_message_id=message_id.strip(), status="queued", http_status=answer.status
            )
        return SendResult(
            SendOutcome.UNKNOWN,
            error_code=NO_MESSAGE_ID,
            http_status=answer.status,
            error_message=f"Sinch accepted the message without its id: {answer.snippet()}",
        )
    if answer.status in NOT_PROCESSED:
        outcome = SendOutcome.RETRY
    elif answer.status >= 500:
        outcome = SendOutcome.UNKNOWN
    else:  # 400, 401 (a second time), 403, 404 and any other refusal
        outcome = SendOutcome.FAILED
    return SendResult(
        outcome,
        error_code=str(answer.status),
        error_message=error_message(answer),
        http_status=answer.status,
        retry_after=answer.retry_after,
        throttled=answer.status == RATE_LIMITED,
    )


def token_refused(answer: Answer) -> SendResult:
    """A token endpoint's answer that is not a token -> the result of the send that needed it: the key refused
    (400/401/403, or another refusal such as a 404 for a wrong auth URL) or no token for now (408, 429, 5xx)."""
    if answer.status not in NOT_PROCESSED and answer.status < 500:
        payload = answer.json()
        description = _string(payload, "error_description") or _string(payload, "error") or answer.snippet()
        return SendResult(
            SendOutcome.FAILED,
            error_code=AUTH_FAILED,
            http_status=answer.status,
            error_message=_bounded(f"Sinch refused the access key: {description}"),
        )
    return SendResult(
        SendOutcome.RETRY,
        error_code=AUTH_UNAVAILABLE,
        http_status=answer.status,
        error_message=_bounded(f"no access token from Sinch: {answer.snippet()}"),
        retry_after=answer.retry_after,
    )


def token_unreachable(exc: TransportError) -> SendResult:
    """No answer from the token endpoint: the message request was never made, so this is no UNKNOWN."""
    if exc.code in TRANSPORT_NOT_SENT:  # a token URL that is not one: a setting to fix, not to wait out
        return SendResult(SendOutcome.FAILED, error_code=AUTH_FAILED, error_message=exc.message)
    return SendResult(
        SendOutcome.RETRY,
        error_code=AUTH_UNAVAILABLE,
        error_message=_bounded(f"no access token from Sinch: {exc.message}"),
    )


def token_unreadable() -> SendResult:
    """A 200 from the token endpoint without a usable access_token (its body is not quoted: it may hold one)."""
    return SendResult(
        SendOutcome.RETRY,
        error_code=AUTH_UNAVAILABLE,
        http_status=200,
        error_message="the answer of Sinch's token endpoint has no usable access_token",
    )


def error_message(answer: Answer) -> str:
    """Sinch's `error.message` and `error.status` (`{"error": {"code", "message", "status", "details"}}`), else
    the start of the body."""
    payload = answer.json()
    error = payload.get("error") if isinstance(payload, dict) else None
    message, status = _string(error, "message"), _string(error, "status")
    if message and status:
        return _bounded(f"{message} ({status})")
    return _bounded(message or status or answer.snippet())


def _string(payload: Any, key: str) -> str | None:
    value = payload.get(key) if isinstance(payload, dict) else None
    return (value.strip() or None) if isinstance(value, str) else None


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_MESSAGE_CHARS else text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
