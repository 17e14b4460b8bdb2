"""Connections to URLs that callers choose (media the gateway sizes, pipe callbacks): only to the addresses a
policy allows, and only to addresses that were checked.

`address_kind` is the one place that says where an address leads (public, private, loopback, link-local, cloud
metadata, unusable); an IPv6 address that embeds an IPv4 one (mapped, compatible, translated, NAT64, 6to4, Teredo)
leads wherever the worse of the two leads. `GuardedHttp` is an aiohttp session whose resolver drops every address
the policy refuses, so the connector connects to exactly the addresses that were checked (no DNS-rebinding window
between a check and the connection), on every request and every redirect hop; the TLS server name and the `Host`
header stay the URL's. aiohttp connects to IP literals without asking a resolver: the session's middleware checks
those. Connections the operator configures (engines, providers) do not go through here.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

log = structlog.get_logger("sms_gateway.netguard")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressKind(enum.IntEnum):
    """Where an address leads, ordered from public to never usable."""

    PUBLIC = 0
    PRIVATE = 1  # a private network: RFC 1918, unique-local, shared (CGNAT) and the other non-global ranges
    LOOPBACK = 2  # this machine
    LINK_LOCAL = 3  # the local link only
    METADATA = 4  # a cloud's instance metadata or platform service
    UNUSABLE = 5  # unspecified, multicast, broadcast, reserved

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    AddressKind.PUBLIC: "a public",
    AddressKind.PRIVATE: "a private",
    AddressKind.LOOPBACK: "a loopback",
    AddressKind.LINK_LOCAL: "a link-local",
    AddressKind.METADATA: "a cloud metadata",
    AddressKind.UNUSABLE: "an unspecified, multicast or reserved",
}
# Never a destination, whatever the operator allows.
NEVER = frozenset({AddressKind.LINK_LOCAL, AddressKind.METADATA, AddressKind.UNUSABLE})

# Instance metadata and platform services; most are link-local anyway, the others look private or even public.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, Google Cloud, Azure, Oracle, DigitalOcean, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "fd20:ce::254",  # Google Cloud over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
        "192.0.0.192",  # Oracle Cloud (classic)
    )
)
# Names of metadata services: refused before any lookup, so a resolver that does not know them changes nothing.
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",  # Google Cloud
        "instance-data",
        "instance-data.ec2.internal",  # AWS
        "metadata.tencentyun.com",  # Tencent Cloud
        "metadata.platformequinix.com",  # Equinix Metal
    }
)
_IDEOGRAPHIC_DOTS = ("\u3002", "\uff0e", "\uff61")
# WHATWG URL parsing and inet_aton read a host whose last label is a number (decimal or 0x-hex) as an IPv4
# address: `2130706433` and `0x7f.1` both mean 127.0.0.1.
_NUMERIC_LABEL_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")

# IPv6 ranges that carry an IPv4 address in their last 32 bits (RFC 4291, RFC 2765, RFC 6052, RFC 8215).
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # the IPv4 address may sit after a /48, /56, /64 or /96
_NOT_ROUTED_EMBEDDINGS = (_IPV4_COMPATIBLE, _IPV4_TRANSLATED, _NAT64_LOCAL_USE)


def ip_literal(host: str) -> Address | None:
    """`host` as an IP address (IPv6 without brackets, a zone allowed), or None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def canonical_host(host: str) -> str:
    """A host as resolvers see it: fullwidth forms folded, ideographic dots as dots, lower case, no trailing dot."""
    host = unicodedata.normalize("NFKC", host).lower()
    for dot in _IDEOGRAPHIC_DOTS:
        host = host.replace(dot, ".")
    return host.rstrip(".")


def is_metadata_name(host: str) -> bool:
    return canonical_host(host) in _METADATA_NAMES


def is_nonstandard_ip(host: str) -> bool:
    """A host that some parser reads as an IPv4 address although it is not one in dotted-quad notation."""
    canonical = canonical_host(host)
    return ip_literal(canonical) is None and bool(_NUMERIC_LABEL_RE.fullmatch(canonical.rsplit(".", 1)[-1]))


def address_kind(address: Address) -> AddressKind:
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_kind(address)
    address = ipaddress.IPv6Address(int(address))  # the zone does not change where an address leads
    return max([_ipv6_kind(address), *(_ipv4_kind(embedded) for embedded in _embedded_ipv4(address))])


def is_public_address(address: Address) -> bool:
    """Globally routable: what a provider on the internet can fetch from, and what callers may make us reach."""
    return address_kind(address) is AddressKind.PUBLIC


