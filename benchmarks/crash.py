"""The crash test at scale: thousands of signed webhooks while the gateway is killed with SIGKILL and restarted.

    python -m benchmarks.crash --messages 5000 [--store sqlite|redis] [--kills 3] [--processes N]

The fakes (Twilio, Watson) run in this process; the gateway runs as `sms-gateway serve` subprocess(es) on a
SQLite file or a private redis-server (appendonly) started here. Messages from `--users` users are posted
`--concurrency` at a time to a live gateway process (round robin); `--kills` times during the run one process
is killed with SIGKILL and restarted on the same port and store after `--downtime` seconds. Whatever got no
200 is delivered again afterwards, as Twilio's retry would. Then it waits for quiescence (every accepted
message answered and nothing sent for `--quiet` seconds, or `--settle-timeout`) and prints:

    accepted    messages that got a 200 (at least once)
    answered    messages whose reply ("You said: <text>") reached the fake Twilio
    duplicated  messages whose reply was sent more than once
    lost        accepted but never answered (and how many of them are still queued in the store)

Exit status 1 if anything was lost or duplicated, 0 otherwise. Not part of the CI test run (the fault tests
in tests/test_faults*.py run the same scenarios small).

    python -m benchmarks.crash --takeover 5 [--store sqlite|redis] [--processes 1|2] [--other-host]

measures instead how soon the turns a killed process was running run again, with the gateway's default lease
(30 s): `--takeover` rounds of `--in-flight` users' turns held in the engine, kill -9 of a process, the engine
let go. One process (SQLite, or Redis with `--processes 1`): restarted at once on the same store; the figure is
from its `/ready` to the last interrupted turn reaching the engine again. Two processes on Redis: the survivor
takes over; the figure is from the kill to the last of the dead one's turns reaching the engine again
(`--other-host`: the killed one runs as `tests.elsewhere`, so the survivor cannot see its pid and waits for its
heartbeat to run out, as on two hosts). Also: every user answered once (exit status 1 otherwise).

    python -m benchmarks.crash --takeover 5 --waiting-sends [--store sqlite|redis] [--send-rate 2]

measures the same for sends: the tenant's number capped at `--send-rate` messages/s (`rateLimits`), `--in-flight`
users' replies at once (by default the cap's burst and 4 more), the provider holding the burst 2 s (in flight),
the others waiting for their slots, kill -9 of the one process once the burst reached the provider, restart on
the same store (one process, whatever `--processes` says). The figure is
from `/ready` to the last reply that had not reached the provider at the kill; the ones in flight are looked up
once they have settled (2 x the provider's 5 s read timeout). Every reply sent once (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

from sms_gateway.store.base import Store
from sms_gateway.store.factory import create_store
from tests.harness import V1
from tests.procs import GatewayProcess, World, fault_world, users
from tests.redis_server import RedisServer, redis_available
from tests.waiting import until


@dataclass
class Run:
    args: argparse.Namespace
    world: World
    processes: list[GatewayProcess]
    store_url: str
    posted: int = 0
    kills: list[tuple[float, str]] = field(default_factory=list)
    retry: set[str] = field(default_factory=set)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)

    restarting: set[str] = field(default_factory=set)

    def live(self, n: int) -> GatewayProcess | None:
        """A process to post to (one being restarted is not ready to listen yet)."""
        alive = [p for p in self.processes if p.alive and p.name not in self.restarting]
        return alive[n % len(alive)] if alive else None


async def post_all(run: Run, forms: list[dict[str, str]]) -> None:
    """Post every form; one that gets no 200 (the process is down, or 503) is tried again a little later at the
    back of the queue, as Twilio's retry would, so the run keeps going through the kills."""
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for form in forms:
        queue.put_nowait(form)
    remaining = len(forms)

    async def worker(n: int) -> None:
        nonlocal remaining
        while remaining:
            try:
                form = queue.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.05)
                continue
            target = run.live(n + run.posted)
            status = await run.world.post(target, form, timeout=20) if target is not None else None
            run.posted += 1
            if status == 200:
                remaining -= 1
                run.progress.set()
            else:
                run.retry.add(form["MessageSid"])
                await asyncio.sleep(0.2)
                queue.put_nowait(form)

    await asyncio.gather(*(worker(n) for n in range(run.args.concurrency)))


