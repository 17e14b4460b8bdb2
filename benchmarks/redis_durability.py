"""What Redis's durability settings cost per acknowledgement: signed Twilio webhooks through the real HTTP path of
the tests' in-process gateway on a throw-away redis-server, once per setting (`appendonly no`; `appendonly yes`
with `appendfsync everysec`; with `appendfsync always`), turns held (the worker leases nothing), so each figure is
the webhook path alone: verify, one accepting write, answer. The three gateways (one per setting, each on its
own Redis) run side by side and take turns, round after round, so the machine's drift hits them alike.

    python -m benchmarks.redis_durability [--webhooks 400] [--senders 1,20] [--rounds 5]   # ~2 min

Prints, per setting and number of concurrent senders: the median of the rounds' acknowledgements per second, the
median of the per-round ratios to `appendonly no`, and the latency over all rounds (p50, p90, p99 in ms); before
and after, this disk's fsync latency (the floor under `appendfsync always`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.common import fsync_latency, latency_summary
from sms_gateway.keys import WORKER
from sms_gateway.logs import configure_logging

if TYPE_CHECKING:
    from tests.harness import Harness


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    appendonly: bool
    appendfsync: str


SETTINGS = (
    Setting("appendonly no", False, "everysec"),
    Setting("appendonly yes, appendfsync everysec", True, "everysec"),
    Setting("appendonly yes, appendfsync always", True, "always"),
)


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds, every acknowledgement of every round
    rates: list[float] = field(default_factory=list)  # acknowledgements per second, one per round


async def post_batch(gw: Harness, senders: int, webhooks: int, tag: str, samples: Samples) -> None:
    """`webhooks` signed webhooks from `senders` concurrent senders (each its own user), every one answered 200."""
    from tests.harness import inbound_form

    async def sender(n: int, count: int) -> None:
        user = f"+1555{n:07d}"
        for k in range(count):
            form = inbound_form(f"ack {tag} {k}", user=user)
            started = time.perf_counter()
            status, _, _ = await gw.post_form(form)
            samples.latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"webhook answered {status}")

    started = time.perf_counter()
    await asyncio.gather(*(sender(n, max(webhooks // senders, 1)) for n in range(senders)))
    samples.rates.append(senders * max(webhooks // senders, 1) / (time.perf_counter() - started))


async def measure(webhooks: int, senders: list[int], rounds: int, directory: Path) -> None:
    # The repository's test harness and throw-away Redis: run from the checkout.
    from sms_gateway.store.redis import RedisStore
    from tests.harness import running_gateway
    from tests.redis_server import RedisServer

    async with contextlib.AsyncExitStack() as stack:
        gateways: list[Harness] = []
        for n, setting in enumerate(SETTINGS):
            redis = stack.enter_context(
                RedisServer(directory / f"redis-{n}", appendonly=setting.appendonly, appendfsync=setting.appendfsync)
            )
            gw = await stack.enter_async_context(
                running_gateway(directory / f"gw-{n}", store_url=redis.url, sweep_interval=3600)
            )
            gw.app[WORKER].concurrency = 0  # turns held: no lease, no turn, only acknowledgements
            assert isinstance(gw.store, RedisStore) and gw.store.durability is not None
            gateways.append(gw)
            await post_batch(gw, 4, 40, "warm-up", Samples())
        samples = {(n, count): Samples() for n in range(len(SETTINGS)) for count in senders}
        for r in range(rounds):
            order = list(range(len(SETTINGS)))
            order = order[r % len(order) :] + order[: r % len(order)]  # each setting first in turn
            for count in senders:
                for n in order:
                    await post_batch(gateways[n], count, webhooks, f"{r}-{count}", samples[n, count])
        print(
            f"{'setting':38} {'mode':13} {'senders':>7} {'acks/s':>7} {'vs no AOF':>9} {'p50 ms':>7} "
            f"{'p90 ms':>7} {'p99 ms':>7}"
        )
        for count in senders:
            for n, setting in enumerate(SETTINGS):
                got = samples[n, count]
                ratios = [a / b for a, b in zip(got.rates, samples[0, count].rates, strict=True)]
                summary = latency_summary(got.latencies)
                store = gateways[n].store
                assert isinstance(store, RedisStore) and store.durability is not None
                print(
                    f"{setting.name:38} {store.durability.mode.value:13} {count:7} "
                    f"{statistics.median(got.rates):7.0f} {statistics.median(ratios):9.2f} "
                    f"{summary['p50']:7.2f} {summary['p90']:7.2f} {summary['p99']:7.2f}"
                )


def _senders(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of positive counts, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhooks", type=int, default=400, help="webhooks per setting and round (default 400)")
    parser.add_argument("--senders", type=_senders, default=[1, 20], help="concurrent senders (default 1,20)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every setting in turn (default 5)")
    args = parser.parse_args()
    configure_logging("error", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        floor = fsync_latency(Path(tmp))
        print(f"fsync of a 4 KiB write here before: p50 {floor['p50']} ms, p99 {floor['p99']} ms")
        asyncio.run(measure(args.webhooks, args.senders, args.rounds, Path(tmp)))
        floor = fsync_latency(Path(tmp))
        print(f"fsync of a 4 KiB write here afterwards: p50 {floor['p50']} ms, p99 {floor['p99']} ms")


if __name__ == "__main__":
    main()
