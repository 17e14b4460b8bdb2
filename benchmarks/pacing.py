"""How fast replies leave one tenant number: a burst of users texting it at once, unthrottled and throttled.

    python -m benchmarks.pacing [--users 100] [--limit 10] [--store sqlite|redis] [--processes N]

The fakes (Twilio, Watson answering at once) run in this process; the gateway runs as `sms-gateway serve`
subprocess(es) with no `rateLimits`, on a SQLite file or a private redis-server started here. Three rounds of
`--users` users texting the tenant number at the same moment (a new user each, so nothing waits for its
conversation's order), each printing when the replies were taken by the fake Twilio, counted from the first
webhook posted:

    burst       the fake takes everything: time until the last reply is sent (no gateway-side limit)
    throttled   the fake answers 429 (20429, Retry-After: 1) to sends above --limit in any second: every reply
                sent once? the rate over the round, and over its second half (after the first cut)
    recovered   --quiet-seconds after the throttling stopped, the burst again: how far the pace has come back

Exit status 1 if a reply was lost or sent twice. Not part of the CI test run (tests/test_e2e_pacing.py runs
the same scenarios in one process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.crash import with_store
from tests.procs import GatewayProcess, World, fault_world, users


async def burst(
    world: World, processes: list[GatewayProcess], people: list[str], label: str, settle_timeout: float
) -> bool:
    """Every user texts at once (webhooks round robin over the processes); prints the round's figures."""
    first = len(world.twilio.sent_at)
    started = time.monotonic()
    results = await asyncio.gather(
        *(world.deliver(processes[i % len(processes)], f"{label} {i}", user) for i, user in enumerate(people))
    )
    posted = time.monotonic() - started
    chosen = [world.sent[sid] for sid, _ in results]
    answered, duplicated, lost, _ = await world.wait_answered(chosen, timeout=settle_timeout, quiet=1.0)
    stamps = sorted(t - started for t in world.twilio.sent_at[first:])
    refused = sum(1 for e in world.twilio.rejected if e.status == 429)
    world.twilio.rejected.clear()
    line = (
        f"  {label:<10} {len(people)} users: posted in {posted:.2f} s; replies sent {answered}, duplicated "
        f"{duplicated}, lost {len(lost)}; throttled sends {refused}"
    )
    if stamps:
        line += f"; last reply at {stamps[-1]:.2f} s, median {statistics.median(stamps):.2f} s"
    if len(stamps) > 3:
        line += f"; {(len(stamps) - 1) / max(stamps[-1] - stamps[0], 1e-9):.1f}/s overall"
        half = stamps[len(stamps) // 2 :]
        line += f", {(len(half) - 1) / max(half[-1] - half[0], 1e-9):.1f}/s over the second half"
    print(line, flush=True)
    return not duplicated and not lost


async def bench(args: argparse.Namespace, directory: Path, store_url: str) -> int:
    async with fault_world(directory / "world") as world:
        processes = [
            await world.gateways.start(f"gw{n}", store_url=store_url, log_level=args.log_level)
            for n in range(args.processes)
        ]
        print(
            f"pacing: {args.processes} gateway process(es) on {args.store}, no rateLimits, "
            f"{args.users} users per round",
            flush=True,
        )
        ok = await burst(world, processes, users(args.users, base=15550100000), "burst", args.settle_timeout)
        limit = world.twilio.limit_rate(args.limit, retry_after=1)
        print(f"  (the fake now takes at most {limit.per_second} sends in any second)", flush=True)
        ok &= await burst(world, processes, users(args.users, base=15550200000), "throttled", args.settle_timeout)
        world.twilio.rate_limit = None
        await asyncio.sleep(args.quiet_seconds)
        print(f"  (throttling stopped; {args.quiet_seconds:.0f} s later:)", flush=True)
        ok &= await burst(world, processes, users(args.users, base=15550300000), "recovered", args.settle_timeout)
    print(f"RESULT: {'OK' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pacing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--limit", type=int, default=10, help="sends per second the throttling fake takes")
    parser.add_argument(
        "--quiet-seconds", type=float, default=10.0, help="between the throttled round and the recovered one"
    )
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--processes", type=int, default=0, help="gateway processes (default 1; 2 on redis)")
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    args.processes = args.processes or (2 if args.store == "redis" else 1)
    directory = Path(tempfile.mkdtemp(prefix="sms-gw-pacing-"))
    try:
        return with_store(args.store, directory, "", lambda store_url: asyncio.run(bench(args, directory, store_url)))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)


if __name__ == "__main__":
    sys.exit(main())
