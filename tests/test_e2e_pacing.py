"""How replies are paced, through real HTTP: by default the gateway sets no limit of its own on a sending number
(the providers queue at its real throughput); a provider that throttles is followed, every reply still sent
exactly once; `rateLimits` still caps a number when configured."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sms_gateway.config.model import Config
from tests.fakes.scripting import RateLimit
from tests.harness import Harness, running_gateway
from tests.phones import Phone, SinchPhone, TeleSignPhone, TwilioPhone, wait_sent


def users(count: int) -> list[str]:
    return [f"+1555300{i:04d}" for i in range(count)]


async def text_at_once(phone: Phone, people: list[str]) -> float:
    """Every user texts the tenant at the same moment; when (monotonic) the first webhook was posted."""
    started = time.monotonic()
    await asyncio.gather(*(phone.send(f"hi {i}", user=user) for i, user in enumerate(people)))
    return started


def each_once(phone: Phone, people: list[str]) -> None:
    replies = Counter((sent.to, sent.text) for sent in phone.sent())
    assert replies == Counter({(user, f"You said: hi {i}"): 1 for i, user in enumerate(people)})


async def test_100_users_texting_one_number_at_once_get_their_replies_without_queueing(tmp_path: Path) -> None:
    """Nothing configured: no gateway-side limit per number, so 100 replies go as fast as the gateway sends
    (a 1/s per-number limit took 99 s)."""
    people = users(100)
    async with running_gateway(tmp_path) as gw:
        phone = TwilioPhone(gw)
        started = await text_at_once(phone, people)
        await wait_sent(phone, 100, timeout=60)
        elapsed = time.monotonic() - started
        print(f"\n100 users at once, fake Twilio taking everything: all 100 replies sent in {elapsed:.2f} s")
        assert elapsed < 10.0, f"100 replies took {elapsed:.1f} s"
        await gw.settle()
        each_once(phone, people)
        assert gw.metric("smsgw_sends_total", outcome="throttled", kind="sms") == 0


def phone_of(provider: str, gw: Harness) -> tuple[Phone, Callable[[int], RateLimit]]:
    if provider == "sinch":
        assert gw.sinch is not None
        return SinchPhone(gw), gw.sinch.limit_rate
    if provider == "telesign":
        assert gw.telesign is not None
        return TeleSignPhone(gw), gw.telesign.limit_rate
    return TwilioPhone(gw), gw.twilio.limit_rate


@pytest.mark.parametrize(("provider", "count"), [("twilio", 100), ("sinch", 40), ("telesign", 40)])
async def test_a_provider_throttling_above_10_per_second_gets_every_reply_once_at_about_its_rate(
    tmp_path: Path, provider: str, count: int
) -> None:
    """Each provider's fake answers its own rate-limit error (Twilio 429/20429, Sinch 429, TeleSign 429/3204,
    each with Retry-After: 1) to sends above 10 in any second. The gateway slows the number down to about that
    rate: nothing is lost, nothing is sent twice, no reply is dead-lettered for having been throttled (the
    tenants give up after 3 attempts)."""
    people = users(count)
    async with running_gateway(tmp_path, sinch=provider == "sinch", telesign=provider == "telesign") as gw:
        phone, limit_rate = phone_of(provider, gw)
        limit = limit_rate(10)
        await text_at_once(phone, people)
        await wait_sent(phone, count, timeout=90)
        await gw.settle(timeout=30)
        each_once(phone, people)
        span = limit.taken_at[-1] - limit.taken_at[0]
        rate = (count - 1) / span
        print(
            f"\n{provider}: {count} replies through a 10/s limit in {span:.1f} s ({rate:.1f}/s), "
            f"{limit.refused} sends throttled"
        )
        assert limit.refused > 0, "the provider did throttle"
        assert 5.0 <= rate <= 20.0, f"{rate:.1f} sends/s"
        assert await gw.store.dead_letters(10) == []
        assert gw.metric("smsgw_sends_total", outcome="throttled", kind="sms") == limit.refused


async def test_a_configured_cap_still_spaces_a_numbers_sends(tmp_path: Path) -> None:
    def capped(config: Config) -> Config:
        return dataclasses.replace(config, rate_limits={"long_code": 5.0})

    people = users(15)
    async with running_gateway(tmp_path, configure=capped) as gw:
        phone = TwilioPhone(gw)
        limit = gw.twilio.limit_rate(1000)  # only to note when each send was taken
        started = await text_at_once(phone, people)
        await wait_sent(phone, 15, timeout=30)
        elapsed = time.monotonic() - started
        each_once(phone, people)
        # 5 in the burst, then 5/s: the last ~2 s after the first.
        assert limit.taken_at[-1] - limit.taken_at[0] >= 1.5, "the cap spaced them"
        assert elapsed < 15.0
