"""TeleSign's two uses of the API key: the Authorization of our requests (Basic, or Digest "TSA" signed with
HMAC-SHA256), and the signature of its callbacks.

Both HMACs are keyed with the API key base64-decoded the way TeleSign's SDK decodes it (`base64.b64decode`
without validation): characters outside the base64 alphabet, such as the dashes of TeleSign's example key, are
skipped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping

from sms_gateway.http_client import basic_authorization
from sms_gateway.providers.base import WebhookRefused

HMAC_SHA256 = "HMAC-SHA256"
# TeleSign signs each callback in both; Authorization first, as TeleSign's docs name it.
CALLBACK_SIGNATURE_HEADERS = ("Authorization", "X-TS-Authorization")
TSA_SCHEME = "TSA"
# A base64 HMAC-SHA256 is 44 characters; anything far longer is not TeleSign's.
_MAX_SIGNATURE_CHARS = 256
_MAX_CUSTOMER_ID_CHARS = 128
_TSA = re.compile(r"TSA[ \t]+([^:\s]*):(\S*)", re.IGNORECASE)


def decode_api_key(api_key: str) -> bytes:
    """The HMAC key: the API key base64-decoded as TeleSign's SDK does; ValueError when it is not base64."""
    try:
        key = base64.b64decode(api_key)
    except ValueError as exc:  # binascii.Error (bad padding) and non-ASCII text are both ValueErrors
        raise ValueError("apiKey is not base64") from exc
    if not key:
        raise ValueError("apiKey is empty")
    return key


def new_nonce() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------------------ our requests


def basic_headers(customer_id: str, api_key: str) -> dict[str, str]:
    """`Authorization: Basic base64(customer_id:api_key)`: the API key as TeleSign issued it, not decoded."""
    return {"Authorization": basic_authorization(customer_id, api_key)}


def digest_headers(
    customer_id: str, api_key: str, method: str, resource: str, body: str, *, content_type: str, date: str, nonce: str
) -> dict[str, str]:
    """The headers TeleSign's SDK (`RestClient.generate_telesign_headers`) sends for a Digest-signed request:
    `resource` is the path alone ("/v1/omnichannel"), `body` the exact text sent, `date` RFC 822 in GMT.
    ValueError when the API key is not base64."""
    lines = [method, content_type, date, f"x-ts-auth-method:{HMAC_SHA256}", f"x-ts-nonce:{nonce}"]
    if content_type and body:  # as the SDK: a request without a body (a GET) signs no body line
        lines.append(body)
    lines.append(resource)
    signature = _sign(decode_api_key(api_key), "\n".join(lines).encode("utf-8"))
    return {
        "Authorization": f"{TSA_SCHEME} {customer_id}:{signature}",
        "Date": date,
        "Content-Type": content_type,
        "x-ts-auth-method": HMAC_SHA256,
        "x-ts-nonce": nonce,
    }


# ------------------------------------------------------------------------------ callbacks


def callback_signature(api_key: str, body: bytes) -> str:
    """The signature TeleSign sends with a callback: base64 HMAC-SHA256 of the raw body alone (ValueError when
    the API key is not base64)."""
    return _sign(decode_api_key(api_key), body)


def callback_headers(customer_id: str, api_key: str, body: bytes) -> dict[str, str]:
    """The headers of a callback signed as TeleSign signs it (for the sandbox)."""
    authorization = f"{TSA_SCHEME} {customer_id}:{callback_signature(api_key, body)}"
    return {name: authorization for name in CALLBACK_SIGNATURE_HEADERS}


def verify_callback(headers: Mapping[str, str], body: bytes, customer_id: str, api_key: str) -> None:
    """Check a callback's signature (WebhookRefused when it is missing or wrong). The header holds the bare
    signature or `TSA {customerId}:{signature}`, whose customer id must then be the tenant's. `headers` must be
    case-insensitive. The signature covers the body only: TeleSign sends no nonce or timestamp with it."""
    if not api_key:
        raise WebhookRefused("no apiKey is configured for this TeleSign tenant, so its callbacks cannot be checked")
    try:
        expected = callback_signature(api_key, body).encode("ascii")
    except ValueError as exc:
        raise WebhookRefused(f"the tenant's TeleSign {exc}, so its callbacks cannot be checked") from exc
    values = [value.strip() for name in CALLBACK_SIGNATURE_HEADERS if (value := headers.get(name, "")).strip()]
    if not values:
        raise WebhookRefused("the Authorization header (TeleSign's signature) is missing")
    problems = [_problem(value, expected, customer_id) for value in values]
    if None in problems:
        return
    raise WebhookRefused(next(problem for problem in problems if problem))


def _problem(value: str, expected: bytes, customer_id: str) -> str | None:
    """What is wrong with one header's signature, None when it is good."""
    signature = value
    tsa = _TSA.fullmatch(value)
    if tsa is not None:
        claimed, signature = tsa.groups()
        if len(claimed) > _MAX_CUSTOMER_ID_CHARS or claimed.lower() != customer_id.strip().lower():
            return "the signature is not for this tenant's TeleSign customer id"
    elif " " in value:
        return "the Authorization header is not a TeleSign signature"
    if len(signature) > _MAX_SIGNATURE_CHARS:
        return "invalid signature"
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
        return "invalid signature"
    return None


def _sign(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")
