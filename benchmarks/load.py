"""The load generator, a process of its own: N concurrent senders post signed Twilio MMS webhooks (2 media).

Modes:
* `ack` (closed loop): each sender posts, waits for the acknowledgement, posts the next; for `--duration` seconds
  after `--warmup`, or until `--count` webhooks in all.
* `open` (open loop): webhooks start at a fixed `--rate` whatever the answers do; latency is counted from the
  moment each one was due, so a stalled server cannot hide its queueing (no coordinated omission).
* `turn` (closed loop over whole turns): each sender posts, then waits until the reply of that turn reached the
  fake provider (the fakes' feed socket tells each arrival); turn latency = provider arrival - webhook sent.

Every webhook is encoded and signed before the timed window (`--precompute` at most; beyond that, signed on the
fly and counted in `signed_in_window`). Sender i talks as user +1555000{i:04d} (one conversation per sender), or
with `--users unique` every webhook is from a new user (to create sessions). Several `--target`s are used round
robin by sender.

The client (`--client raw`, the default) is a minimal HTTP/1.1 keep-alive client on asyncio: one connection per
sender, the whole request written at once, the answer read by Content-Length. aiohttp's client (`--client
aiohttp`) costs ~0.3 ms of CPU per request on this machine, so on one core it cannot load a server that answers
in less; it is kept to cross-check. The answer is one JSON object on stdout. Targets must be on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import math
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from twilio.request_validator import RequestValidator

from benchmarks.common import (
    AUTH_TOKEN,
    SignedRequest,
    cpu_seconds,
    latency_summary,
    machine_cpu,
    runqueue_wait_seconds,
    signed_webhook,
    unique_user,
    user_for_sender,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_OPEN_IN_FLIGHT = 2000


class HTTPProblem(Exception):
    """The connection broke or the answer was not HTTP/1.1 we can read."""


# ------------------------------------------------------------------------------ clients


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HTTPProblem(f"connection lost: {exc}"))

    def _parse(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            waiter.set_exception(HTTPProblem(f"not HTTP: {head[:40]!r}"))
            return
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            waiter.set_exception(HTTPProblem("answer without Content-Length"))
            return
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end > 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        del self.buffer[:total]
        if b"\r\nconnection: close" in head:
            self.closed = True
        waiter.set_result(status)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class Client(Protocol):
    async def post(self, slot: int, message: SignedRequest) -> int: ...

    async def close(self) -> None: ...


class RawClient:
    """`slot` names a connection: a closed-loop sender keeps its own; the open loop takes a free one."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.connections: dict[tuple[int, str], _Connection] = {}
        self.loop = asyncio.get_running_loop()

    async def _connection(self, slot: int, url: str) -> _Connection:
        parts = urlsplit(url)
        key = (slot, parts.netloc)
        conn = self.connections.get(key)
        if conn is None or conn.closed:
            _, conn = await self.loop.create_connection(_Connection, parts.hostname or "127.0.0.1", parts.port or 80)
            self.connections[key] = conn
        return conn

    async def post(self, slot: int, message: SignedRequest) -> int:
        conn = await self._connection(slot, message.url)
        try:
            return await asyncio.wait_for(conn.request(message.raw), self.timeout)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            conn.closed = True
            raise

    async def close(self) -> None:
        for conn in self.connections.values():
            if conn.transport is not None:
                conn.transport.close()


class AiohttpClient:
    def __init__(self, timeout: float, limit: int) -> None:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))

    async def post(self, slot: int, message: SignedRequest) -> int:
        async with self.session.post(message.url, data=message.body, headers=message.headers) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self.session.close()


