"""OAuth2 access tokens for Sinch's API (the client-credentials grant), cached per access key and refreshed
before they expire, one refresh at a time."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from sms_gateway.http_client import TransportError, basic_authorization
from sms_gateway.model import SendResult
from sms_gateway.providers.sinch import outcomes
from sms_gateway.providers.sinch.settings import SinchConfig
from sms_gateway.providers.transport import ProviderTransport

log = structlog.get_logger("sms_gateway.providers.sinch")

GRANT = b"grant_type=client_credentials"
DEFAULT_LIFETIME = 3600.0  # Sinch's tokens last an hour; assumed when an answer does not say
MIN_REFRESH_AHEAD = 60.0  # refresh when this much of a token's life is left, or REFRESH_AHEAD_FRACTION if more
REFRESH_AHEAD_FRACTION = 0.1
# An old token is still used when its refresh fails only if it has this long left to reach Sinch.
EXPIRY_MARGIN = 5.0
_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")  # what can go in an Authorization header


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """An access key and where to trade it for tokens; tenants with the same ones share their tokens."""

    auth_url: str
    key_id: str
    key_secret: str = field(repr=False)

    @classmethod
    def of(cls, settings: SinchConfig) -> ClientCredentials:
        return cls(settings.auth_url, settings.key_id, settings.key_secret)


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: float  # on the cache's clock
    refresh_at: float

    @classmethod
    def issued(cls, value: str, lifetime: float, now: float) -> AccessToken:
        # A short-lived token is refreshed half-way through rather than at once.
        ahead = min(max(MIN_REFRESH_AHEAD, lifetime * REFRESH_AHEAD_FRACTION), lifetime / 2)
        return cls(value, expires_at=now + lifetime, refresh_at=now + lifetime - ahead)


class TokenUnavailable(Exception):
    """No token: the request that needed one was not made; `result` is what that means for a send."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error_message or result.error_code)
        self.result = result


class TokenCache:
    """The token of one access key. Callers that find it due for a refresh while one is under way wait for that
    one and share its outcome rather than start their own."""

    def __init__(self, credentials: ClientCredentials, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._credentials = credentials
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self._refreshes = 0  # refreshes that ended, with a token or without
        self._failure: SendResult | None = None  # why the last refresh got no token, if it did not

    def __repr__(self) -> str:
        return f"TokenCache(auth_url={self._credentials.auth_url!r}, key_id={self._credentials.key_id!r})"

    async def token(self, transport: ProviderTransport) -> str:
        """A token good for a while yet (TokenUnavailable when none can be had); `transport` carries a refresh."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        refreshes_seen = self._refreshes
        async with self._lock:
            if self._refreshes != refreshes_seen:  # a refresh ended while we waited: its outcome is ours
                if self._failure is not None:
                    return self._old_token_or_raise(self._failure)
                if self._token is not None:
                    return self._token.value
            return await self._refresh(transport)

    def discard(self, value: str) -> None:
        """Forget `value` (Sinch refused it), unless it has been replaced already."""
        if self._token is not None and self._token.value == value:
            self._token = None

    async def _refresh(self, transport: ProviderTransport) -> str:
        try:
            fresh = await self._fetch(transport)
        except TokenUnavailable as exc:
            self._refreshes += 1
            self._failure = exc.result
            return self._old_token_or_raise(exc.result)
        self._refreshes += 1
        self._failure = None
        self._token = fresh
        return fresh.value

    def _old_token_or_raise(self, failure: SendResult) -> str:
        """After a failed refresh, the token being replaced while it has some life left."""
        token = self._token
        if token is not None and self._clock() < token.expires_at - EXPIRY_MARGIN:
            log.warning(
                "sinch.token.refresh_failed",
                key_id=self._credentials.key_id,
                error_code=failure.error_code,
                http_status=failure.http_status,
                using="the current token",
            )
            return token.value
        raise TokenUnavailable(failure)

    async def _fetch(self, transport: ProviderTransport) -> AccessToken:
        credentials = self._credentials
        headers = {
            "Authorization": basic_authorization(credentials.key_id, credentials.key_secret),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        try:
            answer = await transport.call(
                "POST", credentials.auth_url, headers=headers, data=GRANT, what="Sinch's token endpoint"
            )
        except TransportError as exc:
            raise TokenUnavailable(outcomes.token_unreachable(exc)) from exc
        if answer.status != 200:
            result = outcomes.token_refused(answer)
            log.warning(
                "sinch.token.failed", key_id=credentials.key_id, http_status=answer.status, error_code=result.error_code
            )
            raise TokenUnavailable(result)
        payload = answer.json()
        value = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            raise TokenUnavailable(outcomes.token_unreadable())
        lifetime = payload.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not 0 < lifetime < 10**7:
            lifetime = DEFAULT_LIFETIME
        log.info("sinch.token.issued", key_id=credentials.key_id, expires_in=lifetime)
        return AccessToken.issued(value, float(lifetime), self._clock())
