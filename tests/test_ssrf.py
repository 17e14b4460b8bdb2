"""The gateway never becomes a way into its own network: media URLs and pipe callbacks name hosts that callers
choose, so every name is resolved, only allowed addresses are connected to, and only the addresses that were checked
(no DNS-rebinding window), at every redirect hop. Names resolve through a fake resolver, never this machine's."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sms_gateway import pipes
from sms_gateway.config.model import Config, Credentials, MediaPolicy
from sms_gateway.jobs import RetryPolicy
from sms_gateway.keys import JOBS
from sms_gateway.media import MEDIA_URL_NOT_PUBLIC, media_destinations
from sms_gateway.netguard import AddressKind, DestinationPolicy, GuardedHttp, address_kind, refusal_in
from sms_gateway.pipes import callback_destinations
from tests.fakes.dns import PUBLIC_ADDRESS, FakeResolver, harness_resolver
from tests.fakes.vgw import VGW_HOST, allow_vgw_callbacks, basic_auth, serve_fake_vgw
from tests.fakes.watson import text_output
from tests.harness import USER, V1, V2, Harness, running_gateway

VGW_AUTH = ("voice-gateway", "s3cret-pipe-password")
CREDENTIALS = {"control_credentials": Credentials(*VGW_AUTH)}


# ------------------------------------------------------------------------------ where addresses lead


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", AddressKind.PUBLIC),
        ("2001:4860:4860::8888", AddressKind.PUBLIC),
        ("::ffff:8.8.8.8", AddressKind.PUBLIC),  # IPv4-mapped: the same host
        ("64:ff9b::808:808", AddressKind.PUBLIC),  # NAT64 well-known prefix to a public address
        ("2002:808:808::1", AddressKind.PUBLIC),  # 6to4 of a public address
        ("10.1.2.3", AddressKind.PRIVATE),
        ("172.16.0.1", AddressKind.PRIVATE),
        ("192.168.1.1", AddressKind.PRIVATE),
        ("100.64.0.1", AddressKind.PRIVATE),  # shared address space (CGNAT)
        ("fd12:3456::1", AddressKind.PRIVATE),
        ("fec0::1", AddressKind.PRIVATE),  # site-local, which Python calls global
        ("::8.8.8.8", AddressKind.PRIVATE),  # IPv4-compatible: deprecated, not routed
        ("::ffff:0:808:808", AddressKind.PRIVATE),  # IPv4-translated: not routed
        ("127.0.0.1", AddressKind.LOOPBACK),
        ("127.255.0.9", AddressKind.LOOPBACK),
        ("::1", AddressKind.LOOPBACK),
        ("::ffff:127.0.0.1", AddressKind.LOOPBACK),
        ("::7f00:1", AddressKind.LOOPBACK),  # IPv4-compatible loopback
        ("::ffff:0:7f00:1", AddressKind.LOOPBACK),  # IPv4-translated loopback
        ("64:ff9b::7f00:1", AddressKind.LOOPBACK),
        ("64:ff9b:1::7f00:1", AddressKind.LOOPBACK),  # local-use NAT64, /96 layout
        ("64:ff9b:1:7f00:0:100::", AddressKind.LOOPBACK),  # local-use NAT64, /48 layout
        ("2002:7f00:1::", AddressKind.LOOPBACK),  # 6to4
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", AddressKind.LOOPBACK),  # Teredo, client 127.0.0.1
        ("169.254.1.1", AddressKind.LINK_LOCAL),
        ("fe80::1", AddressKind.LINK_LOCAL),
        ("fe80::1%eth0", AddressKind.LINK_LOCAL),
        ("::ffff:169.254.1.1", AddressKind.LINK_LOCAL),
        ("169.254.169.254", AddressKind.METADATA),
        ("169.254.170.2", AddressKind.METADATA),
        ("fd00:ec2::254", AddressKind.METADATA),
        ("100.100.100.200", AddressKind.METADATA),
        ("168.63.129.16", AddressKind.METADATA),
        ("64:ff9b::a9fe:a9fe", AddressKind.METADATA),
        ("0.0.0.0", AddressKind.UNUSABLE),
        ("0.1.2.3", AddressKind.UNUSABLE),
        ("::", AddressKind.UNUSABLE),
        ("224.0.0.1", AddressKind.UNUSABLE),
        ("ff02::1", AddressKind.UNUSABLE),
        ("255.255.255.255", AddressKind.UNUSABLE),
        ("240.0.0.1", AddressKind.UNUSABLE),
    ],
)
def test_where_an_address_leads(address: str, kind: AddressKind) -> None:
    assert address_kind(ipaddress.ip_address(address)) is kind


# ------------------------------------------------------------------------------ the guarded session, for real


@dataclasses.dataclass
class Server:
    port: int
    hosts: list[str]  # the Host header of every request that arrived

    def url(self, host: str, path: str = "/ok") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def server(aiohttp_server: Any) -> AsyncIterator[Server]:
    """A web server on loopback, standing for something inside the gateway's network."""
    hosts: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        hosts.append(request.host)
        return web.Response(text="inside")

    async def redirect(request: web.Request) -> web.Response:
        hosts.append(request.host)
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/redirect", redirect)
    test_server = await aiohttp_server(app, host="127.0.0.1")
    yield Server(test_server.port, hosts)


