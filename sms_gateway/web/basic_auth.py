"""HTTP Basic credentials as a caller presents them, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from aiohttp import web

from sms_gateway.config.model import Credentials


@dataclass(frozen=True, slots=True)
class Caller:
    username: str | None
    password: str | None
    presented: bool  # an Authorization header was sent
    basic: bool  # ... and it was of the Basic scheme

    def matches(self, creds: Credentials) -> bool:
        """True when these are the credentials presented (whether none are needed is the caller's decision)."""
        if self.username is None or self.password is None:
            return False
        ok_user = hmac.compare_digest(self.username.encode(), creds.username.encode())
        ok_password = hmac.compare_digest(self.password.encode(), creds.password.encode())
        return ok_user and ok_password


def caller(request: web.Request) -> Caller:
    header = request.headers.get("Authorization")
    if header is None:
        return Caller(None, None, presented=False, basic=False)
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return Caller(None, None, presented=True, basic=False)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return Caller(None, None, presented=True, basic=True)
    username, sep, password = decoded.partition(":")
    if not sep:
        return Caller(None, None, presented=True, basic=True)
    return Caller(username, password, presented=True, basic=True)
