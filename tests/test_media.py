"""SPEC §2.5: MMS limits enforced before sending (media count, total size, public URLs, body length, SMS fallback)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_gateway.config.model import MediaPolicy
from sms_gateway.media import (
    MEDIA_TOO_LARGE,
    MEDIA_URL_INVALID,
    MEDIA_URL_NOT_PUBLIC,
    MediaPlan,
    check_media_url,
    head_content_length,
    is_public_http_url,
    media_destinations,
    mms_available,
    plan_outbound,
    split_text,
)
from sms_gateway.netguard import DestinationPolicy, GuardedHttp, GuardedResolver
from sms_gateway.providers.twilio import LIMITS as TWILIO_LIMITS
from tests.fakes.dns import PUBLIC_ADDRESS, FakeResolver

MB = 1024 * 1024
TENANT = "+15005550001"
US_USER = "+15005550006"
UK_USER = "+447700900123"
POLICY = MediaPolicy()


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"m{next(counter)}"


def urls(count: int, start: int = 0) -> list[str]:
    return [f"https://cdn.example.com/img/{n}.jpg" for n in range(start, start + count)]


def sizes_from(table: dict[str, int | None]) -> Callable[[str], Any]:
    async def size_of(url: str) -> int | None:
        return table[url]

    return size_of


async def plan(
    text: str,
    media: Sequence[str] = (),
    *,
    user: str = US_USER,
    policy: MediaPolicy = POLICY,
    size_of: Callable[[str], Any] | None = None,
    dns: FakeResolver | None = None,
) -> MediaPlan:
    """With Twilio's limits, narrowed by `policy`, and media hosts resolved (by `dns`: default, every name is a public
    host) as the gateway does."""
    resolver = GuardedResolver(dns or FakeResolver(default=PUBLIC_ADDRESS), media_destinations(policy))
    return await plan_outbound(
        text,
        media,
        tenant_number=TENANT,
        user_number=user,
        session_id="sess-1",
        limits=policy.limits(TWILIO_LIMITS),
        allow_private_hosts=policy.allow_private_hosts,
        host_refusal=None if policy.allow_private_hosts else functools.partial(resolver.refusal, every_address=True),
        size_of=size_of if policy.check_size else None,
        new_id=ids(),
    )


def assert_reconstructs(text: str, chunks: Sequence[str], max_chars: int) -> None:
    """Chunks appear in the text in order, separated only by (dropped) whitespace, and none is too long."""
    pos = 0
    for index, chunk in enumerate(chunks):
        assert chunk and len(chunk) <= max_chars
        assert not chunk[0].isspace() and not chunk[-1].isspace()
        while pos < len(text) and text[pos].isspace():
            pos += 1
        assert text.startswith(chunk, pos), (index, chunk)
        pos += len(chunk)
        follows = text[pos : pos + 1]
        if index < len(chunks) - 1 and follows and not follows.isspace():
            # a hard cut: only when no whitespace could end the chunk
            assert len(chunk) == max_chars and not any(ch.isspace() for ch in chunk[1:])
    assert text[pos:].strip() == ""


# ------------------------------------------------------------------------------ URL checks


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.jpg",
        "http://example.com/a.png?x=1#f",
        "https://media.twiliocdn.com:8443/x",
        "https://8.8.8.8/img.gif",
        "https://[2001:4860:4860::8888]/img.gif",
        "https://example.com./trailing-dot",
        "https://bücher.example/umlaut.jpg",
        "https://[64:ff9b::808:808]/nat64-of-a-public-address.gif",
        "https://[2002:808:808::1]/6to4-of-a-public-address.gif",
        "https://[::ffff:8.8.8.8]/mapped-public-address.gif",
    ],
)
def test_public_urls_are_accepted(url: str) -> None:
    assert check_media_url(url) is None
    assert is_public_http_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://10.1.2.3/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://172.16.0.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://192.168.1.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://100.64.0.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://169.254.169.254/latest/meta-data", MEDIA_URL_NOT_PUBLIC),
        ("http://0.0.0.0/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://224.0.0.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[::1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[::]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[fe80::1%25eth0]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[fd12:3456::1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[::ffff:127.0.0.1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[::ffff:192.168.0.1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[64:ff9b::a00:1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[2002:c0a8:1::]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        # IPv6 forms that carry IPv4 loopback: compatible, translated, local-use NAT64 (/96 and /48), Teredo.
        ("http://[::7f00:1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[::127.0.0.1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[::ffff:0:7f00:1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[64:ff9b:1::7f00:1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[64:ff9b:1:7f00:0:100::]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[fec0::1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://[ff02::1]/a.jpg", MEDIA_URL_NOT_PUBLIC),
        # Cloud metadata services, whatever their address looks like.
        ("http://metadata.google.internal/computeMetadata/v1/", MEDIA_URL_NOT_PUBLIC),
        ("http://metadata.goog./computeMetadata/v1/", MEDIA_URL_NOT_PUBLIC),
        ("http://[fd00:ec2::254]/latest/meta-data/", MEDIA_URL_NOT_PUBLIC),
        ("http://168.63.129.16/machine", MEDIA_URL_NOT_PUBLIC),
        ("http://100.100.100.200/latest/meta-data/", MEDIA_URL_NOT_PUBLIC),
        ("http://2130706433/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://0x7f.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://0x7f000001/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://127.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://017.0.0.1/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://１２７.０.０.１/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://localhost/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://LOCALHOST:8080/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://img.localhost/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://ｌｏｃａｌｈｏｓｔ/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://printer.local/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://db.internal/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://nas.lan/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://router.home.arpa/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://intranet/a.jpg", MEDIA_URL_NOT_PUBLIC),
        ("http://user:pass@example.com/a.jpg", MEDIA_URL_INVALID),
        ("http://user@example.com/a.jpg", MEDIA_URL_INVALID),
        ("http://example.com\\@127.0.0.1/a.jpg", MEDIA_URL_INVALID),
        ("http://127.0.0.%31/a.jpg", MEDIA_URL_INVALID),
        ("ftp://example.com/a.jpg", MEDIA_URL_INVALID),
        ("file:///etc/passwd", MEDIA_URL_INVALID),
        ("data:image/png;base64,AAAA", MEDIA_URL_INVALID),
        ("//example.com/a.jpg", MEDIA_URL_INVALID),
        ("/a.jpg", MEDIA_URL_INVALID),
        ("https://", MEDIA_URL_INVALID),
        ("https://exa mple.com/a.jpg", MEDIA_URL_INVALID),
        ("https://example.com/a\n.jpg", MEDIA_URL_INVALID),
        ("https://example.com:99999/a.jpg", MEDIA_URL_INVALID),
        ("http://[::1/a.jpg", MEDIA_URL_INVALID),
        ("", MEDIA_URL_INVALID),
    ],
)
def test_unfetchable_urls_are_rejected(url: str, code: str) -> None:
    problem = check_media_url(url)
    assert problem is not None and problem[0] == code
    assert not is_public_http_url(url, allow_private=False)


def test_allow_private_only_checks_scheme_and_host() -> None:
    assert is_public_http_url("http://127.0.0.1:8080/a.jpg", allow_private=True)
    assert is_public_http_url("http://localhost/a.jpg", allow_private=True)
    assert not is_public_http_url("ftp://127.0.0.1/a.jpg", allow_private=True)
    assert not is_public_http_url("http:///a.jpg", allow_private=True)


@given(st.text(max_size=60))
def test_url_check_never_raises(url: str) -> None:
    for candidate in (url, "http://" + url, "https://" + url + "/x"):
        assert isinstance(is_public_http_url(candidate, allow_private=False), bool)


# ------------------------------------------------------------------------------ text


def test_split_at_word_boundary() -> None:
    words = ["word" + str(n) for n in range(400)]
    text = " ".join(words)
    chunks = split_text(text, 1600)
    assert len(chunks) == 2
    assert all(len(c) <= 1600 for c in chunks)
    assert " ".join(chunks) == text
    assert chunks[0].split()[-1] in words  # no word was cut


def test_split_exact_limit_and_short_text() -> None:
    assert split_text("a" * 1600, 1600) == ["a" * 1600]
    assert split_text("  hi  ", 1600) == ["hi"]
    assert split_text("", 1600) == []
    assert split_text(" \n\t ", 1600) == []


def test_split_drops_only_boundary_whitespace() -> None:
    assert split_text("aaa bbb\n\nccc", 7) == ["aaa bbb", "ccc"]
    assert split_text("aaa   bbb", 5) == ["aaa", "bbb"]


def test_hard_split_of_a_long_word() -> None:
    text = "x" * 3500
    assert split_text(text, 1600) == ["x" * 1600, "x" * 1600, "x" * 300]
    assert split_text("ab " + "c" * 10, 4) == ["ab", "cccc", "cccc", "cc"]


def test_split_counts_python_characters() -> None:
    assert split_text("é" * 1600, 1600) == ["é" * 1600]
    assert [len(c) for c in split_text("🙂" * 1601, 1600)] == [1600, 1]


@given(text=st.text(alphabet=st.sampled_from("ab é🙂 \n\t"), max_size=400), max_chars=st.integers(1, 40))
def test_split_property(text: str, max_chars: int) -> None:
    assert_reconstructs(text, split_text(text, max_chars), max_chars)


# ------------------------------------------------------------------------------ planning


async def test_empty_reply_sends_nothing() -> None:
    result = await plan("")
    assert result.messages == [] and result.rejected == []
    assert (await plan("   \n")).messages == []


async def test_plain_sms() -> None:
    result = await plan("Hello")
    [message] = result.messages
    assert (message.message_id, message.text, message.media_urls) == ("m1", "Hello", ())
    assert (message.tenant_number, message.user_number, message.session_id) == (TENANT, US_USER, "sess-1")


async def test_eleven_media_make_two_messages_text_on_first() -> None:
    media = urls(11)
    result = await plan("Here you go", media)
    assert [(m.text, m.media_urls) for m in result.messages] == [
        ("Here you go", tuple(media[:10])),
        ("", (media[10],)),
    ]
    assert [m.message_id for m in result.messages] == ["m1", "m2"]


async def test_media_only() -> None:
    result = await plan("", urls(2))
    assert [(m.text, m.media_urls) for m in result.messages] == [("", tuple(urls(2)))]


async def test_total_size_grouping() -> None:
    media = urls(5)
    table: dict[str, int | None] = dict(zip(media, [2 * MB, 2 * MB, 2 * MB, None, 5 * MB], strict=True))
    result = await plan("pics", media, size_of=sizes_from(table))
    assert [m.media_urls for m in result.messages] == [
        (media[0], media[1]),
        (media[2], media[3]),  # unknown size counts as 0
        (media[4],),  # exactly 5 MB fits alone
    ]
    assert result.messages[0].text == "pics"
    assert result.rejected == []


async def test_single_media_over_the_limit_is_rejected() -> None:
    media = urls(3)
    table: dict[str, int | None] = {media[0]: 100, media[1]: 5 * MB + 1, media[2]: 200}
    result = await plan("x", media, size_of=sizes_from(table))
    assert [m.media_urls for m in result.messages] == [(media[0], media[2])]
    [(url, code, reason)] = result.rejected
    assert (url, code) == (media[1], MEDIA_TOO_LARGE)
    assert str(5 * MB + 1) in reason


async def test_size_checks_can_be_turned_off_and_failures_count_as_unknown() -> None:
    calls: list[str] = []

    async def size_of(url: str) -> int | None:
        calls.append(url)
        raise RuntimeError("boom")

    off = MediaPolicy(check_size=False)
    assert [m.media_urls for m in (await plan("", urls(2), policy=off, size_of=size_of)).messages] == [tuple(urls(2))]
    assert calls == []
    result = await plan("", urls(2), size_of=size_of)
    assert [m.media_urls for m in result.messages] == [tuple(urls(2))]
    assert calls == urls(2)


async def test_sizes_are_learned_concurrently() -> None:
    media = urls(4)
    barrier = asyncio.Barrier(len(media))

    async def size_of(url: str) -> int:
        await barrier.wait()  # deadlocks unless all four calls are in flight together
        return 10

    result = await asyncio.wait_for(plan("", media, size_of=size_of), timeout=2)
    assert len(result.messages) == 1


async def test_private_urls_are_dropped_and_reported() -> None:
    good = urls(2)
    bad = ["http://127.0.0.1/a.jpg", "ftp://example.com/b.jpg", "http://192.168.0.10/c.jpg"]
    result = await plan("hi", [bad[0], good[0], bad[1], bad[2], good[1]])
    assert [m.media_urls for m in result.messages] == [tuple(good)]
    assert [(url, code) for url, code, _ in result.rejected] == [
        (bad[0], MEDIA_URL_NOT_PUBLIC),
        (bad[1], MEDIA_URL_INVALID),
        (bad[2], MEDIA_URL_NOT_PUBLIC),
    ]
    allowed = await plan("hi", [bad[0]], policy=MediaPolicy(allow_private_hosts=True))
    assert allowed.messages[0].media_urls == (bad[0],)


async def test_all_media_rejected_leaves_text() -> None:
    result = await plan("just text", ["http://localhost/a.jpg"])
    assert [(m.text, m.media_urls) for m in result.messages] == [("just text", ())]
    assert (await plan("", ["http://localhost/a.jpg"])).messages == []


async def test_names_that_resolve_to_non_public_addresses_are_refused() -> None:
    """A public-looking name is only as public as its addresses: the provider would fetch whichever it resolves."""
    dns = FakeResolver(
        {
            "intranet.example.com": "10.0.0.5",
            "loop.example.com": "127.0.0.1",
            "v6loop.example.com": "::1",
            "mapped.example.com": "::ffff:169.254.169.254",
            "nat64.example.com": "64:ff9b:1::7f00:1",
            "half.example.com": (PUBLIC_ADDRESS, "192.168.1.1"),  # a provider may pick either
            "xn--bcher-kva.example": "127.0.0.1",  # bücher.example, as IDNA sends it
            "dotted.example.com": "127.0.0.1",
        },
        default=PUBLIC_ADDRESS,
    )
    refused = [
        "https://intranet.example.com/a.jpg",
        "https://loop.example.com:8443/a.jpg",
        "https://v6loop.example.com/a",
        "https://mapped.example.com/a",
        "https://nat64.example.com/a",
        "https://half.example.com/a.jpg",
        "https://bücher.example/a.jpg",
        "https://dotted.example.com./a.jpg",
    ]
    good = "https://cdn.example.com/ok.jpg"
    result = await plan("pics", [*refused, good], dns=dns, policy=MediaPolicy(check_size=False))
    assert [m.media_urls for m in result.messages] == [(good,)]
    assert [(url, code) for url, code, _ in result.rejected] == [(url, MEDIA_URL_NOT_PUBLIC) for url in refused]
    reasons = [reason for _, _, reason in result.rejected]
    assert reasons[0] == "host resolves to a private address" and reasons[1] == "host resolves to a loopback address"
    assert "10.0.0.5" not in " ".join(reasons), "the caller learns the kind of address, not the address"
    # Links in a text are not for the provider to fetch, but a private link is refused all the same.
    as_links = await plan("see", [refused[0], good], user=UK_USER, dns=dns)
    assert [m.text for m in as_links.messages] == [f"see\n{good}"]


async def test_names_that_do_not_resolve_are_left_to_the_provider() -> None:
    dns = FakeResolver()  # nothing resolves from here
    result = await plan("", ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.jpg"], dns=dns)
    assert [m.media_urls for m in result.messages] == [
        ("https://cdn.example.com/a.jpg", "https://cdn.example.com/b.jpg")
    ]
    assert dns.lookups == ["cdn.example.com"], "each host is resolved once"


async def test_allowing_private_hosts_resolves_nothing() -> None:
    dns = FakeResolver({"loop.example.com": "127.0.0.1"})
    result = await plan("", ["https://loop.example.com/a.jpg"], dns=dns, policy=MediaPolicy(allow_private_hosts=True))
    assert [m.media_urls for m in result.messages] == [("https://loop.example.com/a.jpg",)]
    assert dns.lookups == []


async def test_long_text_with_twelve_media() -> None:
    text = " ".join(["lorem"] * 583)  # 3,497 characters
    media = urls(12)
    result = await plan(text, media)
    assert [len(m.media_urls) for m in result.messages] == [10, 2, 0]
    assert result.messages[0].media_urls == tuple(media[:10])
    assert result.messages[1].media_urls == tuple(media[10:])
    assert all(0 < len(m.text) <= 1600 for m in result.messages)
    assert " ".join(m.text for m in result.messages) == text


async def test_more_media_groups_than_text_chunks() -> None:
    result = await plan("a" * 1700, urls(25))
    assert [(len(m.text), len(m.media_urls)) for m in result.messages] == [(1600, 10), (100, 10), (0, 5)]


async def test_non_mms_destination_gets_links_in_text() -> None:
    media = urls(2)
    calls: list[str] = []

    async def size_of(url: str) -> int:
        calls.append(url)
        return 1

    result = await plan("See these", [*media, "http://10.0.0.1/x.jpg"], user=UK_USER, size_of=size_of)
    [message] = result.messages
    assert message.media_urls == ()
    assert message.text == "See these\n" + "\n".join(media)
    assert [code for _, code, _ in result.rejected] == [MEDIA_URL_NOT_PUBLIC]
    assert calls == []
    assert result.links_as_text
    only_links = await plan("", media, user=UK_USER)
    assert [m.text for m in only_links.messages] == ["\n".join(media)] and only_links.links_as_text
    assert not (await plan("See these", media)).links_as_text
    assert not (await plan("See these", [], user=UK_USER)).links_as_text, "no media, nothing fell back"


async def test_links_in_text_are_split_too() -> None:
    result = await plan("x" * 1590, urls(3), user=UK_USER)
    assert [m.text for m in result.messages] == ["x" * 1590, "\n".join(urls(3))]
    assert all(m.media_urls == () for m in result.messages)


@pytest.mark.parametrize(
    ("number", "prefixes", "expected"),
    [
        ("+15005550006", ("+1",), True),
        ("15005550006", ("+1",), True),
        ("+1 (500) 555-0006", ("1",), True),
        ("whatsapp:+15005550006", ("+1",), True),
        ("+447700900123", ("+1",), False),
        ("+447700900123", ("+1", "+44"), True),
        ("+15005550006", (), False),
    ],
)
def test_mms_countries(number: str, prefixes: tuple[str, ...], expected: bool) -> None:
    assert mms_available(number, MediaPolicy(mms_country_prefixes=prefixes).limits(TWILIO_LIMITS)) is expected


async def test_custom_limits() -> None:
    policy = MediaPolicy(max_media_per_message=3, max_body_chars=10, max_total_bytes=100)
    media = urls(4)
    table: dict[str, int | None] = dict.fromkeys(media, 40)
    result = await plan("one two three four", media, policy=policy, size_of=sizes_from(table))
    assert [(m.text, len(m.media_urls)) for m in result.messages] == [
        ("one two", 2),
        ("three four", 2),
    ]


# ------------------------------------------------------------------------------ properties

PUBLIC = st.integers(0, 30).map(lambda n: f"https://cdn{n % 3}.example.com/m/{n}.png")
PRIVATE = st.sampled_from(["http://127.0.0.1/x.png", "http://localhost/y.png", "ftp://example.com/z.png"])


@given(
    text=st.text(alphabet=st.sampled_from("abc déf🙂\n "), max_size=600),
    media=st.lists(st.one_of(PUBLIC, PUBLIC, PRIVATE), max_size=25),
    size_list=st.lists(st.one_of(st.none(), st.integers(0, 120)), min_size=31, max_size=31),
    max_media=st.integers(1, 10),
    max_body=st.integers(1, 200),
    max_bytes=st.integers(1, 150),
    user=st.sampled_from([US_USER, UK_USER]),
)
@settings(deadline=None, max_examples=150)
async def test_plan_properties(
    text: str,
    media: list[str],
    size_list: list[int | None],
    max_media: int,
    max_body: int,
    max_bytes: int,
    user: str,
) -> None:
    def size(url: str) -> int | None:
        return size_list[int(url.rsplit("/", 1)[-1].split(".")[0])] if "example.com/m/" in url else None

    async def size_of(url: str) -> int | None:
        return size(url)

    policy = MediaPolicy(max_media_per_message=max_media, max_body_chars=max_body, max_total_bytes=max_bytes)
    result = await plan(text, media, user=user, policy=policy, size_of=size_of)

    public = [url for url in media if url.startswith("https://")]
    too_big = [url for url in public if (size(url) or 0) > max_bytes]
    mms = user == US_USER
    accepted = [url for url in public if url not in too_big] if mms else []
    assert [url for url, _, _ in result.rejected] == [
        url for url in media if not url.startswith("https://") or (mms and url in too_big)
    ]

    sent_media = [url for m in result.messages for url in m.media_urls]
    assert sent_media == accepted
    for message in result.messages:
        assert message.text or message.media_urls
        assert len(message.media_urls) <= max_media
        assert len(message.text) <= max_body
        assert sum(size(url) or 0 for url in message.media_urls) <= max_bytes
    assert len({m.message_id for m in result.messages}) == len(result.messages)

    expected_text = text.strip()
    if not mms and public:
        expected_text = "\n".join([expected_text, *public]) if expected_text else "\n".join(public)
    assert_reconstructs(expected_text, [m.text for m in result.messages if m.text], max_body)
    # text chunks come first-to-last with the earliest messages
    texts = [bool(m.text) for m in result.messages]
    assert texts == sorted(texts, reverse=True)


# ------------------------------------------------------------------------------ head_content_length


# The test server is on loopback: these names resolve there, and only the ones a policy lists are allowed.
SERVER_NAMES = {"media.example.com": "127.0.0.1", "closed.example.com": "127.0.0.1", "evil.example.com": "127.0.0.1"}


@pytest.fixture
async def media_server(aiohttp_server: Any) -> AsyncIterator[str]:
    async def image(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 1234, content_type="image/png")

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["to"])

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(body=b"x")

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"abc")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/img.png", image)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/loop", loop)
    app.router.add_get("/chunked", chunked)
    server = await aiohttp_server(app)
    yield f"http://media.example.com:{server.port}"


@pytest.fixture
async def public_http() -> AsyncIterator[aiohttp.ClientSession]:
    """The media session, with the test server's names (not its address) allowed as if they were public."""
    policy = DestinationPolicy.allowing(["media.example.com", "closed.example.com"])
    async with GuardedHttp(policy, FakeResolver(SERVER_NAMES)) as http:
        yield http.session


