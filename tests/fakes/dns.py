"""A DNS resolver for tests: the names a test chooses resolve to the addresses it chooses, never through the
machine's resolver. A test can move a name (`point`) to play a DNS-rebinding attacker."""

from __future__ import annotations

import socket
from collections.abc import Mapping

from aiohttp.abc import AbstractResolver, ResolveResult

# Globally routable, so the gateway treats it as a public host; the tests never connect to it.
PUBLIC_ADDRESS = "93.184.215.14"


class FakeResolver(AbstractResolver):
    """`names` (lower case, no trailing dot) to their addresses; any other name resolves to `default`, or does not
    resolve when `default` is None."""

    def __init__(self, names: Mapping[str, str | tuple[str, ...]] | None = None, *, default: str | None = None) -> None:
        self.names: dict[str, tuple[str, ...]] = {}
        for name, addresses in (names or {}).items():
            self.point(name, *((addresses,) if isinstance(addresses, str) else addresses))
        self.default = default
        self.lookups: list[str] = []

    def point(self, name: str, *addresses: str) -> None:
        self.names[name.lower().rstrip(".")] = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        self.lookups.append(name)
        addresses = self.names.get(name) or ((self.default,) if self.default is not None else ())
        results = []
        for address in addresses:
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in (socket.AF_UNSPEC, address_family):
                results.append(
                    ResolveResult(
                        hostname=host,
                        host=address,
                        port=port,
                        family=address_family,
                        proto=0,
                        flags=socket.AI_NUMERICHOST,
                    )
                )
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return results

    async def close(self) -> None:
        return None


def harness_resolver() -> FakeResolver:
    """What the end-to-end harness resolves with: every name is a public host, except `localhost`."""
    return FakeResolver({"localhost": ("127.0.0.1", "::1")}, default=PUBLIC_ADDRESS)
