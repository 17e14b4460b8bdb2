"""What TeleSign's callback fields may hold, beyond the shared JSON field reading (`providers.json_fields`)."""

from __future__ import annotations

from sms_gateway.providers.json_fields import Fields

MAX_ID_CHARS = 64  # TeleSign's reference ids are 32 hex digits
MAX_CODE = 99_999  # TeleSign's status codes have at most five digits


def read_reference_id(fields: Fields, name: str = "reference_id") -> str:
    return fields.identifier(name, max_chars=MAX_ID_CHARS)


def status_code(fields: Fields, name: str = "code") -> int:
    """A TeleSign status code (a JSON number; a string of digits is taken too)."""
    return fields.whole_number(name, maximum=MAX_CODE, what="a TeleSign status code")
