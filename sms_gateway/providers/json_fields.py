"""Reading a provider's JSON webhook: the body as a JSON object, and each field checked for its type and size and
named in full (`message.contact_message.media_message.url`, `channel_status[1].sms.code`) when it is wrong."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sms_gateway.media import is_http_url
from sms_gateway.model import JSON
from sms_gateway.providers.base import InvalidRequest, WebhookRequest

JSON_CONTENT_TYPE = "application/json"
MAX_URL_CHARS = 4096
_PHONE_DIGITS = re.compile(r"[0-9]{6,15}")


def decode_json_object(hook: WebhookRequest) -> JSON:
    """The body as a JSON object; InvalidRequest when it is not one."""
    media_type = hook.content_type.split(";", 1)[0].strip().lower()
    if media_type != JSON_CONTENT_TYPE:
        raise InvalidRequest(f"expected a body of type {JSON_CONTENT_TYPE}, got {hook.content_type[:64]!r}")
    try:
        payload = json.loads(hook.body)
    except (ValueError, RecursionError) as exc:  # ValueError includes bytes that are not UTF-8
        raise InvalidRequest("the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the body is not a JSON object")
    return payload


def blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None


@dataclass(frozen=True, slots=True)
class Fields:
    """One JSON object of a webhook, and its path from the top for error messages ("" for the top)."""

    data: Mapping[str, Any]
    path: str = ""

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def object(self, name: str) -> Fields | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidRequest(f"{self.where(name)} must be an object")
        return Fields(value, self.where(name))

    def required_object(self, name: str) -> Fields:
        value = self.object(name)
        if value is None:
            raise InvalidRequest(f"{self.where(name)} is missing")
        return value

    def objects(self, name: str, *, max_items: int) -> list[Fields]:
        """A list of objects, empty when absent or null."""
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidRequest(f"{self.where(name)} must be a list")
        if len(value) > max_items:
            raise InvalidRequest(f"{self.where(name)} has more than {max_items} items")
        items: list[Fields] = []
        for index, item in enumerate(value):
            where = f"{self.where(name)}[{index}]"
            if not isinstance(item, dict):
                raise InvalidRequest(f"{where} must be an object")
            items.append(Fields(item, where))
        return items

    def text(self, name: str, *, max_chars: int) -> str | None:
        """A string field, None when absent or null."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidRequest(f"{self.where(name)} must be a string")
        if len(value) > max_chars:
            raise InvalidRequest(f"{self.where(name)} is longer than {max_chars} characters")
        return value

    def required_text(self, name: str, *, max_chars: int) -> str:
        """A string field that must be there and not blank."""
        value = self.text(name, max_chars=max_chars)
        if value is None or not value.strip():
            raise InvalidRequest(f"{self.where(name)} is missing")
        return value

    def identifier(self, name: str, *, max_chars: int) -> str:
        """A provider's id: a non-blank string of at most `max_chars`."""
        return self.required_text(name, max_chars=max_chars).strip()

    def whole_number(self, name: str, *, maximum: int, what: str) -> int:
        """A whole number from 0 to `maximum` (as a JSON number, or a string of digits); `what` names it in the
        error."""
        value = self.data.get(name)
        if value is None:
            raise InvalidRequest(f"{self.where(name)} is missing")
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and int(value) <= maximum:
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
            raise InvalidRequest(f"{self.where(name)} is not {what} (a whole number from 0 to {maximum})")
        return value

    def phone_number(self, name: str) -> str | None:
        """A phone number as E.164 ("+" and 6 to 15 digits), None when absent or null; providers write them with
        the country code, with or without the "+"."""
        value = self.text(name, max_chars=32)
        if value is None:
            return None
        value = value.strip()
        digits = value[1:] if value.startswith("+") else value
        if not _PHONE_DIGITS.fullmatch(digits):
            raise InvalidRequest(f"{self.where(name)} is not a phone number (6 to 15 digits)")
        return "+" + digits

    def required_phone_number(self, name: str) -> str:
        number = self.phone_number(name)
        if number is None:
            raise InvalidRequest(f"{self.where(name)} is missing")
        return number

    def http_url(self, name: str) -> str:
        value = self.required_text(name, max_chars=MAX_URL_CHARS).strip()
        if not is_http_url(value):
            raise InvalidRequest(f"{self.where(name)} is not an absolute http(s) URL")
        return value