async def killer(run: Run, total: int) -> None:
    """Kill -9 a process at evenly spaced points of the run (by messages accepted), restart it after the
    downtime."""
    rng = random.Random(run.args.seed)
    for k in range(run.args.kills):
        threshold = total * (k + 1) / (run.args.kills + 1)
        while len(run.world.accepted) < threshold:
            run.progress.clear()
            await run.progress.wait()
        victim = run.processes[k % len(run.processes)]
        await asyncio.sleep(rng.uniform(0, 0.2))  # land anywhere in a turn, not always at a post boundary
        run.restarting.add(victim.name)
        victim.kill()
        run.kills.append((time.monotonic() - run.started, victim.name))
        print(
            f"  t={time.monotonic() - run.started:6.1f}s  kill -9 {victim.name} with {len(run.world.accepted)}"
            f" accepted, {len(run.world.twilio.messages)} replies sent",
            flush=True,
        )
        await asyncio.sleep(run.args.downtime)
        await victim.restart()
        run.restarting.discard(victim.name)


async def store_pending(url: str) -> tuple[int, int]:
    store = create_store(url)
    await store.open()
    try:
        return await store.pending_inbound_count(), await store.pending_job_count()
    finally:
        await store.close()


async def bench(args: argparse.Namespace, directory: Path, store_url: str) -> int:
    async with fault_world(directory / "world") as world:
        processes = [
            world.gateways.spawn(
                f"gw{i}",
                store_url=store_url,
                log_level=args.log_level,
                worker_concurrency=args.worker_concurrency,
                lease_seconds=args.lease_seconds,
            )
            for i in range(args.processes)
        ]
        for process in processes:
            await process.restart()
        run = Run(args, world, processes, store_url)
        people = users(args.users)
        per_user = -(-args.messages // args.users)
        forms: list[dict[str, str]] = []
        for k in range(per_user):  # interleaved: each user's messages in order, all users at once
            for u, user in enumerate(people):
                if len(forms) < args.messages:
                    forms.append(world.message(f"u{u} m{k}", user))
        print(
            f"crash benchmark: store={store_url.split(':')[0]} processes={args.processes} "
            f"messages={len(forms)} users={args.users} kills={args.kills} concurrency={args.concurrency}",
            flush=True,
        )
        kill_task = asyncio.create_task(killer(run, len(forms)))
        await post_all(run, forms)
        await kill_task
        posted_at = time.monotonic() - run.started
        for process in processes:
            if not process.alive:
                await process.restart()
        unaccepted = await world.redeliver(
            lambda n: run.live(n) or processes[0], sorted(run.retry), attempts=args.redeliver_rounds, pause=0.5
        )
        answered, duplicated, lost, doubled = await world.wait_answered(timeout=args.settle_timeout, quiet=args.quiet)
        elapsed = time.monotonic() - run.started
        inbound_left, jobs_left = await store_pending(store_url)
        statuses = Counter({("no answer" if s == 0 else str(s)): n for s, n in world.statuses.items()})
        accepted = sum(1 for sid in world.sent if sid in world.accepted)
        failed_replies = sum(n for (_, body), n in world.twilio.replies().items() if not body.startswith("You said"))
        print(
            f"  webhooks posted {sum(statuses.values())}: {dict(statuses)}; messages re-delivered {len(run.retry)}"
            f" (never accepted: {len(unaccepted)})"
        )
        print(
            f"  engine turns {len(world.watson.turn_texts())}, provider sends {len(world.twilio.messages)}"
            f" (failure messages {failed_replies}), provider errors {len(world.twilio.rejected)}"
        )
        print(
            f"  posting took {posted_at:.1f}s, all in {elapsed:.1f}s;"
            f" kills at {', '.join(f'{t:.1f}s ({name})' for t, name in run.kills) or '-'}"
        )
        print(f"  accepted   {accepted}")
        print(f"  answered   {answered}")
        print(f"  duplicated {duplicated}" + (f"  e.g. {[m.text for m in doubled[:5]]}" if doubled else ""))
        print(
            f"  lost       {len(lost)}"
            + (
                f"  (still queued in the store: {inbound_left} inbound, {jobs_left} jobs;"
                f" e.g. {[m.text for m in lost[:5]]})"
                if lost
                else ""
            )
        )
        if args.show_logs:
            for process in processes:
                print(f"--- {process.name} log tail ---\n{process.log_tail()}")
        ok = not lost and not duplicated and not unaccepted
        print(
            f"RESULT: {'OK' if ok else 'FAIL'} (lost {len(lost)}, duplicated {duplicated}, "
            f"never accepted {len(unaccepted)})",
            flush=True,
        )
        return 0 if ok else 1


def leased_by(store_url: str, pid: int | None) -> set[str]:
    """Texts of the unfinished inbound messages leased by process `pid` in Redis (owner "<pid>-<hex>")."""
    client = redis_sync.Redis.from_url(store_url.split("?")[0], decode_responses=True)
    try:
        found = set()
        for key in client.scan_iter("smsgw:in:msg:*", count=1000):
            owner, done, payload = client.hmget(key, "owner", "done", "payload")
            if owner and not done and payload and str(owner).split("-", 1)[0] == str(pid):
                found.add(str(json.loads(payload)["text"]))
        return found
    finally:
        client.close()


async def takeover_round(
    args: argparse.Namespace, world: World, processes: list[GatewayProcess], store_url: str, round_: int
) -> tuple[float, float, int, bool]:
    """One kill; (seconds to the takeover as described in the module's doc, the same from the kill, turns cut
    short, answered once)."""
    victim = processes[0]
    texts = [f"round {round_} turn {i}" for i in range(args.in_flight)]
    people = users(args.in_flight, base=15550100000 + 1000 * round_)
    world.watson.hold(120)
    statuses = await world.deliver_each(processes, texts, people)
    assert statuses == [200] * len(texts), statuses
    await world.wait_turns(texts, times=1, timeout=30)
    pid = victim.pid
    victim.kill()
    killed = time.monotonic()
    cut_short = sorted(leased_by(store_url, pid)) if len(processes) > 1 else texts
    world.watson.release()
    if len(processes) == 1:
        await victim.restart()
        started = time.monotonic()  # /ready answered (within the 50 ms its poll takes)
    else:
        started = killed
    again = await world.wait_turns(cut_short, times=2, timeout=90)
    chosen = [m for m in world.sent.values() if m.text in texts]
    _, duplicated, lost, _ = await world.wait_answered(chosen, timeout=30, quiet=1.0)
    if len(processes) > 1:
        await victim.restart()
    return again - started, again - killed, len(cut_short), not duplicated and not lost


async def sends_takeover_round(
    args: argparse.Namespace, world: World, victim: GatewayProcess, store: Store, round_: int
) -> tuple[float, float, int, int, bool]:
    """One kill with replies waiting for their slots: (seconds from /ready to the last reply that had not reached
    the provider at the kill, the same from the kill, how many had not, how many had, each sent once)."""
    texts = [f"round {round_} reply {i}" for i in range(args.in_flight)]
    people = users(args.in_flight, base=15550100000 + 1000 * round_)
    burst = max(1, int(args.send_rate))
    world.twilio.answer_late(burst, seconds=2.0)
    first = world.twilio.arrived
    statuses = await world.deliver_each([victim], texts, people)
    assert statuses == [200] * len(texts), statuses
    await until(lambda: world.twilio.arrived - first >= burst, timeout=30, what="the burst at the provider")
    victim.kill()
    killed = time.monotonic()
    reached = set(world.twilio.arrived_to[first:])
    waiting = [user for user in people if user not in reached]
    await victim.restart()
    ready = time.monotonic()
    for _ in range(180):  # the ones in flight are looked up once settled: a second send would come then
        if not await store.pending_job_count():
            break
        await asyncio.sleep(0.5)
    chosen = [m for m in world.sent.values() if m.text in texts]
    _, duplicated, lost, _ = await world.wait_answered(chosen, timeout=30, quiet=1.0)
    sent_at = {m.to: at for m, at in zip(world.twilio.messages, world.twilio.sent_at, strict=True)}
    last = max((sent_at.get(user, math.inf) for user in waiting), default=ready)
    return last - ready, last - killed, len(waiting), len(reached), not duplicated and not lost


async def sends_takeover(args: argparse.Namespace, directory: Path, store_url: str) -> int:
    async with fault_world(directory / "world") as world:
        victim = world.gateways.spawn(
            "gw0", store_url=store_url, log_level=args.log_level, rate_limits={"numbers": {V1: args.send_rate}}
        )
        await victim.restart()
        print(
            f"send takeover benchmark: store={store_url.split(':')[0]} replies={args.in_flight} "
            f"cap={args.send_rate}/s lease=30s (default); seconds from /ready of the restarted process until the "
            "last reply that had not reached the provider at the kill is sent",
            flush=True,
        )
        figures: list[float] = []
        ok = True
        store = create_store(store_url)  # to see when the jobs are done
        await store.open()
        for round_ in range(args.takeover):
            seconds, after_kill, waiting, reached, once = await sends_takeover_round(args, world, victim, store, round_)
            figures.append(seconds)
            ok = ok and once
            print(
                f"  round {round_ + 1}: {waiting} replies waiting, {reached} at the provider; the waiting sent"
                f" after {seconds:.2f}s ({after_kill:.2f}s after the kill){'' if once else '  LOST OR DOUBLED'}",
                flush=True,
            )
        await store.close()
        figures.sort()
        print(f"  median {figures[len(figures) // 2]:.2f}s, max {figures[-1]:.2f}s over {len(figures)} kills")
        print(f"RESULT: {'OK' if ok else 'FAIL'} (every reply sent once: {ok})", flush=True)
        return 0 if ok else 1


async def takeover(args: argparse.Namespace, directory: Path, store_url: str) -> int:
    async with fault_world(directory / "world") as world:
        processes = [
            world.gateways.spawn(
                f"gw{i}",
                store_url=store_url,
                log_level=args.log_level,
                module="tests.elsewhere" if args.other_host and i == 0 else "sms_gateway",
            )
            for i in range(args.processes)
        ]
        for process in processes:
            await process.restart()
        what = (
            "from /ready of the restarted process"
            if args.processes == 1
            else "from the kill, on the survivor" + (" (as from another host)" if args.other_host else "")
        )
        print(
            f"takeover benchmark: store={store_url.split(':')[0]} processes={args.processes} "
            f"in flight={args.in_flight} lease=30s (default); seconds until the cut-short turns reach the "
            f"engine again, {what}",
            flush=True,
        )
        figures: list[float] = []
        from_kill: list[float] = []
        ok = True
        for round_ in range(args.takeover):
            seconds, after_kill, cut_short, once = await takeover_round(args, world, processes, store_url, round_)
            figures.append(seconds)
            from_kill.append(after_kill)
            ok = ok and once
            print(
                f"  round {round_ + 1}: {cut_short} turns cut short, running again after {seconds:.2f}s"
                f" ({after_kill:.2f}s after the kill){'' if once else '  LOST OR DOUBLED'}",
                flush=True,
            )
        figures.sort()
        from_kill.sort()
        print(
            f"  median {figures[len(figures) // 2]:.2f}s, max {figures[-1]:.2f}s over {len(figures)} kills"
            f" (after the kill: median {from_kill[len(from_kill) // 2]:.2f}s, max {from_kill[-1]:.2f}s)"
        )
        print(f"RESULT: {'OK' if ok else 'FAIL'} (every user answered once: {ok})", flush=True)
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--users", type=int, default=0, help="default: messages / 10")
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--processes", type=int, default=0, help="gateway processes (default 1; 2 on redis)")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--downtime", type=float, default=0.5, help="seconds a killed process stays down")
    parser.add_argument("--concurrency", type=int, default=32, help="webhooks in flight")
    parser.add_argument("--worker-concurrency", type=int, default=64)
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=None,
        help="store.leaseSeconds of the gateways (default: the gateway's own, 30 s): how soon "
        "the work a killed process held is taken over",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for every accepted message to be answered (allow for the lease)",
    )
    parser.add_argument("--quiet", type=float, default=2.0, help="seconds with no send that count as quiescent")
    parser.add_argument("--redeliver-rounds", type=int, default=40)
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full", help="SQLite durability")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="keep the store, configs and logs here (default: a temporary directory)")
    parser.add_argument("--show-logs", action="store_true")
    parser.add_argument(
        "--takeover",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="measure how soon a killed process's turns run again instead (see above)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        help="--takeover: turns in the engine at the kill (default 20); with --waiting-sends, replies at once "
        "(default: the cap's burst and 4 more)",
    )
    parser.add_argument(
        "--other-host", action="store_true", help="--takeover with 2 processes: the killed one as if on another host"
    )
    parser.add_argument(
        "--waiting-sends", action="store_true", help="--takeover of replies waiting for their rate slot (see above)"
    )
    parser.add_argument("--send-rate", type=float, default=2.0, help="--waiting-sends: the cap, messages/s")
    args = parser.parse_args(argv)
    args.users = args.users or max(1, args.messages // 10)
    args.in_flight = args.in_flight or (max(1, int(args.send_rate)) + 4 if args.waiting_sends else 20)
    args.processes = args.processes or (2 if args.store == "redis" else 1)
    run = (sends_takeover if args.waiting_sends else takeover) if args.takeover else bench

    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="sms-gw-crash-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        sqlite_query = "?synchronous=normal" if args.synchronous == "normal" else ""
        return with_store(
            args.store, directory, sqlite_query, lambda store_url: asyncio.run(run(args, directory, store_url))
        )
    finally:
        if not args.dir:
            with contextlib.suppress(OSError):
                shutil.rmtree(directory)


def with_store(store: str, directory: Path, sqlite_query: str, run: Callable[[str], int]) -> int:
    """`run(store URL)` on a SQLite file in `directory` (`sqlite_query` its URL options) or on a private
    redis-server (appendonly) started there and stopped after; 2 when redis-server is not installed."""
    if store != "redis":
        return run(f"sqlite:///{directory / 'gateway.db'}{sqlite_query}")
    if not redis_available():
        print("redis-server is not installed", file=sys.stderr)
        return 2
    redis = RedisServer(directory / "redis", appendonly=True)
    redis.start()
    try:
        return run(redis.url)
    finally:
        redis.close()


if __name__ == "__main__":
    sys.exit(main())