def _ipv4_kind(address: ipaddress.IPv4Address) -> AddressKind:
    if address in _METADATA_ADDRESSES:
        return AddressKind.METADATA
    if address.is_multicast or address.is_reserved or address.packed[0] == 0:  # 0.0.0.0/8 means "this host"
        return AddressKind.UNUSABLE
    if address.is_loopback:
        return AddressKind.LOOPBACK
    if address.is_link_local:
        return AddressKind.LINK_LOCAL
    return AddressKind.PUBLIC if address.is_global else AddressKind.PRIVATE


def _ipv6_kind(address: ipaddress.IPv6Address) -> AddressKind:
    if address in _METADATA_ADDRESSES:
        return AddressKind.METADATA
    if address.is_unspecified or address.is_multicast:
        return AddressKind.UNUSABLE
    if address.is_loopback:
        return AddressKind.LOOPBACK
    if address.is_link_local:
        return AddressKind.LINK_LOCAL
    if address.is_site_local or any(address in network for network in _NOT_ROUTED_EMBEDDINGS):
        return AddressKind.PRIVATE  # Python calls these global; nothing routes them on the internet
    return AddressKind.PUBLIC if address.is_global else AddressKind.PRIVATE


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses `address` may reach (an IPv4 host through a translator or tunnel, or itself)."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return [address.teredo[1]]
    if address in _NAT64_LOCAL_USE:
        # RFC 6052: the 32 bits follow the prefix, skipping bits 64-71; here the prefix is /48, /56, /64 or /96.
        # Every layout is read; readings in 0.0.0.0/8 are another layout's padding (no translator goes there).
        packed = address.packed[:8] + address.packed[9:]
        readings = (ipaddress.IPv4Address(packed[start : start + 4]) for start in (6, 7, 8, 11))
        return [reading for reading in readings if reading.packed[0]]
    in_last_32_bits = (_IPV4_TRANSLATED, _NAT64_WELL_KNOWN)
    if any(address in network for network in in_last_32_bits) or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


# ------------------------------------------------------------------------------ policy


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Which addresses a connection to a caller's URL may reach: public ones always; link-local, cloud metadata and
    unusable ones never; loopback and private ones as the operator allows."""

    allow_private: bool = False
    allow_loopback: bool = False
    allowed_networks: tuple[Network, ...] = ()  # their loopback and private addresses are allowed
    allowed_names: frozenset[str] = frozenset()  # their loopback and private addresses are allowed
    hint: str = ""  # how the operator can allow a refused loopback or private address

    @classmethod
    def allowing(cls, hosts: Iterable[str], *, allow_private: bool = False, hint: str = "") -> DestinationPolicy:
        """A policy that allows `hosts` (names, addresses or CIDRs) besides public addresses."""
        networks: list[Network] = []
        names: set[str] = set()
        for entry in hosts:
            try:
                networks.append(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))
            except ValueError:
                names.add(canonical_host(entry.strip()))
        return cls(
            allow_private=allow_private, allowed_networks=tuple(networks), allowed_names=frozenset(names), hint=hint
        )

    def address_problem(self, host: str, address: Address) -> str | None:
        """Why `address`, which `host` (a name or the same address) stands for, must not be connected to."""
        kind = address_kind(address)
        if kind is AddressKind.PUBLIC:
            return None
        if kind not in NEVER:
            same_host = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            if canonical_host(host) in self.allowed_names or any(
                candidate in network
                for network in self.allowed_networks
                for candidate in (address, same_host)
                if candidate is not None
            ):
                return None
            if (kind is AddressKind.PRIVATE and self.allow_private) or (
                kind is AddressKind.LOOPBACK and self.allow_loopback
            ):
                return None
        where = "is" if ip_literal(host) is not None else "resolves to"
        advice = f" ({self.hint})" if self.hint and kind not in NEVER else ""
        return f"{where} {kind.label} address{advice}"

    def name_problem(self, host: str) -> str | None:
        """Why the name `host` is refused before any lookup, or None."""
        if is_metadata_name(host):
            return "is a cloud metadata service"
        if is_nonstandard_ip(host):
            return "is an IP address in a non-standard notation"
        return None


class DestinationRefused(aiohttp.ClientOSError):
    """A connection that the policy refused; as an OSError, the connector reports it as its DNS error."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(errno.EACCES, f"{host} {reason}")
        self.host = host
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.host} {self.reason}"


