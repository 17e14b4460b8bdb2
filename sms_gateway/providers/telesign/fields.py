"""Reading a TeleSign callback's JSON: each field checked for its type and size, and named in full
(`channel_status[1].sms.code`) when it is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sms_gateway.media import is_http_url
from sms_gateway.providers.base import InvalidRequest

MAX_ID_CHARS = 64  # TeleSign's reference ids are 32 hex digits
MAX_URL_CHARS = 4096
MAX_CODE = 99_999  # TeleSign's status codes have at most five digits
_PHONE_DIGITS = re.compile(r"[0-9]{6,15}")
_CODE = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Fields:
    """One JSON object of a callback, and its path from the top for error messages ("" for the top)."""

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

    def identifier(self, name: str) -> str:
        """A TeleSign id (reference_id): a non-blank string of at most MAX_ID_CHARS."""
        return self.required_text(name, max_chars=MAX_ID_CHARS).strip()

    def code(self, name: str) -> int:
        """A TeleSign status code: a whole number from 0 to MAX_CODE (TeleSign writes them as JSON numbers; a
        string of digits is taken too)."""
        value = self.data.get(name)
        if value is None:
            raise InvalidRequest(f"{self.where(name)} is missing")
        if isinstance(value, str) and _CODE.fullmatch(value.strip()):
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CODE:
            raise InvalidRequest(f"{self.where(name)} is not a TeleSign status code (a whole number from 0 to "
                                 f"{MAX_CODE})")
        return value

    def phone_number(self, name: str) -> str | None:
        """A phone number as E.164 ("+" and 6 to 15 digits), None when absent or null; TeleSign writes them with
        the country code and, mostly, without the "+"."""
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


def blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip() or None