# Names the tests resolve: to loopback (where the server is), to a cloud's metadata address, to both kinds.
DNS_TABLE: dict[str, str | tuple[str, ...]] = {
    "inside.example.com": "127.0.0.1",
    "allowed.example.com": "127.0.0.1",
    "mixed.example.com": ("10.9.9.9", "127.0.0.1"),
    "meta.example.com": "169.254.169.254",
    "metadata.google.internal": "127.0.0.1",
    "localhost": ("127.0.0.1", "::1"),
}


@pytest.fixture
async def guarded() -> AsyncIterator[GuardedHttp]:
    """The media session: public addresses only, except that the name allowed.example.com is allowed."""
    policy = DestinationPolicy.allowing(["allowed.example.com", "meta.example.com"])
    async with GuardedHttp(policy, FakeResolver(DNS_TABLE, default=PUBLIC_ADDRESS)) as http:
        yield http


async def refused(http: GuardedHttp, url: str, **options: Any) -> str:
    """The refusal that a GET of `url` meets (the test fails if the request is not refused by the policy)."""
    with pytest.raises(aiohttp.ClientError) as info:
        async with http.session.get(url, timeout=aiohttp.ClientTimeout(total=5), **options) as response:
            await response.read()
    refusal = refusal_in(info.value)
    assert refusal is not None, f"{url}: not refused by the policy but {info.value!r}"
    return str(refusal)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("inside.example.com", "resolves to a loopback address"),
        ("INSIDE.example.com.", "resolves to a loopback address"),
        ("localhost", "resolves to a loopback address"),
        ("127.0.0.1", "is a loopback address"),
        ("127.0.0.1.", "not an IP address in standard notation"),
        ("[::ffff:127.0.0.1]", "is a loopback address"),
        ("[::7f00:1]", "is a loopback address"),
        ("[::ffff:0:7f00:1]", "is a loopback address"),
        ("[64:ff9b:1::7f00:1]", "is a loopback address"),
        ("2130706433", "not an IP address in standard notation"),
        ("127.1", "not an IP address in standard notation"),
        ("0x7f.1", "non-standard notation"),
        ("0177.0.0.1", "not an IP address in standard notation"),
        ("meta.example.com", "resolves to a cloud metadata address"),  # listed by name, still never
        ("metadata.google.internal", "is a cloud metadata service"),  # refused before any lookup
    ],
)
async def test_the_guarded_session_never_reaches_loopback(
    server: Server, guarded: GuardedHttp, host: str, reason: str
) -> None:
    assert reason in await refused(guarded, server.url(host))
    assert server.hosts == [], "nothing arrived"


async def test_an_allowed_name_is_reached_with_its_own_host_header(server: Server, guarded: GuardedHttp) -> None:
    async with guarded.session.get(server.url("allowed.example.com")) as response:
        assert response.status == 200 and await response.text() == "inside"
    assert server.hosts == [f"allowed.example.com:{server.port}"], "the name, not the pinned address"


async def test_every_redirect_hop_is_checked(server: Server, guarded: GuardedHttp) -> None:
    for target in (server.url("inside.example.com"), server.url("127.0.0.1"), server.url("[::ffff:7f00:1]")):
        hop = server.url("allowed.example.com", f"/redirect?to={target}")
        assert "loopback" in await refused(guarded, hop)  # aiohttp following the redirect itself
    assert server.hosts == [f"allowed.example.com:{server.port}"] * 3, "only the allowed first hops arrived"