def refusal_in(exc: BaseException) -> DestinationRefused | None:
    """The policy refusal that `exc` (an aiohttp error) reports, or None for any other failure."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return seen
        if isinstance(seen, aiohttp.ClientConnectorError) and isinstance(seen.os_error, DestinationRefused):
            return seen.os_error
        seen = seen.__cause__
    return None


def url_host(url: str) -> str | None:
    """The host aiohttp connects to for `url` (IDNA-encoded, lower case), or None when it has none."""
    try:
        return URL(url).raw_host or None
    except (ValueError, TypeError):
        return None


def _connects_without_resolving(host: str) -> bool:
    # aiohttp's own test for "an IP address": such hosts never reach a resolver.
    return ":" in host or host.replace(".", "").isdigit()


class GuardedResolver(AbstractResolver):
    """Resolves with `resolver`, then keeps only the addresses `policy` allows; refuses when none is left."""

    def __init__(self, resolver: AbstractResolver, policy: DestinationPolicy, *, lookup_seconds: float = 5.0) -> None:
        self.resolver = resolver
        self.policy = policy
        self.lookup_seconds = lookup_seconds  # how long `refusal` waits for a name to resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        problem = self.policy.name_problem(host)
        if problem is not None:
            raise DestinationRefused(host, problem)
        results = await self.resolver.resolve(host, port, family)
        problems = self._problems(host, results)
        allowed = [result for result, problem in zip(results, problems, strict=True) if problem is None]
        if allowed:
            return allowed
        refused = [problem for problem in problems if problem is not None]
        if refused:
            raise DestinationRefused(host, refused[0])
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")

    async def close(self) -> None:
        return None  # the wrapped resolver belongs to whoever made it

    def literal_problem(self, host: str) -> str | None:
        """Why a host that aiohttp connects to without resolving (an IP literal) is refused, or None."""
        address = ip_literal(host)
        return (
            "is not an IP address in standard notation"
            if address is None
            else self.policy.address_problem(host, address)
        )

    async def refusal(self, host: str, *, every_address: bool = False) -> str | None:
        """Why `host` (as in a URL: a name or an IP literal) is refused now, or None; before any connection.

        A name that does not resolve (or not within `lookup_seconds`) is not refused: nothing connects to it from
        here, and a connection later resolves and checks it again. With `every_address`, a name is refused when any
        of its addresses is (for a third party that resolves it itself and may pick any, such as a provider
        fetching media); else when none is allowed (what a connection through this resolver does).
        """
        if _connects_without_resolving(host):
            return self.literal_problem(host)
        problem = self.policy.name_problem(host)
        if problem is not None:
            return problem
        try:
            async with asyncio.timeout(self.lookup_seconds):
                results = await self.resolver.resolve(host, 0, socket.AF_UNSPEC)
        except (OSError, TimeoutError) as exc:
            log.info("host_not_resolved", host=host, error=type(exc).__name__)
            return None
        problems = self._problems(host, results)
        refused = [problem for problem in problems if problem is not None]
        if refused and (every_address or len(refused) == len(problems)):
            return refused[0]
        return None

    def _problems(self, host: str, results: list[ResolveResult]) -> list[str | None]:
        """Per result, why it must not be connected to (None: it may)."""
        problems: list[str | None] = []
        for result in results:
            address = ip_literal(result["host"])
            problems.append(
                "resolves to something that is not an IP address"
                if address is None
                else self.policy.address_problem(host, address)
            )
        return problems


class GuardedHttp:
    """The HTTP session for URLs that callers choose. Use as an async context manager, or close()."""

    def __init__(self, policy: DestinationPolicy, resolver: AbstractResolver, *, lookup_seconds: float = 5.0) -> None:
        self.policy = policy
        self.resolver = GuardedResolver(resolver, policy, lookup_seconds=lookup_seconds)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self.resolver),
            middlewares=(self._check_literal_hosts,),
            cookie_jar=aiohttp.DummyCookieJar(),  # nothing one caller's host sets reaches another's
            trust_env=False,  # a proxy would resolve names itself, past the policy
        )

    async def __aenter__(self) -> GuardedHttp:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.session.close()

    async def refusal(self, host: str, *, every_address: bool = False) -> str | None:
        """`GuardedResolver.refusal`: why a request to `host` would be refused, checked now."""
        return await self.resolver.refusal(host, every_address=every_address)

    async def _check_literal_hosts(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        host = request.url.raw_host or ""
        if request.proxy is not None:
            raise DestinationRefused(host, "must be reached directly, not through a proxy")
        if _connects_without_resolving(host):
            problem = self.resolver.literal_problem(host)
            if problem is not None:
                raise DestinationRefused(host, problem)
        return await handler(request)
