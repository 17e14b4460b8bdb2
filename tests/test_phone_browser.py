"""`sms-gateway phone` in a real browser: Chromium (the system's package) driven by Playwright against the real
command in its own process, as a dialog author uses it.

Set PHONE_SCREENSHOT=path to also save a screenshot of the page at the end (the README's docs/phone.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from sms_gateway.engines.echo import GOODBYE
from tests.harness import free_port
from tests.procs import inherited_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PICTURE = Path(__file__).parent / "fixtures" / "phone" / "picture.png"
TIMEOUT_MS = 20_000  # generous: a loaded 2-core machine

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium from the system's packages (apt-get install chromium)"
)
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def phone_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("phone") / "phone.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sms_gateway", "phone", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=inherited_env(),
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url + "api/state", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"sms-gateway phone did not start: {log.read_text()}") from None
                    time.sleep(0.2)
            assert f"open {url}" in log.read_text()  # it tells the user where to go
            yield url
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0, log.read_text()  # stops cleanly, even with a page open


@pytest.fixture(scope="module")
def page(phone_url: str) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(phone_url)
            expect(page.locator("#connection")).to_have_text("live")
            yield page
        finally:
            browser.close()


def replies(page: Page) -> Locator:
    return page.locator(".bubble.to_user")


def last_turn(page: Page) -> Locator:
    return page.locator(".turn").last


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")  # Enter sends


def session_ids(phone_url: str) -> list[str]:
    with urllib.request.urlopen(phone_url + "api/state", timeout=5) as answer:
        state = json.load(answer)
    return [turn["state"]["smsSessionID"] for turn in state["turns"] if turn["user"] == state["users"][0]]


def test_a_dialog_with_text_pictures_options_a_failed_send_and_a_timeout(page: Page, phone_url: str) -> None:
    p = page
    # A text: the echo engine's reply arrives as a bubble, delivered.
    send(p, "hello")
    hello = replies(p).filter(has_text="You said: hello")
    expect(hello).to_have_count(1)
    expect(hello.locator(".status")).to_have_text("Delivered")

    # A long reply shows in the segments the phone receives it in (GSM-7: 153 characters each).
    send(p, "la " * 60)
    long_reply = replies(p).filter(has_text="You said: la la")
    expect(long_reply.locator(".marker")).to_have_text(["segment 1/2", "segment 2/2"])

    # A picture (an uploaded file) with a caption: the reply carries it back, rendered.
    p.get_by_label("Attach a picture").set_input_files(str(PICTURE))
    expect(p.get_by_role("img", name="picture 1 to send")).to_be_visible()
    send(p, "my picture")
    with_picture = replies(p).filter(has_text="Got your 1 media")
    expect(with_picture).to_have_count(1)
    image = with_picture.get_by_role("img")
    expect(image).to_have_attribute("src", re.compile(r"/media/"))
    p.wait_for_function(
        "() => [...document.querySelectorAll('.bubble.to_user img')].some(i => i.complete && i.naturalWidth > 0)",
        timeout=TIMEOUT_MS,
    )
    # ... and the inspector shows the engine got it as smsMedia, and the command it answered with.
    picture_turn = p.locator(".turn").filter(has_text='"my picture"')
    expect(picture_turn).to_contain_text('"smsMedia": [')
    expect(picture_turn).to_contain_text('"mediaContentType": "image/png"')
    expect(picture_turn).to_contain_text("smsActSendMedia")

    # Numbered options are buttons; tapping one answers with its number, which the gateway maps to the option.
    send(p, "options")
    option = p.get_by_role("button", name="Answer 2: Green")
    expect(option).to_be_visible()
    option.click()
    expect(replies(p).filter(has_text="You said: green")).to_have_count(1)

    # The provider refuses the next send: the reply shows failed, and the engine hears smsError next turn.
    fail = p.get_by_role("button", name="Make the provider fail the next send")
    fail.click()
    expect(p.locator("#fail-next")).to_have_attribute("aria-pressed", "true")
    send(p, "this reply will fail")
    failed = replies(p).filter(has_text="You said: this reply will fail")
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed.locator(".status")).to_contain_text("Failed")
    expect(p.locator("#fail-next")).to_have_attribute("aria-pressed", "false")
    send(p, "did it fail?")
    expect(last_turn(p)).to_contain_text('"did it fail?"')
    expect(last_turn(p)).to_contain_text('"smsError": {')
    expect(last_turn(p)).to_contain_text('"code": "21610"')

    # The session times out: the engine's goodbye arrives, and the next text starts a new session.
    p.get_by_role("button", name="Let the session time out").click()
    expect(replies(p).filter(has_text=GOODBYE)).to_have_count(1)
    send(p, "back again")
    expect(replies(p).filter(has_text="You said: back again")).to_have_count(1)
    ids = session_ids(phone_url)
    assert len(set(ids)) == 2 and ids[-1] != ids[0], ids

    # Another user has a phone of their own.
    p.get_by_role("tab", name="+15551230002").click()
    expect(replies(p)).to_have_count(0)
    send(p, "I am someone else")
    expect(replies(p).filter(has_text="You said: I am someone else")).to_have_count(1)
    p.get_by_role("tab", name="+15551230001").click()
    expect(replies(p).filter(has_text="You said: hello")).to_have_count(1)

    screenshot = os.environ.get("PHONE_SCREENSHOT")
    if screenshot:  # the README's picture: a short dialog on a phone of its own
        p.get_by_role("tab", name="+15551230003").click()
        send(p, "Hi!")
        expect(replies(p)).to_have_count(1)
        p.get_by_label("Attach a picture").set_input_files(str(PICTURE))
        send(p, "Here is the view from my window")
        expect(replies(p)).to_have_count(2)
        send(p, "options")
        expect(p.get_by_role("button", name="Answer 1: Red")).to_be_visible()
        p.locator(".turn").filter(has_text='"Here is the view from my window"').scroll_into_view_if_needed()
        p.get_by_label("Message", exact=True).focus()
        p.screenshot(path=screenshot)
