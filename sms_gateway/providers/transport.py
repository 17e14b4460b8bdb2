"""How a tenant's requests reach its provider: the tenant's timeouts and proxy, on the application's HTTP session."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from sms_gateway.config.model import ProviderConfig
from sms_gateway.http_client import Answer, basic_authorization, call


def proxy_authorization(url: str, authorization: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers of the request itself, headers of the proxy's CONNECT) that carry a proxy's credentials: aiohttp
    sends `proxy_headers` only on the CONNECT of an https tunnel, and a plain-http request goes to the proxy as
    is, so it must carry them itself."""
    header = {"Proxy-Authorization": authorization}
    return ({}, header) if url.lower().startswith("https:") else (header, {})


class ProviderTransport:
    def __init__(self, settings: ProviderConfig, http: aiohttp.ClientSession, what: str) -> None:
        """`what` names the provider in error messages."""
        self._http = http
        self._what = what
        connect = settings.connect_timeout_ms / 1000
        read = settings.read_timeout_ms / 1000
        self._timeout = aiohttp.ClientTimeout(total=connect + read, sock_connect=connect, sock_read=read)
        proxy = settings.proxy
        self._proxy = proxy.url if proxy else None
        self._proxy_authorization = (
            basic_authorization(proxy.username, proxy.password or "") if proxy and proxy.username else None
        )

    def __repr__(self) -> str:  # the proxy's password stays out of logs and tracebacks
        return f"ProviderTransport(proxy={self._proxy!r})"

    async def call(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        what: str | None = None,
    ) -> Answer:
        """One request (http_client.call: an Answer, or TransportError when there is none); `what` names the peer
        in error messages when it is not the provider's API."""
        proxy_headers = None
        if self._proxy_authorization is not None:
            extra, proxy_headers = proxy_authorization(url, self._proxy_authorization)
            headers = {**headers, **extra}
        return await call(
            self._http,
            method,
            url,
            client_timeout=self._timeout,
            headers=headers,
            data=data,
            params=params,
            proxy=self._proxy,
            proxy_headers=proxy_headers or None,
            what=what or self._what,
        )
