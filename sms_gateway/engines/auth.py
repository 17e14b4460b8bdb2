"""Authorization headers for engine requests: none, HTTP Basic, a static bearer token or an IBM IAM key."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

from sms_gateway.config.model import IAM_DEFAULT_TOKEN_URL, EngineConfig, ProxyConfig
from sms_gateway.engines.base import EngineError

IAM_TOKEN_PATH = "/identity/token"


class Authorizer(Protocol):
    async def headers(self) -> dict[str, str]: ...


class NoAuthorizer:
    async def headers(self) -> dict[str, str]:
        return {}


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class BasicAuthorizer:
    def __init__(self, username: str, password: str) -> None:
        self._headers = {"Authorization": basic_authorization(username, password)}

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)


class BearerAuthorizer:
    def __init__(self, token: str) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}

    async def headers(self) -> dict[str, str]:
        return dict(self._headers)


class IamAuthorizer:
    """IBM Cloud IAM API key -> `Authorization: Bearer <access token>`.

    The SDK's `IAMAuthenticator` fetches and refreshes the token (at ~80% of its life) with a blocking
    `requests` call, so it only ever runs in a worker thread. Its header is cached here until the SDK's own
    refresh time, so most turns cost no thread hop; the lock makes concurrent turns share one fetch.
    """

    def __init__(
        self,
        apikey: str,
        token_url: str = IAM_DEFAULT_TOKEN_URL,
        *,
        proxy: ProxyConfig | None = None,
        timeout: tuple[float, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`timeout` is (connect, read) seconds for the token request (the SDK's default is 60 s); their sum bounds
        the whole fetch, as `requests` applies the read timeout to each wait for bytes only."""
        # Imported here: the SDK (and `requests` with it) adds ~6 MiB to every gateway that has no IAM key.
        from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

        base = token_url.rstrip("/")
        if base.endswith(IAM_TOKEN_PATH):
            base = base[: -len(IAM_TOKEN_PATH)]
        self.authenticator = IAMAuthenticator(apikey, url=base, proxies=_requests_proxies(proxy))
        if timeout is not None:
            self.authenticator.token_manager.http_config = {"timeout": timeout}
        self._deadline_s = sum(timeout) if timeout is not None else None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._header: str | None = None
        self._valid_until = 0.0

    async def headers(self) -> dict[str, str]:
        if self._header is None or self._clock() >= self._valid_until:
            async with self._lock:
                if self._header is None or self._clock() >= self._valid_until:
                    await self._fetch()
        assert self._header is not None
        return {"Authorization": self._header}

    async def _fetch(self) -> None:
        request: dict[str, Any] = {"headers": {}}
        try:
            # On the deadline the turn goes on (the worker thread finishes the request in the background).
            async with asyncio.timeout(self._deadline_s):
                await asyncio.to_thread(self.authenticator.authenticate, request)
        except TimeoutError as exc:
            raise EngineError("IAM token request failed: no answer in time", retryable=True) from exc
        except Exception as exc:  # requests errors or ibm_cloud_sdk_core.ApiException
            status = getattr(exc, "status_code", None)
            retryable = not isinstance(status, int) or status == 429 or status >= 500
            raise EngineError(f"IAM token request failed: {exc}", status=status, retryable=retryable) from exc
        self._header = str(request["headers"]["Authorization"])
        manager = self.authenticator.token_manager
        self._valid_until = float(min(manager.refresh_time or 0, manager.expire_time or 0))


def create_authorizer(config: EngineConfig) -> Authorizer:
    """IBM's convention username "apikey" + password <key> means IAM, whatever auth kind was declared."""
    if config.auth == "iam" or (config.auth == "basic" and config.username == "apikey" and config.password):
        apikey = config.apikey or (config.password if config.username == "apikey" else None)
        if not apikey:
            raise ValueError("engine auth 'iam' needs an apikey")
        timeout = (config.connect_timeout_ms / 1000, config.read_timeout_ms / 1000)
        return IamAuthorizer(apikey, config.token_url, proxy=config.proxy, timeout=timeout)
    if config.auth == "basic":
        if config.username is None or config.password is None:
            raise ValueError("engine auth 'basic' needs a username and a password")
        return BasicAuthorizer(config.username, config.password)
    if config.auth == "bearer":
        if not config.bearer_token:
            raise ValueError("engine auth 'bearer' needs a bearer token")
        return BearerAuthorizer(config.bearer_token)
    return NoAuthorizer()


def _requests_proxies(proxy: ProxyConfig | None) -> dict[str, str] | None:
    if proxy is None:
        return None
    url = proxy.url
    if proxy.username:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "http", url
        # urllib3 reads proxy credentials from the URL, so they must be percent-encoded there.
        creds = quote(proxy.username, safe="") + ":" + quote(proxy.password or "", safe="")
        url = f"{scheme}://{creds}@{rest}"
    return {"http": url, "https": url}