class TurnFeed:
    """Lines "id engine_arrival send_arrival" from the fakes, one per send that reached the fake provider."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[tuple[float, float]]] = {}
        self.early: dict[str, tuple[float, float]] = {}
        self.task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        self.writer = writer
        self.task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            request_id, engine_at, send_at = line.decode().split()
            times = (float(engine_at), float(send_at))
            waiter = self.waiting.pop(request_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(times)
            else:
                self.early[request_id] = times

    async def wait(self, request_id: str, seconds: float) -> tuple[float, float] | None:
        times = self.early.pop(request_id, None)
        if times is not None:
            return times
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = waiter
        try:
            return await asyncio.wait_for(waiter, seconds)
        except TimeoutError:
            self.waiting.pop(request_id, None)
            return None

    async def close(self) -> None:
        if self.task is not None:
            self.writer.close()
            self.task.cancel()


# ------------------------------------------------------------------------------ the load


@dataclass
class Results:
    ack_latencies: list[float] = field(default_factory=list)
    service_latencies: list[float] = field(default_factory=list)  # open loop: from the actual send
    turn_latencies: list[float] = field(default_factory=list)
    to_engine: list[float] = field(default_factory=list)  # webhook sent -> engine called
    engine_to_send: list[float] = field(default_factory=list)  # engine called -> send arrived (incl. engine delay)
    ok_total: int = 0  # every 200, warm-up included (what the gateway accepted)
    acks_in_window: int = 0  # 200s completed inside the measured window
    turns_in_window: int = 0
    turn_timeouts: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    sent: int = 0
    dropped: int = 0  # open loop: due while MAX_OPEN_IN_FLIGHT were outstanding


class Messages:
    """Signed webhooks per sender, made ahead of time; more are signed on the fly if the pool runs out."""

    def __init__(self, targets: list[str], senders: int, users: str, run_id: str) -> None:
        self.targets = targets
        self.senders = senders
        self.users = users
        self.run_id = run_id
        self.validator = RequestValidator(AUTH_TOKEN)
        self.pool: list[collections.deque[SignedRequest]] = [collections.deque() for _ in range(senders)]
        self.counters = [itertools.count() for _ in range(senders)]
        self.unique = itertools.count()
        self.made_in_window = 0
        self.window_open = False

    def make(self, sender: int) -> SignedRequest:
        n = next(self.counters[sender])
        user = unique_user(next(self.unique)) if self.users == "unique" else user_for_sender(sender)
        target = self.targets[sender % len(self.targets)]
        return signed_webhook(target, f"{self.run_id}-{sender}-{n}", user, validator=self.validator)

    def precompute(self, total: int) -> None:
        per_sender = math.ceil(total / self.senders)
        for sender in range(self.senders):
            self.pool[sender].extend(self.make(sender) for _ in range(per_sender))

    def next(self, sender: int) -> SignedRequest:
        if self.pool[sender]:
            return self.pool[sender].popleft()
        if self.window_open:
            self.made_in_window += 1
        return self.make(sender)


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results = Results()
        self.messages = Messages(args.target, args.senders, args.users, args.run_id or uuid.uuid4().hex[:8])
        self.remaining = itertools.count() if args.count else None
        self.measure_from = 0.0  # perf_counter
        self.measure_to = math.inf
        self.wall_from = 0.0
        self.wall_to = math.inf
        self.done = asyncio.Event()
        self.feed = TurnFeed()

    async def post(self, client: Client, slot: int, message: SignedRequest) -> int | None:
        try:
            return await client.post(slot, message)
        except (OSError, HTTPProblem, aiohttp.ClientError, TimeoutError) as exc:
            self.results.errors[type(exc).__name__] += 1
            return None

    def take(self) -> bool:
        """Count-bounded runs: True while there is a webhook left to send."""
        return self.remaining is None or next(self.remaining) < self.args.count

    # ---------------------------------------------------------------------------- closed loops
    async def sender(self, i: int, client: Client, turns: bool) -> None:
        r = self.results
        while time.perf_counter() < self.measure_to and self.take():
            message = self.messages.next(i)
            t0_wall = time.time()
            t0 = time.perf_counter()
            r.sent += 1
            status = await self.post(client, i, message)
            t1 = time.perf_counter()
            if status is None:
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            if status != 200:
                r.errors[str(status)] += 1
                continue
            r.ok_total += 1
            counted = t0 >= self.measure_from
            if counted:
                r.ack_latencies.append(t1 - t0)
            if self.measure_from <= t1 <= self.measure_to:
                r.acks_in_window += 1
            if turns:
                times = await self.feed.wait(message.request_id, self.args.turn_timeout)
                if times is None:
                    r.turn_timeouts += 1
                    continue
                engine_at, send_at = times
                if counted:
                    r.turn_latencies.append(send_at - t0_wall)
                    r.to_engine.append(engine_at - t0_wall)
                    r.engine_to_send.append(send_at - engine_at)
                if self.wall_from <= send_at <= self.wall_to:
                    r.turns_in_window += 1

    # ---------------------------------------------------------------------------- open loop
    async def open_loop(self, client: Client) -> None:
        rate = self.args.rate
        r = self.results
        in_flight: set[asyncio.Task[None]] = set()
        free_slots = list(range(MAX_OPEN_IN_FLIGHT))
        total = int(rate * (self.args.warmup + self.args.duration))
        start = self.measure_from - self.args.warmup
        messages = self._round_robin()

        async def one(message: SignedRequest, due: float, slot: int) -> None:
            sent = time.perf_counter()
            try:
                status = await self.post(client, slot, message)
            finally:
                free_slots.append(slot)
            done = time.perf_counter()
            if status is None:
                return
            if status != 200:
                r.errors[str(status)] += 1
                return
            r.ok_total += 1
            if due >= self.measure_from:
                r.ack_latencies.append(done - due)
                r.service_latencies.append(done - sent)
            if self.measure_from <= done <= self.measure_to:
                r.acks_in_window += 1

        k = 0
        while k < total:
            now = time.perf_counter()
            due = start + k / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while k < total and start + k / rate <= now:
                k += 1
                r.sent += 1
                if not free_slots:
                    r.dropped += 1
                    continue
                slot = free_slots.pop()
                task = asyncio.create_task(one(next(messages), start + (k - 1) / rate, slot))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=60)

    def _round_robin(self) -> Iterator[SignedRequest]:
        for i in itertools.cycle(range(self.args.senders)):
            yield self.messages.next(i)

    # ---------------------------------------------------------------------------- the run
    async def run(self) -> dict[str, Any]:
        a = self.args
        if a.mode == "open":
            planned = int(a.rate * (a.warmup + a.duration))
        elif a.count:
            planned = a.count
        else:
            planned = int(a.max_rate * (a.warmup + a.duration))
        self.messages.precompute(min(planned, a.precompute))
        limit = MAX_OPEN_IN_FLIGHT if a.mode == "open" else a.senders
        client: Client = RawClient(a.request_timeout) if a.client == "raw" else AiohttpClient(a.request_timeout, limit)
        if a.mode == "turn":
            host, _, port = a.feed.rpartition(":")
            await self.feed.connect(host, int(port))
        async with aiohttp.ClientSession() as control:
            fakes_before = await self._fakes_stats(control)
            self.messages.window_open = True
            begin = time.perf_counter()
            if a.count:
                self.measure_from = begin
            else:
                self.measure_from = begin + a.warmup
                self.measure_to = self.measure_from + a.duration
            self.wall_from = time.time() + (self.measure_from - begin)
            if not a.count:
                self.wall_to = self.wall_from + a.duration
            watch = asyncio.create_task(self._watch())
            try:
                if a.mode == "open":
                    await self.open_loop(client)
                else:
                    await asyncio.gather(*(self.sender(i, client, a.mode == "turn") for i in range(a.senders)))
            finally:
                self.done.set()
                await client.close()
                await self.feed.close()
            finished = time.perf_counter()
            cpu = await watch
            fakes_after = await self._fakes_stats(control)
        window = a.duration if not a.count else finished - self.measure_from
        return self._report(window, cpu, fakes_before, fakes_after, finished - begin)

    def _snapshot(self) -> dict[str, float | None]:
        busy, total = machine_cpu()
        snap: dict[str, float | None] = {str(pid): cpu_seconds(pid) for pid in self.args.watch_pid}
        snap |= {f"runq_wait:{pid}": runqueue_wait_seconds(pid) for pid in self.args.watch_pid}
        snap |= {"load_generator": time.process_time(), "machine_busy": busy, "machine_total": total}
        return snap

    async def _watch(self) -> dict[str, Any]:
        """CPU seconds of the watched processes, this one and the machine (busy: all cores, all processes;
        total: cores x seconds) over the measured window; `runq_wait:PID`: seconds that process was ready to run
        but waited for a core."""
        await asyncio.sleep(max(0.0, self.measure_from - time.perf_counter()))
        before = self._snapshot()
        if self.args.count:
            await self.done.wait()
        else:
            await asyncio.sleep(max(0.0, self.measure_to - time.perf_counter()))
        after = self._snapshot()
        out: dict[str, Any] = {}
        for key, b in before.items():
            e = after[key]
            out[key] = round(e - b, 3) if b is not None and e is not None else None
        return out

    async def _fakes_stats(self, control: aiohttp.ClientSession) -> dict[str, Any] | None:
        if not self.args.fakes_url:
            return None
        try:
            async with control.get(f"{self.args.fakes_url}/stats") as response:
                data: dict[str, Any] = await response.json()
                return data
        except (aiohttp.ClientError, ValueError):
            return None

    def _report(
        self,
        window: float,
        cpu: dict[str, Any],
        fakes_before: dict[str, Any] | None,
        fakes_after: dict[str, Any] | None,
        elapsed: float,
    ) -> dict[str, Any]:
        a, r = self.args, self.results
        out: dict[str, Any] = {
            "mode": a.mode,
            "client": a.client,
            "senders": a.senders,
            "targets": a.target,
            "users": a.users,
            "rate": a.rate if a.mode == "open" else None,
            "window_s": round(window, 3),
            "elapsed_s": round(elapsed, 3),
            "sent": r.sent,
            "ok_total": r.ok_total,
            "errors": dict(r.errors),
            "dropped": r.dropped,
            "acks_per_s": round(r.acks_in_window / window, 1) if window > 0 else None,
            "ack_latency_ms": latency_summary(r.ack_latencies),
            "signed_in_window": self.messages.made_in_window,
            "cpu_s": cpu,
        }
        if a.mode == "open":
            out["service_latency_ms"] = latency_summary(r.service_latencies)
        if a.mode == "turn":
            out["turns_per_s"] = round(r.turns_in_window / window, 1) if window > 0 else None
            out["turn_latency_ms"] = latency_summary(r.turn_latencies)
            out["webhook_to_engine_ms"] = latency_summary(r.to_engine)
            out["engine_to_send_ms"] = latency_summary(r.engine_to_send)
            out["turn_timeouts"] = r.turn_timeouts
        if fakes_before is not None and fakes_after is not None:
            out["fakes"] = {
                "sends_in_run": fakes_after["sends"] - fakes_before["sends"],
                "engine_calls_in_run": fakes_after["engine_calls"] - fakes_before["engine_calls"],
                "duplicates": fakes_after["duplicates"],
                "unmatched": fakes_after["unmatched"],
            }
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", required=True, help="gateway base URL (repeat for several)")
    parser.add_argument("--mode", choices=["ack", "open", "turn"], default="ack")
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw")
    parser.add_argument("--senders", type=int, default=10, help="concurrent senders (closed loop)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds sent before the window, not counted")
    parser.add_argument("--count", type=int, default=0, help="send this many webhooks instead of a duration")
    parser.add_argument("--rate", type=float, default=1000.0, help="webhooks per second (open loop)")
    parser.add_argument("--users", choices=["per-sender", "unique"], default="per-sender")
    parser.add_argument("--fakes-url", help="the fakes' HTTP URL (stats before and after)")
    parser.add_argument("--feed", help="host:port of the fakes' arrival feed (turn mode)")
    parser.add_argument("--turn-timeout", type=float, default=60.0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument(
        "--max-rate", type=float, default=8000.0, help="closed loop: sign enough webhooks ahead for this rate"
    )
    parser.add_argument("--precompute", type=int, default=150_000, help="at most this many signed ahead")
    parser.add_argument(
        "--watch-pid", type=int, action="append", default=[], help="report this process's CPU seconds over the window"
    )
    parser.add_argument("--run-id", help="prefix of the request ids (default random)")
    args = parser.parse_args()
    hosts = [urlsplit(t).hostname for t in args.target + ([args.fakes_url] if args.fakes_url else [])]
    if args.feed:
        hosts.append(args.feed.rpartition(":")[0])
    if any(host not in LOOPBACK for host in hosts):
        parser.error("load goes to loopback addresses only")
    if args.mode == "turn" and not args.feed:
        parser.error("--mode turn needs --feed")
    if args.count and args.mode == "open":
        parser.error("--count is for the closed loops")
    result = asyncio.run(Load(args).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
