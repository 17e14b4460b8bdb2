"""Hostile and broken HTTP, over real sockets: clients that send slowly or not at all, requests that cannot be
decoded, and peers we call that trickle their answers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_gateway.app import create_app
from sms_gateway.config.model import Config, Credentials, ProviderConfig
from sms_gateway.http_client import TIMEOUT, TransportError
from sms_gateway.providers.transport import ProviderTransport
from sms_gateway.providers.twilio.settings import TwilioConfig
from sms_gateway.serve import Listener, listen
from tests.harness import TELESIGN, USER, V1, free_port, running_gateway
from tests.procs import inherited_env

ROOT = Path(__file__).resolve().parent.parent
HEAD_S, BODY_S, KEEPALIVE_S = 0.5, 0.8, 1.2
CONTROL = Credentials("ops", "ops-secret")
CONTROL_AUTH = "Basic " + base64.b64encode(b"ops:ops-secret").decode()
FORM = "application/x-www-form-urlencoded"


@asynccontextmanager
async def listening(**deadlines: float) -> AsyncIterator[Listener]:
    """The gateway app on a free port, served as `sms-gateway serve` serves it."""
    config = Config(
        store_url="memory://",
        header_timeout_s=deadlines.get("head", HEAD_S),
        body_timeout_s=deadlines.get("body", BODY_S),
        keepalive_timeout_s=deadlines.get("keepalive", KEEPALIVE_S),
    )
    listener = await listen(create_app(config), config, "127.0.0.1", 0, shutdown_timeout=1.0)
    try:
        yield listener
    finally:
        await listener.close()


async def connect(listener: Listener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", listener.port)


async def until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), within)
    return data, time.monotonic() - started


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, leaving the connection open."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return int(status_line.split()[1]), headers, body


def response_of(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    return int(status_line.split()[1]), headers, json.loads(body)


def is_json_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)


# -- slow clients -----------------------------------------------------------------------------------------


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline() -> None:
    async with listening() as listener:
        reader, writer = await connect(listener)
        data, elapsed = await until_closed(reader, within=5)
        writer.close()
    assert data == b"" and HEAD_S * 0.8 <= elapsed < HEAD_S + 1.5


async def test_a_head_trickled_byte_by_byte_is_cut_at_the_header_deadline() -> None:
    head = b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Padding: " + b"x" * 100 + b"\r\n\r\n"
    async with listening() as listener:
        reader, writer = await connect(listener)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            for byte in head:  # one byte every 50 ms: the whole head would take 7 s
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
                if reader.at_eof() or time.monotonic() - started > 5:
                    raise ConnectionResetError("closed by the server")
            await reader.read()  # the head was answered in full: no ConnectionError, the test fails
        writer.close()
    assert time.monotonic() - started < HEAD_S + 1.5


async def test_a_body_that_stops_arriving_is_answered_408_and_the_connection_closed() -> None:
    async with listening() as listener:
        reader, writer = await connect(listener)
        writer.write(
            b"POST /sms.receiver/SmsRecv HTTP/1.1\r\nHost: gateway\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nContent-Length: 1000\r\n\r\nFrom=%2B1555"
        )
        data, elapsed = await until_closed(reader, within=5)
        writer.close()
    status, headers, body = response_of(data)
    assert status == 408 and body["error"]["code"] == "requestTimeout" and headers["connection"] == "close"
    assert BODY_S * 0.8 <= elapsed < BODY_S + 1.5


async def test_a_body_aiohttp_never_finishes_decoding_is_cut_at_the_body_deadline() -> None:
    """aiohttp (3.14) finds a truncated deflate body only at its end; when that end arrives after the head, the
    handler's read is never told and would wait forever."""
    async with listening() as listener:
        reader, writer = await connect(listener)
        writer.write(
            b"POST /sms.receiver/SmsRecv HTTP/1.1\r\nHost: gateway\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nContent-Encoding: deflate\r\nContent-Length: 1\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.1)  # the head is parsed and the handler reading before the body comes
        writer.write(b"\xf4")
        data, elapsed = await until_closed(reader, within=5)
        writer.close()
    status, _, body = response_of(data)
    assert status == 408 and is_json_error(body) and elapsed < BODY_S + 1


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() -> None:
    async with listening() as listener:
        reader, writer = await connect(listener)
        writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        status, _, _ = await read_response(reader)
        data, elapsed = await until_closed(reader, within=5)
        writer.close()
    assert status == 200 and data == b"" and KEEPALIVE_S * 0.8 <= elapsed < KEEPALIVE_S + 1.5


async def test_requests_within_their_deadlines_are_served_on_one_kept_alive_connection() -> None:
    """The head deadline runs from a request's first byte, not from the previous answer; a body sent in
    pieces is fine while it is complete within the body deadline."""
    async with listening() as listener:
        reader, writer = await connect(listener)
        writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        await asyncio.sleep(HEAD_S + 0.2)  # idle longer than the head deadline, within keep-alive
        writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
        await asyncio.sleep(HEAD_S / 2)
        writer.write(b"\r\n")
        assert (await read_response(reader))[0] == 200
        writer.write(
            b"POST /sms.receiver/SmsRecv HTTP/1.1\r\nHost: gateway\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nContent-Length: 9\r\n\r\nTo=%2B1"
        )
        await asyncio.sleep(BODY_S / 2)
        writer.write(b"55")
        status, _, body = await read_response(reader)
        writer.close()
    assert status == 403 and json.loads(body)["error"]["code"] == "forbidden"  # no tenant has that number


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /health HTTP/1.1\r\nHost: gateway\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(b"G\x01T /health HTTP/1.1\r\nHost: gateway\r\n\r\n", id="bad-method"),
        pytest.param(
            b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n", id="header-too-long"
        ),
        pytest.param(
            b"POST /sms.receiver/sinch HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            id="bad-transfer-encoding",
        ),
        pytest.param(
            b"POST /sms.receiver/sinch HTTP/1.1\r\nHost: gateway\r\nContent-Encoding: deflate\r\n"
            b"Content-Length: 1\r\n\r\n\xf4",
            id="deflate-that-ends-too-soon",
        ),
    ],
)
async def test_a_request_aiohttp_cannot_parse_is_answered_in_json(request_bytes: bytes) -> None:
    async with listening() as listener:
        reader, writer = await connect(listener)
        writer.write(request_bytes)
        data, _ = await until_closed(reader, within=5)
        writer.close()
    status, headers, body = response_of(data)
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json") and is_json_error(body)


