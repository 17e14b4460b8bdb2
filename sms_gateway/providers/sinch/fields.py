"""Reading a Sinch callback's JSON: each field checked for its type and size, and named in full
(`message.contact_message.media_message.url`) when it is wrong."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sms_gateway.media import is_http_url
from sms_gateway.providers.base import InvalidRequest

MAX_ID_CHARS = 128
MAX_URL_CHARS = 4096
_PHONE_DIGITS = re.compile(r"[0-9]{6,15}")
# Python's built-in table only, so a guess does not depend on the machine's /etc/mime.types.
_MIME_TYPES = mimetypes.MimeTypes(filenames=())


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
        """A Sinch id (message, app): a non-blank string of at most MAX_ID_CHARS."""
        return self.required_text(name, max_chars=MAX_ID_CHARS).strip()

    def phone_number(self, name: str) -> str:
        """A phone number as E.164 ("+" and 6 to 15 digits); Sinch gives inbound identities without the "+"."""
        value = self.required_text(name, max_chars=32).strip()
        digits = value[1:] if value.startswith("+") else value
        if not _PHONE_DIGITS.fullmatch(digits):
            raise InvalidRequest(f"{self.where(name)} is not a phone number (6 to 15 digits)")
        return "+" + digits

    def http_url(self, name: str) -> str:
        value = self.required_text(name, max_chars=MAX_URL_CHARS).strip()
        if not is_http_url(value):
            raise InvalidRequest(f"{self.where(name)} is not an absolute http(s) URL")
        return value


def guess_content_type(url: str, filename: str | None = None) -> str | None:
    """The media type of a file by its extension: the URL path's, else the file name's; None when unknown."""
    for name in (urlsplit(url).path, filename or ""):
        content_type, _ = _MIME_TYPES.guess_type(name, strict=False)
        if content_type:
            return content_type
    return None
