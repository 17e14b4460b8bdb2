"""The provider's message limits, enforced before anything is sent, and the one check of a media URL.

`plan_outbound` turns one reply (text + media URLs) into the messages that fit the provider's limits:
at most `max_media_per_message` media and `max_total_bytes` per message, bodies of at most `max_body_chars`,
only public http(s) media URLs, and plain SMS with the links in the text where MMS is not available.

"Public" is checked twice: `check_media_url` looks at the URL alone, and planning then resolves each name and
refuses one with any address that is not globally routable (the provider resolves the name itself and may pick
any of them). A name that does not resolve from here is left for the provider to try: the gateway never connects
to it, and what it resolves to from the provider's network is the provider's to check. The gateway's own HEAD
requests go through `netguard.GuardedHttp`, which connects only to the public addresses it checked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from urllib.parse import urljoin, urlsplit

import aiohttp

from sms_gateway.config.model import MediaPolicy
from sms_gateway.model import MessageLimits, OutboundMessage
from sms_gateway.netguard import (
    DestinationPolicy,
    canonical_host,
    ip_literal,
    is_metadata_name,
    is_nonstandard_ip,
    is_public_address,
    url_host,
)

MEDIA_URL_INVALID = "mediaURLInvalid"
MEDIA_URL_NOT_PUBLIC = "mediaURLNotPublic"
MEDIA_TOO_LARGE = "mediaTooLarge"

# Names that only resolve inside a private network (RFC 6761, RFC 6762, RFC 8375 and common practice).
_PRIVATE_NAMES = ("localhost",)
_PRIVATE_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".lan", ".home.arpa")
_LABEL_RE = re.compile(r"^[a-z0-9_-]+$")
# \s is what str.isspace() calls whitespace; with the C0 controls and DEL.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_MAX_REDIRECTS = 5

SizeOf = Callable[[str], Awaitable[int | None]]
# Why a media URL's host must not be given to the provider once its name is resolved (None: it may).
HostRefusal = Callable[[str], Awaitable[str | None]]


@dataclass(slots=True)
class MediaPlan:
    messages: list[OutboundMessage] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (url, code, reason)
    links_as_text: bool = False  # MMS is not available to this user: the media went as links in the text


# ------------------------------------------------------------------------------ URL checks


def check_media_url(url: str, allow_private: bool = False) -> tuple[str, str] | None:
    """None when a provider could fetch `url`, else (code, reason). Never does DNS lookups."""
    if _SPACE_OR_CONTROL.search(url):
        return MEDIA_URL_INVALID, "URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return MEDIA_URL_INVALID, "URL cannot be parsed"
    if parts.scheme.lower() not in ("http", "https"):
        return MEDIA_URL_INVALID, "only http and https URLs can be sent"
    if not host:
        return MEDIA_URL_INVALID, "URL has no host"
    if allow_private:
        return None
    if parts.username is not None or parts.password is not None:
        return MEDIA_URL_INVALID, "URL must not contain credentials"
    return _host_problem(canonical_host(host))


def is_public_http_url(url: str, allow_private: bool) -> bool:
    return check_media_url(url, allow_private) is None


def is_http_url(url: str) -> bool:
    """An absolute http(s) URL with a host, wherever it points (a provider's own media links)."""
    return check_media_url(url, allow_private=True) is None


def media_destinations(policy: MediaPolicy) -> DestinationPolicy:
    """Where the gateway's own requests for media (HEAD) may connect: public addresses, and with
    `allowPrivateHosts` (local testing) loopback and private ones too; link-local and metadata never."""
    return DestinationPolicy(allow_private=policy.allow_private_hosts, allow_loopback=policy.allow_private_hosts)


def _host_problem(host: str) -> tuple[str, str] | None:
    address = ip_literal(host)
    if address is not None:
        return None if is_public_address(address) else (MEDIA_URL_NOT_PUBLIC, "host is not a public IP address")
    labels = host.split(".")
    if is_nonstandard_ip(host):
        return MEDIA_URL_NOT_PUBLIC, "host is an IP address in a non-standard notation"
    if not all(label and (_LABEL_RE.fullmatch(label) or not label.isascii()) for label in labels):
        return MEDIA_URL_INVALID, "host name is not valid"
    if host in _PRIVATE_NAMES or host.endswith(_PRIVATE_SUFFIXES):
        return MEDIA_URL_NOT_PUBLIC, "host name is local to a private network"
    if is_metadata_name(host):
        return MEDIA_URL_NOT_PUBLIC, "host name is a cloud metadata service"
    if len(labels) < 2:
        return MEDIA_URL_NOT_PUBLIC, "host name has no domain (single label)"
    return None


# ------------------------------------------------------------------------------ sizes


async def head_content_length(
    http: aiohttp.ClientSession, url: str, timeout_ms: int, *, allow_private: bool = False
) -> int | None:
    """`Content-Length` from a HEAD on `url` (following redirects), or None on any error. Never raises.

    Redirects are followed by hand so that every hop is checked like the original URL: a public URL must not
    be able to steer the gateway to a private address. `http` is the session for media hosts
    (`netguard.GuardedHttp`): it connects only to the addresses its policy allows, at each hop.
    """
    timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
    try:
        for _ in range(_MAX_REDIRECTS + 1):
            if not is_public_http_url(url, allow_private):
                return None
            async with http.head(url, allow_redirects=False, timeout=timeout) as response:
                location = response.headers.get("Location")
                if response.status in (301, 302, 303, 307, 308) and location:
                    url = urljoin(url, location)
                    continue
                if response.status >= 400:
                    return None
                return response.content_length
    except Exception:  # a size we cannot learn is just unknown
        return None
    return None


async def _safe_size(size_of: SizeOf, url: str) -> int | None:
    try:
        size = await size_of(url)
    except Exception:  # unknown counts as 0, like a missing Content-Length
        return None
    return size if isinstance(size, int) and size >= 0 else None


# ------------------------------------------------------------------------------ text


def split_text(text: str, max_chars: int) -> list[str]:
    """Split `text` into chunks of at most `max_chars` characters, at whitespace when possible.

    The whitespace a chunk boundary falls on is dropped; a word longer than `max_chars` is cut hard.
    Leading and trailing whitespace of the whole text is dropped; blank text gives no chunks.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > max_chars:
        cut = _last_space(rest, max_chars)
        if cut > 0:
            chunks.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip()
        else:
            chunks.append(rest[:max_chars])
            rest = rest[max_chars:].lstrip()
    if rest:
        chunks.append(rest)
    return chunks


def _last_space(text: str, max_chars: int) -> int:
    """Index of the last whitespace that ends a chunk of <= max_chars characters, or -1."""
    for index in range(max_chars, 0, -1):
        if text[index].isspace():
            return index
    return -1


# ------------------------------------------------------------------------------ planning


def _plus_digits(number: str) -> str:
    return "+" + "".join(ch for ch in number if ch.isascii() and ch.isdigit())


def mms_available(user_number: str, limits: MessageLimits) -> bool:
    user = _plus_digits(user_number)
    return any(user.startswith(_plus_digits(prefix)) for prefix in limits.mms_country_prefixes)


def _group_media(media: Sequence[tuple[str, int | None]], max_items: int, max_bytes: int) -> list[tuple[str, ...]]:
    """Greedy, order-preserving groups of at most `max_items` media and `max_bytes` (unknown size = 0)."""
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    total = 0
    for url, known_size in media:
        size = known_size or 0
        if current and (len(current) >= max_items or total + size > max_bytes):
            groups.append(tuple(current))
            current, total = [], 0
        current.append(url)
        total += size
    if current:
        groups.append(tuple(current))
    return groups


async def plan_outbound(
    text: str,
    media_urls: Sequence[str],
    *,
    tenant_number: str,
    user_number: str,
    session_id: str | None,
    limits: MessageLimits,
    allow_private_hosts: bool = False,
    host_refusal: HostRefusal | None,
    size_of: SizeOf | None,
    new_id: Callable[[], str],
) -> MediaPlan:
    """The messages that carry `text` and `media_urls` within the provider's limits, in sending order.

    The first message has the first text chunk and the first media group; later chunks and groups pair up
    in order, then the leftover text-only or media-only messages follow (where an MMS carries no text,
    `limits.media_with_text` false, the text chunks go first and every media group alone). Where MMS is not
    available the media links are appended to the text instead. Rejected media are reported, in input order, with
    a code and reason. `host_refusal` resolves a media URL's host and says why it is not public (None: names are
    not resolved, as with `allow_private_hosts`); `size_of` learns a media's size (None: sizes are not checked).
    """
    problems = [check_media_url(url, allow_private_hosts) for url in media_urls]
    if host_refusal is not None:
        await _refuse_unpublic_names(media_urls, problems, host_refusal)
    accepted = [index for index, problem in enumerate(problems) if problem is None]

    groups: list[tuple[str, ...]] = []
    links_as_text = bool(accepted) and not mms_available(user_number, limits)
    if links_as_text:
        links = [media_urls[index] for index in accepted]
        text = "\n".join([text.strip(), *links]) if text.strip() else "\n".join(links)
    elif accepted:
        sizes = await _sizes([media_urls[index] for index in accepted], size_of)
        kept: list[tuple[str, int | None]] = []
        for index, size in zip(accepted, sizes, strict=True):
            if size is not None and size > limits.max_total_bytes:
                problems[index] = (MEDIA_TOO_LARGE, f"{size} bytes is over the {limits.max_total_bytes}-byte limit")
            else:
                kept.append((media_urls[index], size))
        groups = _group_media(kept, max(1, limits.max_media_per_message), limits.max_total_bytes)

    plan = MediaPlan(
        rejected=[(url, *problem) for url, problem in zip(media_urls, problems, strict=True) if problem],
        links_as_text=links_as_text,
    )
    chunks = split_text(text, limits.max_body_chars)
    pairs: Iterable[tuple[str | None, tuple[str, ...] | None]]
    if limits.media_with_text:
        pairs = zip_longest(chunks, groups, fillvalue=None)
    else:  # the text first, in messages of its own, then each media group alone
        pairs = [*((chunk, None) for chunk in chunks), *((None, group) for group in groups)]
    for chunk, group in pairs:
        plan.messages.append(
            OutboundMessage(
                message_id=new_id(),
                tenant_number=tenant_number,
                user_number=user_number,
                text=chunk or "",
                media_urls=group or (),
                session_id=session_id,
            )
        )
    return plan


async def _refuse_unpublic_names(
    urls: Sequence[str], problems: list[tuple[str, str] | None], host_refusal: HostRefusal
) -> None:
    """Resolve the hosts of the URLs that passed the URL check (each once, concurrently); refuse the non-public."""
    hosts = {index: url_host(urls[index]) for index, problem in enumerate(problems) if problem is None}
    names = sorted({host for host in hosts.values() if host is not None})
    refusals = dict(zip(names, await asyncio.gather(*(host_refusal(name) for name in names)), strict=True))
    for index, host in hosts.items():
        if host is None:
            problems[index] = (MEDIA_URL_INVALID, "URL cannot be parsed")
        elif (refusal := refusals[host]) is not None:
            problems[index] = (MEDIA_URL_NOT_PUBLIC, f"host {refusal}")


async def _sizes(urls: list[str], size_of: SizeOf | None) -> list[int | None]:
    if size_of is None:
        return [None] * len(urls)
    return list(await asyncio.gather(*(_safe_size(size_of, url) for url in urls)))