def _serve_process(config_file: Path) -> subprocess.Popen[bytes]:
    env = inherited_env()
    return subprocess.Popen(
        [sys.executable, "-m", "sms_gateway", "serve", "--config", str(config_file)],
        cwd=ROOT,
        env={**env, "SHUTDOWN_DRAIN_SECONDS": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_sms_gateway_serve_closes_silent_connections_and_answers_garbage_in_json(tmp_path: Path) -> None:
    port = free_port()
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        f"http:\n  host: 127.0.0.1\n  port: {port}\n  headerTimeout: 0.5\nstore:\n  url: 'memory://'\n"
    )
    process = _serve_process(config_file)
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline and process.poll() is None, "the gateway did not start"
                    await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data, elapsed = await until_closed(reader, within=5)
        writer.close()
        assert data == b"" and elapsed < 2.5
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP at all\r\n\r\n")  # e.g. TLS
        data, _ = await until_closed(reader, within=5)
        writer.close()
        status, _, body = response_of(data)
        assert status == 400 and is_json_error(body)
    finally:
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=20)
    lines = [line for line in output.decode().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), output.decode()[-2000:]
    assert "Traceback" not in errors.decode()
    events = [json.loads(line) for line in lines]
    assert "http_head_timeout" in {event["event"] for event in events}
    assert not [event for event in events if event["level"] in ("error", "critical")]


# -- requests that do not decode --------------------------------------------------------------------------


