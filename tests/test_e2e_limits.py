"""SPEC 2.5 through the whole gateway: Twilio's MMS limits are enforced before anything is sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from aiohttp import web

from sms_gateway.config.model import Config
from tests.fakes.watson import text_output
from tests.harness import USER, running_gateway

MB = 1024 * 1024


def send_media(urls: list[str], text: str = "Here you go") -> Any:
    return lambda t, ctx: {
        "output": text_output(text, smsAction={"command": "smsActSendMedia", "parameters": {"mediaURL": urls}})
    }


async def test_twelve_media_become_two_mms_with_text_on_the_first(tmp_path: Path) -> None:
    urls = [f"https://cdn.example.com/p/{i}.jpg" for i in range(12)]
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = send_media(urls)
        await gw.sms("all photos")
        sent = await gw.wait_sent(2)
        await gw.settle()
        assert [len(m.media_urls) for m in sent] == [10, 2]
        assert sent[0].body == "Here you go" and not sent[1].body
        assert sent[0].media_urls + sent[1].media_urls == urls, "in order, each once"


async def test_private_and_non_http_media_are_refused_and_reported(tmp_path: Path) -> None:
    urls = [
        "http://127.0.0.1/admin.png",
        "http://10.0.0.7/x.jpg",
        "file:///etc/passwd",
        "https://cdn.example.com/ok.png",
        "http://[::1]/y.gif",
        "http://localhost/z.gif",
    ]
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = send_media(urls)
        await gw.sms("pics")
        sent = await gw.wait_sent(1)
        await gw.settle()
        assert len(gw.twilio.messages) == 1
        assert sent[0].media_urls == ["https://cdn.example.com/ok.png"]
        gw.watson.v1_dialog = lambda t, ctx: {"output": text_output("noted")}
        await gw.sms("next")
        await gw.settle()
        error = gw.watson.of_kind("v1")[-1].json["context"]["smsError"]
        assert error["code"] in ("mediaURLNotPublic", "mediaURLInvalid")


async def test_long_text_is_split_at_word_boundaries(tmp_path: Path) -> None:
    words = " ".join(f"word{i:04d}" for i in range(400))  # 3,599 characters
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = lambda t, ctx: {"output": text_output(words)}
        await gw.sms("tell me everything")
        await gw.wait_sent(3)
        await gw.settle()
        bodies = [m.body or "" for m in gw.twilio.messages]
        assert len(bodies) == 3 and all(len(b) <= 1600 for b in bodies)
        assert " ".join(bodies) == words
        assert all(not b.startswith(" ") and not b.endswith(" ") for b in bodies)


async def test_users_outside_mms_countries_get_links_in_text(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        gw.watson.v1_dialog = send_media(["https://cdn.example.com/map.png"], text="Our office:")
        await gw.sms("where are you?", user="+447700900123")
        sent = await gw.wait_sent(1)
        assert sent[0].media_urls == []
        assert sent[0].body == "Our office:\nhttps://cdn.example.com/map.png"
        assert sent[0].to == "+447700900123"


async def test_five_megabytes_per_message_learned_with_head(tmp_path: Path, aiohttp_server: Any) -> None:
    sizes = {"a": 3 * MB, "b": 3 * MB, "c": 1 * MB, "huge": 6 * MB}

    async def media(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.Response(headers={"Content-Length": str(sizes[name]), "Content-Type": "image/jpeg"})

    app = web.Application()
    app.router.add_route("HEAD", "/m/{name}", media)
    server = await aiohttp_server(app)
    base = str(server.make_url("/m/"))

    def sized(config: Config) -> Config:
        # The test's media server is on loopback, which only this setting lets through.
        media_policy = dataclasses.replace(config.media, check_size=True, allow_private_hosts=True)
        return dataclasses.replace(config, media=media_policy)

    urls = [base + name for name in ("a", "b", "c", "huge")]
    async with running_gateway(tmp_path, configure=sized) as gw:
        gw.watson.v1_dialog = send_media(urls)
        await gw.sms("send them")
        sent = await gw.wait_sent(2)
        await gw.settle()
        assert [m.media_urls for m in sent] == [[base + "a"], [base + "b", base + "c"]]
        gw.watson.v1_dialog = lambda t, ctx: {"output": text_output("ok")}
        await gw.sms("and the big one?")
        await gw.settle()
        error = gw.watson.of_kind("v1")[-1].json["context"]["smsError"]
        assert error["code"] == "mediaTooLarge" and error["mediaURL"] == base + "huge"
        assert all(m.to == USER for m in sent)