async def test_the_address_connected_is_the_address_checked(server: Server) -> None:
    """DNS rebinding: the name is public when checked, loopback when the connection resolves it again."""
    dns = FakeResolver(default=PUBLIC_ADDRESS)
    async with GuardedHttp(DestinationPolicy(), dns) as http:
        assert await http.refusal("rebind.example.com") is None
        dns.point("rebind.example.com", "127.0.0.1")
        assert "loopback" in await refused(http, server.url("rebind.example.com"))
    assert server.hosts == []


async def test_only_the_allowed_addresses_of_a_name_are_connected_to(server: Server) -> None:
    policy = DestinationPolicy.allowing(["127.0.0.0/8"])
    async with GuardedHttp(policy, FakeResolver(DNS_TABLE)) as http:
        assert await http.refusal("mixed.example.com") is None
        assert await http.refusal("mixed.example.com", every_address=True) == "resolves to a private address"
        async with http.session.get(server.url("mixed.example.com")) as response:  # 10.9.9.9 dropped
            assert response.status == 200


async def test_the_guarded_session_goes_through_no_proxy(server: Server, guarded: GuardedHttp) -> None:
    proxy = server.url("127.0.0.1", "")
    assert "directly" in await refused(guarded, "http://example.com/", proxy=proxy)
    assert server.hosts == []


async def test_allowing_private_media_hosts_still_refuses_metadata(server: Server) -> None:
    """`media.allowPrivateHosts` is for local testing: loopback then works, a cloud's metadata service never."""
    async with GuardedHttp(media_destinations(MediaPolicy(allow_private_hosts=True)), FakeResolver(DNS_TABLE)) as http:
        async with http.session.get(server.url("inside.example.com")) as response:
            assert response.status == 200
        assert "cloud metadata" in await refused(http, "http://meta.example.com/latest/meta-data/")
        assert "link-local" in await refused(http, "http://[fe80::1]/")


# ------------------------------------------------------------------------------ pipe callbacks


async def create_pipe(gw: Harness, callback: str, user: str = USER) -> tuple[int, Any]:
    body = {"tenantPhoneNumber": V1, "userPhoneNumber": user, "callbackURL": callback}
    async with gw.http.post(
        f"{gw.url}/sms.gateway/smsPipe", json=body, headers={"Authorization": basic_auth(*VGW_AUTH)}
    ) as response:
        return response.status, await response.json()


def with_pipes(hosts: tuple[str, ...] = (), *, allow_private: bool = False) -> Any:
    def configure(config: Config) -> Config:
        return dataclasses.replace(config, pipe_allowed_callback_hosts=hosts, allow_private_callbacks=allow_private)

    return configure


def callback_names() -> FakeResolver:
    dns = harness_resolver()
    for name, addresses in {
        "vgw.corp.example": "10.1.2.3",
        "vgw.local.example": "127.0.0.5",
        "imds.example": "169.254.169.254",
        "v6imds.example": "fd00:ec2::254",
    }.items():
        dns.point(name, addresses)
    return dns


REFUSED_BY_DEFAULT = {
    "http://127.0.0.1:9080/cb": "host 127.0.0.1 is a loopback address",
    "http://localhost:9080/cb": "host localhost resolves to a loopback address",
    "http://[::1]/cb": "is a loopback address",
    "http://[::ffff:127.0.0.1]/cb": "is a loopback address",
    "http://[::7f00:1]/cb": "is a loopback address",
    "http://10.1.2.3/cb": "is a private address",
    "http://vgw.corp.example/cb": "resolves to a private address",
    "http://169.254.169.254/latest/meta-data/": "is a cloud metadata address",
    "http://imds.example/latest/meta-data/": "resolves to a cloud metadata address",
    "http://[fd00:ec2::254]/latest/meta-data/": "is a cloud metadata address",
    "http://metadata.google.internal./computeMetadata/v1/": "is a cloud metadata service",
    "http://169.254.10.10/cb": "is a link-local address",
    "http://[fe80::1%25eth0]/cb": "is a link-local address",
    "http://0.0.0.0:9080/cb": "unspecified",
    "http://2130706433/cb": "not an IP address in standard notation",
    "http://0x7f.1/cb": "non-standard notation",
}