async def test_head_content_length(media_server: str, public_http: aiohttp.ClientSession) -> None:
    assert await head_content_length(public_http, f"{media_server}/img.png", 2000) == 1234


async def test_head_follows_public_redirects(media_server: str, public_http: aiohttp.ClientSession) -> None:
    url = f"{media_server}/redirect?to={media_server}/img.png"
    assert await head_content_length(public_http, url, 2000) == 1234
    assert await head_content_length(public_http, f"{media_server}/redirect?to=/img.png", 2000) == 1234


async def test_head_refuses_redirects_to_private_hosts(media_server: str, public_http: aiohttp.ClientSession) -> None:
    port = media_server.rsplit(":", 1)[1]
    url = f"{media_server}/redirect?to=http://127.0.0.1:{port}/img.png"
    assert await head_content_length(public_http, url, 2000) is None
    assert await head_content_length(public_http, f"http://127.0.0.1:{port}/img.png", 2000) is None
    # A redirect to a name that resolves to a private address is refused when the gateway connects.
    to_name = f"{media_server}/redirect?to=http://evil.example.com:{port}/img.png"
    assert await head_content_length(public_http, to_name, 2000) is None
    # media.allowPrivateHosts (local testing) lets both through.
    dns = FakeResolver(SERVER_NAMES)
    async with GuardedHttp(media_destinations(MediaPolicy(allow_private_hosts=True)), dns) as private_http:
        assert await head_content_length(private_http.session, url, 2000, allow_private=True) == 1234
        assert await head_content_length(private_http.session, to_name, 2000, allow_private=True) == 1234