def _open_rest_and_unsigned_twilio(config: Config) -> Config:
    """Control credentials on every tenant (so REST bodies are read) and Twilio signatures not checked (so a
    form is parsed whatever its bytes)."""
    tenants = tuple(
        dataclasses.replace(
            tenant,
            control_credentials=CONTROL,
            provider=dataclasses.replace(tenant.provider, validate_signature=False)
            if isinstance(tenant.provider, TwilioConfig)
            else tenant.provider,
        )
        for tenant in config.tenants
    )
    return dataclasses.replace(config, tenants=tenants)


WEBHOOKS = ("/sms.receiver/SmsRecv", "/sms.receiver/sinch", f"/sms.receiver/telesign/{TELESIGN}")
REST = ("/sms.gateway/messages", "/sms.gateway/sessions", "/sms.gateway/smsPipe", "/sms.gateway/test/conversation")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decode_is_a_400_in_json_on_every_route(tmp_path: Path, encoding: str) -> None:
    async with running_gateway(tmp_path, sinch=True, telesign=True, configure=_open_rest_and_unsigned_twilio) as gw:
        for path in WEBHOOKS + REST:
            content_type = FORM if path.endswith("SmsRecv") else "application/json"
            headers = {"Content-Type": content_type, "Content-Encoding": encoding, "Authorization": CONTROL_AUTH}
            async with gw.http.post(gw.url + path, data=b"this is not compressed", headers=headers) as response:
                body = await response.json()
                assert response.status == 400, (path, body)
                assert body["error"]["code"] == "badRequest" and "could not be read" in body["error"]["message"]
            async with gw.http.get(gw.url + "/health") as response:  # and the gateway goes on
                assert response.status == 200
        assert gw.watson.requests == [] and gw.twilio.messages == []


async def test_a_properly_compressed_body_is_accepted(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, configure=_open_rest_and_unsigned_twilio) as gw:
        form = f"MessageSid=SM{'1' * 32}&From=%2B15551230001&To=%2B15005550001&Body=hi&NumMedia=0"
        headers = {"Content-Type": FORM, "Content-Encoding": "gzip"}
        async with gw.http.post(
            gw.url + "/sms.receiver/SmsRecv", data=gzip.compress(form.encode()), headers=headers
        ) as response:
            assert response.status == 200, await response.text()
        await gw.wait_sent(1)


CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            FORM,
            "application/json",
            "multipart/form-data",
            "text/plain",
            "application/xml",
            "",
            "*/*",
            "application/json; charset=utf-16",
            "multipart/form-data; boundary=xyz",
            'multipart/form-data; boundary="a b"',
            "application/x-www-form-urlencoded; charset=foo",
            'application/json; charset="',
            "text/plain; charset=utf-8; charset=latin-1",
        ]
    ),
    st.builds(
        lambda media, charset: f"{media}; charset={charset}",
        st.sampled_from([FORM, "application/json", "multipart/form-data; boundary=xyz", "text/plain"]),
        st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=';\\"'), max_size=12),
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
# Codings aiohttp decodes itself (gzip, deflate) or passes through (anything it does not know); brotli and
# zstd are refused by aiohttp's parser before the app, in JSON only where `listen` serves the app.
ENCODINGS = st.sampled_from([None, "identity", "gzip", "x-gzip", "deflate", "br", "zstd", "bogus", "gzip, deflate", ""])
MULTIPART = (
    b'--xyz\r\nContent-Disposition: form-data; name="To"\r\nContent-Type: text/plain; charset=foo\r\n\r\n'
    b"+15005550001\r\n--xyz--\r\n"
)
JSON_BODIES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "tenantPhoneNumber",
                    "userPhoneNumber",
                    "smsMessage",
                    "smsMediaURL",
                    "userData",
                    "sessionTimeout",
                    "callbackURL",
                    "expirationInterval",
                    "app_id",
                    "message",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            MULTIPART,
            b"--xyz\r\nbroken",
            b"To=%2B15005550001&From=%ZZ&Body=%FF%FE",
            b'{"tenantPhoneNumber": "+15005550001", "userPhoneNumber": "+15551230001", "userData": {"n": 1e999}}',
            b"[1e999, -1e999]",
            b'{"a": NaN}',
            b"\xff\xfe{\x00}\x00",
        ]
    ),
    JSON_BODIES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(
        st.sampled_from(["To", "From", "Body", "MessageSid", "NumMedia", "MediaUrl0"]), st.text(max_size=20)
    ).map(lambda form: "&".join(f"{k}={v}" for k, v in form.items()).encode()),
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    path = draw(st.sampled_from(WEBHOOKS + REST + ("/sms.gateway/smsPipe/unknown/messages",)))
    headers = {"Content-Type": draw(CONTENT_TYPES)}
    body = draw(BODIES)
    encoding = draw(ENCODINGS)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if encoding in ("gzip", "x-gzip") and draw(st.booleans()):
            body = gzip.compress(body)
        elif encoding == "deflate" and draw(st.booleans()):
            body = zlib.compress(body)
    if draw(st.booleans()):
        headers["Authorization"] = CONTROL_AUTH
    return path, headers, body