async def test_pipes_refuse_callbacks_into_the_gateways_network(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, tenant_overrides=CREDENTIALS, resolver=callback_names()) as gw:
        for callback, reason in REFUSED_BY_DEFAULT.items():
            status, answer = await create_pipe(gw, callback)
            assert status == 400 and answer["error"]["field"] == "callbackURL", (callback, answer)
            assert answer["error"]["message"].startswith("callbackURL: "), answer
            assert reason in answer["error"]["message"], (callback, answer)
        assert "pipes.allowedCallbackHosts" in (await create_pipe(gw, "http://127.0.0.1/cb"))[1]["error"]["message"]
        assert await gw.store.pipe_for(V1, USER, 0.0) is None, "nothing stored"
        assert (await create_pipe(gw, "https://vgw.example.com/cb"))[0] == 201, "public hosts are fine"


async def test_the_operator_allows_private_networks_or_listed_hosts_never_metadata(tmp_path: Path) -> None:
    allowed = ("127.0.0.1", "vgw.local.example", "169.254.169.254", "fe80::/10", "imds.example")
    configure = with_pipes(allowed, allow_private=True)
    async with running_gateway(
        tmp_path, tenant_overrides=CREDENTIALS, resolver=callback_names(), configure=configure
    ) as gw:
        for callback in (
            "http://10.1.2.3/cb",
            "http://vgw.corp.example/cb",  # allowPrivateCallbacks
            "http://127.0.0.1:9080/cb",
            "http://[::ffff:127.0.0.1]/cb",
            "http://localhost/cb",  # listed
            "http://vgw.local.example:9080/cb",
        ):  # a listed name, whatever loopback address it has
            status, answer = await create_pipe(gw, callback)
            assert status == 201, (callback, answer)
        for callback in (
            "http://[::1]/cb",
            "http://169.254.169.254/",
            "http://imds.example/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/",
        ):
            status, answer = await create_pipe(gw, callback)
            assert status == 400 and answer["error"]["field"] == "callbackURL", (callback, answer)
    policy = callback_destinations(dataclasses.replace(Config(), pipe_allowed_callback_hosts=allowed))
    assert policy.address_problem("10.1.2.3", ipaddress.ip_address("10.1.2.3")) is not None, "private needs the flag"


@pytest.fixture
def one_relay_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Retries would be quick here; a refused callback must not be retried at all.
    monkeypatch.setattr(pipes, "RELAY_POLICY", RetryPolicy(max_attempts=5, backoff_base=0.05, backoff_cap=0.1))


async def test_a_callback_host_that_moves_into_the_network_gets_no_relay(
    tmp_path: Path, one_relay_attempt: None
) -> None:
    """DNS rebinding against a pipe: public when the pipe is created, loopback when the relay is sent."""
    dns = harness_resolver()
    dns.point("vgw.rebind.example", PUBLIC_ADDRESS)
    async with (
        running_gateway(tmp_path, tenant_overrides=CREDENTIALS, resolver=dns) as gw,
        serve_fake_vgw() as vgw,
    ):
        await vgw.start_call(gw.http, gw.url, V1, USER, auth=VGW_AUTH, callback_host="vgw.rebind.example")
        dns.point("vgw.rebind.example", VGW_HOST)
        await gw.sms("my card number is ...")
        await gw.settle()
        assert vgw.received == [], "nothing reached the address behind the new answer"
        [dead] = await gw.store.dead_letters(10)
        assert dead.kind == pipes.PIPE_RELAY and dead.attempts == 1, "refused at once, not retried"
        assert dead.last_error is not None and "callbackURL refused" in dead.last_error
        assert "vgw.rebind.example resolves to a loopback address" in dead.last_error
        assert gw.watson.requests == [], "the caller's message is kept for the call, not given to the engine"