@pytest.mark.parametrize("path", ["/missing.png", "/slow", "/loop", "/chunked"])
async def test_head_unknown_sizes(media_server: str, public_http: aiohttp.ClientSession, path: str) -> None:
    assert await head_content_length(public_http, media_server + path, 100) is None


async def test_head_never_raises(public_http: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await head_content_length(public_http, f"http://closed.example.com:{port}/x", 500) is None
    assert await head_content_length(public_http, f"http://evil.example.com:{port}/x", 500) is None
    assert await head_content_length(public_http, "not a url", 500) is None


async def test_where_an_mms_carries_no_text_the_text_goes_first_and_each_media_alone() -> None:
    """As TeleSign's MMS: the text in SMS of its own, then one MMS per media (each within the limits)."""
    limits = dataclasses.replace(TWILIO_LIMITS, max_media_per_message=1, max_body_chars=10, media_with_text=False)
    result = await plan_outbound(
        "one two three four",
        urls(3),
        tenant_number=TENANT,
        user_number=US_USER,
        session_id="s",
        limits=limits,
        host_refusal=None,
        size_of=None,
        new_id=ids(),
    )
    assert [(m.text, m.media_urls) for m in result.messages] == [
        ("one two", ()),
        ("three four", ()),
        ("", (urls(3)[0],)),
        ("", (urls(3)[1],)),
        ("", (urls(3)[2],)),
    ]
    media_only = await plan_outbound(
        "",
        urls(1),
        tenant_number=TENANT,
        user_number=US_USER,
        session_id="s",
        limits=limits,
        host_refusal=None,
        size_of=None,
        new_id=ids(),
    )
    assert [(m.text, m.media_urls) for m in media_only.messages] == [("", (urls(1)[0],))]
    no_mms = await plan_outbound(
        "hi",
        urls(1),
        tenant_number=TENANT,
        user_number=UK_USER,
        session_id="s",
        limits=dataclasses.replace(limits, max_body_chars=1600),
        host_refusal=None,
        size_of=None,
        new_id=ids(),
    )
    assert [(m.text, m.media_urls) for m in no_mms.messages] == [(f"hi\n{urls(1)[0]}", ())]
