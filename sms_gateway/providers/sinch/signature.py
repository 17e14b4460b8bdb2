"""Sinch's webhook signatures: `x-sinch-webhook-signature` is the standard base64 (padding kept) of an HMAC over
`raw body + "." + nonce + "." + timestamp`, keyed with the webhook secret's UTF-8 bytes (not base64-decoded)."""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sms_gateway.providers.base import WebhookRefused

SIGNATURE_HEADER = "x-sinch-webhook-signature"
NONCE_HEADER = "x-sinch-webhook-signature-nonce"
TIMESTAMP_HEADER = "x-sinch-webhook-signature-timestamp"
ALGORITHM_HEADER = "x-sinch-webhook-signature-algorithm"

DEFAULT_ALGORITHM = "HmacSHA256"
# Sinch signs with HmacSHA256 today; some of its SDKs also accept these two.
# Header value, compared case-insensitively -> hashlib's name of the digest.
ALGORITHMS: Mapping[str, str] = {"hmacsha256": "sha256", "hmacsha384": "sha384", "hmacsha512": "sha512"}

# How far a signature's timestamp may be from our clock, either way.
MAX_SKEW_SECONDS = 300
# A nonce is remembered a little longer than its signature is accepted, for clock steps while it is.
REPLAY_MARGIN_SECONDS = 60
# Sinch's nonces are ULIDs (26 characters); anything far longer is not Sinch's.
_NONCE = re.compile(r"[\x21-\x7e]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MAX_SIGNATURE_CHARS = 256


@dataclass(frozen=True, slots=True)
class SignedNonce:
    """The nonce and timestamp of a webhook whose signature is good."""

    nonce: str
    timestamp: int

    @property
    def remember_until(self) -> float:
        """Until when a second request with this nonce must be refused: as long as its signature is accepted."""
        return float(self.timestamp + MAX_SKEW_SECONDS + REPLAY_MARGIN_SECONDS)


def sign(secret: str, body: bytes, nonce: str, timestamp: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
    """The signature Sinch sends for `body` (KeyError for an algorithm not in ALGORITHMS)."""
    digest = ALGORITHMS[algorithm.lower()]
    signed = body + b"." + nonce.encode("utf-8") + b"." + timestamp.encode("utf-8")
    return base64.b64encode(hmac.new(secret.encode("utf-8"), signed, digest).digest()).decode("ascii")


def signature_headers(
    secret: str, body: bytes, nonce: str, timestamp: int, algorithm: str = DEFAULT_ALGORITHM
) -> dict[str, str]:
    """The headers of a webhook signed as Sinch signs it (for the sandbox)."""
    return {
        SIGNATURE_HEADER: sign(secret, body, nonce, str(timestamp), algorithm),
        NONCE_HEADER: nonce,
        TIMESTAMP_HEADER: str(timestamp),
        ALGORITHM_HEADER: algorithm,
    }


def verify(headers: Mapping[str, str], body: bytes, secret: str, received_at: float) -> SignedNonce:
    """Check the signature of a webhook received at `received_at` (epoch seconds); WebhookRefused when it is
    missing, wrong, made with an unknown algorithm or too far from our clock. `headers` must be case-insensitive.
    """
    if not secret:
        raise WebhookRefused("no webhookSecret is configured for this Sinch app, so its callbacks cannot be checked")
    signature = _header(headers, SIGNATURE_HEADER)
    nonce = _header(headers, NONCE_HEADER)
    timestamp = _header(headers, TIMESTAMP_HEADER)
    algorithm = headers.get(ALGORITHM_HEADER, "").strip() or DEFAULT_ALGORITHM
    if algorithm.lower() not in ALGORITHMS:
        raise WebhookRefused(f"unknown {ALGORITHM_HEADER}: {algorithm[:32]!r}")
    if not _NONCE.fullmatch(nonce):
        raise WebhookRefused(f"{NONCE_HEADER} is not 1 to 128 printable ASCII characters")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise WebhookRefused(f"{TIMESTAMP_HEADER} is not a time in whole seconds")
    if abs(int(timestamp) - received_at) > MAX_SKEW_SECONDS:
        raise WebhookRefused(f"{TIMESTAMP_HEADER} is more than {MAX_SKEW_SECONDS} s from our clock")
    if len(signature) > _MAX_SIGNATURE_CHARS:
        raise WebhookRefused(f"invalid {SIGNATURE_HEADER}")
    expected = sign(secret, body, nonce, timestamp, algorithm)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "surrogateescape")):
        raise WebhookRefused(f"invalid {SIGNATURE_HEADER}")
    return SignedNonce(nonce, int(timestamp))


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise WebhookRefused(f"{name} is missing")
    return value