async def test_a_refused_relay_is_checked_again_when_replayed(tmp_path: Path, one_relay_attempt: None) -> None:
    """Voice Gateway beside the gateway, its name listed by address: a poisoned record is refused, even though
    listed hosts may be private; once the record is right again, the replayed relay arrives."""
    dns = harness_resolver()
    dns.point("vgw.beside.example", VGW_HOST)
    async with (
        running_gateway(tmp_path, tenant_overrides=CREDENTIALS, resolver=dns, configure=allow_vgw_callbacks) as gw,
        serve_fake_vgw() as vgw,
    ):
        call = await vgw.start_call(gw.http, gw.url, V1, USER, auth=VGW_AUTH, callback_host="vgw.beside.example")
        dns.point("vgw.beside.example", "169.254.169.254")
        await gw.sms("are you there?")
        await gw.settle()
        [dead] = await gw.store.dead_letters(10)
        assert dead.attempts == 1 and dead.last_error is not None and "cloud metadata" in dead.last_error
        dns.point("vgw.beside.example", VGW_HOST)
        assert await gw.store.replay_dead_letter(dead.job_id, 0.0)
        gw.app[JOBS].notify()
        relays = await vgw.wait_relays(1)
        assert relays[0]["smsMessage"] == "are you there?" and relays[0]["smsPipeID"] == call.pipe_id


# ------------------------------------------------------------------------------ media the provider would fetch


async def test_engine_media_on_private_names_never_reach_the_provider(tmp_path: Path) -> None:
    dns = harness_resolver()
    dns.point("intranet.example.com", "10.0.0.5")
    dns.point("printer.example.com", "::ffff:192.168.1.20")
    private = ["https://intranet.example.com/payroll.pdf", "https://printer.example.com/scan.png"]
    good = "https://cdn.example.com/map.png"
    async with running_gateway(tmp_path, resolver=dns) as gw:  # the size check is off: no HEAD at all
        assert not gw.config.media.check_size
        gw.watson.v1_dialog = lambda t, ctx: {
            "output": text_output(
                "Here", smsAction={"command": "smsActSendMedia", "parameters": {"mediaURL": [*private, good]}}
            )
        }
        await gw.sms("send me the files")
        sent = await gw.wait_sent(1)
        await gw.settle()
        assert [m.media_urls for m in sent] == [[good]]
        gw.watson.v1_dialog = lambda t, ctx: {"output": text_output("ok")}
        await gw.sms("got it")
        await gw.settle()
        error = gw.watson.of_kind("v1")[-1].json["context"]["smsError"]
        assert error["code"] == MEDIA_URL_NOT_PUBLIC and error["mediaURL"] in private


async def test_image_answers_on_private_names_are_not_sent(tmp_path: Path) -> None:
    dns = harness_resolver()
    dns.point("grafana.example.com", "127.0.0.1")
    async with running_gateway(tmp_path, resolver=dns) as gw:
        gw.watson.v2_dialog = lambda text, ud: {
            "output": {
                "generic": [
                    {"response_type": "text", "text": "Your dashboard"},
                    {"response_type": "image", "source": "https://grafana.example.com/render/d/1.png"},
                ]
            }
        }
        await gw.sms("dashboard", tenant=V2)
        sent = await gw.wait_sent(1)
        await gw.settle()
        assert [(m.body, m.media_urls) for m in sent] == [("Your dashboard", [])]


async def test_rest_sends_refuse_media_on_private_names(tmp_path: Path) -> None:
    dns = harness_resolver()
    dns.point("intranet.example.com", "10.0.0.5")
    async with running_gateway(tmp_path, tenant_overrides=CREDENTIALS, resolver=dns) as gw:
        headers = {"Authorization": basic_auth(*VGW_AUTH)}
        body = {"tenantPhoneNumber": V1, "userPhoneNumber": USER, "smsMediaURL": "https://intranet.example.com/a.png"}
        async with gw.http.post(f"{gw.url}/sms.gateway/messages", json=body, headers=headers) as response:
            answer = await response.json()
            assert response.status == 400 and answer["error"]["code"] == "nothingToSend", answer
        assert [d["code"] for d in answer["error"]["details"]] == [MEDIA_URL_NOT_PUBLIC]
        assert "resolves to a private address" in answer["error"]["details"][0]["message"]
        async with gw.http.post(
            f"{gw.url}/sms.gateway/messages", json={**body, "smsMessage": "hi"}, headers=headers
        ) as response:
            answer = await response.json()
            assert response.status == 202 and [w["code"] for w in answer["warnings"]] == [MEDIA_URL_NOT_PUBLIC]
        await gw.wait_sent(1)
        await gw.settle()
        assert [(m.body, m.media_urls) for m in gw.twilio.messages] == [("hi", [])]
