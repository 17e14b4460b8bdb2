"""Twilio's error codes: which failures may be retried, and which may have created the message anyway."""

from __future__ import annotations

from sms_gateway.model import SendOutcome
from sms_gateway.providers.base import TRANSPORT_NOT_SENT

# Throttling codes: the request was not processed, so sending again later is safe.
RETRYABLE_CODES = frozenset(
    {
        20429,  # too many requests (REST API concurrency)
        14107,  # message rate limit exceeded
        30001,  # queue overflow
        30022,  # US A2P 10DLC rate limit exceeded
    }
)
# Errors about the message itself: sending it again can only fail again.
NON_RETRYABLE_CODES = frozenset(
    {
        21211,  # invalid 'To' number
        21408,  # permission to send to this region not enabled
        21602,  # body or media required
        21606,  # 'From' not a valid message-capable number
        21608,  # unverified 'To' on a trial account
        21610,  # recipient unsubscribed (STOP)
        21612,  # 'To'/'From' combination cannot be used
        21614,  # 'To' is not a mobile number
        21617,  # body over 1,600 characters
        21620,  # invalid media URL
        21623,  # more than 10 media
        21635,  # 'To' is a landline
        21658,  # parameter over its character limit
        20003,  # authentication failed
    }
)
# Answers after which Twilio certainly did not create the message.
_NOT_CREATED = frozenset({"429", "20429", "14107"})
# Answers that say the sender is sending too fast (HTTP 429; REST API concurrency; message rate limit).
THROTTLED_CODES = frozenset({20429, 14107})


def throttled(http_status: int, code: int | None) -> bool:
    return http_status == 429 or code in THROTTLED_CODES


def twilio_code_is_retryable(code: int | None) -> bool:
    return code in RETRYABLE_CODES


def may_have_sent(error_code: str) -> bool:
    """Whether Twilio may have created the message of an attempt that failed with `error_code` (our record of
    it: Twilio's code, else the HTTP status, else a transport code). A 4xx answer or a 21xxx code means the
    request was refused; a 5xx, a timeout or a lost connection leave it open."""
    if error_code in _NOT_CREATED or error_code in TRANSPORT_NOT_SENT:
        return False
    if not error_code.isdigit():
        return True
    number = int(error_code)
    return not (400 <= number < 500 or error_code.startswith("21") or number in NON_RETRYABLE_CODES)


def outcome(http_status: int, code: int | None) -> SendOutcome:
    """What an HTTP error answer from the Messages API means for the message."""
    if code in NON_RETRYABLE_CODES:
        return SendOutcome.FAILED
    if not (http_status == 429 or http_status >= 500 or code in RETRYABLE_CODES):
        return SendOutcome.FAILED
    return SendOutcome.UNKNOWN if may_have_sent(str(code if code is not None else http_status)) else SendOutcome.RETRY