def post(port: int, path: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
    """One request, its head and body in one write (as a provider's client sends a small request): a body that
    arrives after its head and fails to decode only at its end is a separate case, see
    test_a_body_aiohttp_never_finishes_decoding_is_cut_at_the_body_deadline."""
    head = [
        f"POST {path} HTTP/1.1",
        "Host: gateway",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.getheader("Content-Type") or "", response.read()


async def test_no_content_type_charset_encoding_or_body_gets_a_5xx(tmp_path: Path) -> None:
    """Property: whatever the content type, charset, content coding and body, a webhook or the REST API answers,
    and with a 2xx, 3xx or 4xx; a refusal always as the JSON error body."""
    async with running_gateway(tmp_path, sinch=True, telesign=True, configure=_open_rest_and_unsigned_twilio) as gw:
        port = int(gw.url.rsplit(":", 1)[1])

        @settings(
            max_examples=300,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(request=hostile_requests())
        def no_server_error(request: tuple[str, dict[str, str], bytes]) -> None:
            path, headers, body = request
            status, content_type, answer = post(port, path, headers, body)
            assert status < 500, (path, headers, body, status, answer)
            if status >= 400:  # every refusal is our JSON error, aiohttp's parser's own included
                assert content_type.startswith("application/json") and is_json_error(json.loads(answer)), answer

        await asyncio.to_thread(no_server_error)
        await gw.settle(timeout=30)


# -- JSON numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'"userData": {"score": 1e999}', "userData"),
        (b'"userData": {"scores": [1, -1e999]}', "userData"),
    ],
)
async def test_a_non_finite_number_is_a_400_naming_its_field(tmp_path: Path, body: bytes, field: str) -> None:
    raw = b'{"tenantPhoneNumber": "' + V1.encode() + b'", "userPhoneNumber": "' + USER.encode() + b'", ' + body + b"}"
    async with running_gateway(tmp_path, configure=_open_rest_and_unsigned_twilio) as gw:
        headers = {"Content-Type": "application/json", "Authorization": CONTROL_AUTH}
        async with gw.http.post(gw.url + "/sms.gateway/sessions", data=raw, headers=headers) as response:
            answer = await response.json()
        assert response.status == 400 and answer["error"]["field"] == field, answer
        assert gw.watson.requests == []


# -- peers that trickle their answers ---------------------------------------------------------------------


@asynccontextmanager
async def trickling_peer(interval: float = 0.05, count: int = 60) -> AsyncIterator[str]:
    """A server that answers 200 at once, then its JSON body one byte every `interval` seconds."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            for _ in range(count):
                await response.write(b" ")
                await asyncio.sleep(interval)
            await response.write(b"{}")
        except ConnectionError:
            pass
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trickle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_a_provider_trickling_its_answer_is_cut_at_connect_plus_read() -> None:
    settings_ = ProviderConfig(connect_timeout_ms=200, read_timeout_ms=300)
    async with trickling_peer() as url, aiohttp.ClientSession() as http:
        transport = ProviderTransport(settings_, http, "the provider")
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await transport.call("POST", url + "/messages", headers={}, data=b"{}")
        elapsed = time.monotonic() - started
    assert info.value.code == TIMEOUT and elapsed < 0.5 + 0.5  # the trickle alone would take 3 s
