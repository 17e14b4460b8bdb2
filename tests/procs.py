"""Real `sms-gateway serve` processes for fault tests and the crash benchmark.

The fakes (Twilio, Watson) run in the test's own event loop; each gateway is a subprocess started as a user
starts it (`python -m sms_gateway serve --config FILE`) with a YAML file written for it, so it can be killed
with SIGKILL, stopped with SIGTERM, restarted on the same store, or run twice on one store.

    async with fault_world(tmp_path) as world:
        gw = await world.gateways.start("a", store_url=f"sqlite:///{tmp_path / 'gw.db'}")
        sid, status = await world.deliver(gw, "hello", user="+15551230001")
        await world.wait_answered({...})
        gw.kill()                       # kill -9 (the whole process group)
        await gw.restart()              # same config, same port, same store

Every process is killed in the world's cleanup, whatever happens to the test. Logs (stdout and stderr) are
copied from pipes into `<dir>/<name>.<n>.log` (pipes, not files: a test that limits the gateway's file size
with RLIMIT_FSIZE must not make its logging fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.fakes.twilio import FakeTwilio, SentMessage, serve_fake_twilio
from tests.fakes.watson import FakeWatson, Recorded, serve
from tests.harness import V1, free_port, inbound_form

ROOT = Path(__file__).resolve().parent.parent
INBOUND_PATH = "/sms.receiver/SmsRecv"
FAILED_REPLY = "Sorry, we can't answer right now."
# Environment variables that would override the YAML file (IBM's and ours): never inherited by a gateway.
_OVERRIDING_PREFIXES = (
    "WATSON_",
    "SMS_",
    "TENANT_",
    "CTRL_",
    "HTTP_",
    "STORE_",
    "LOG_",
    "WCS_",
    "PUBLIC_URL",
    "MULTI_TENANT_",
    "ENABLE_TRANSCRIPTION",
    "LATENCY_REPORTING",
    "ALLOW_SESSION",
    "TIMEOUT_FOR_SESSION",
    "NOTIFY_ON_SESSION",
    "CONVERSATION_FAILED",
)


def inherited_env() -> dict[str, str]:
    """This process's environment without the variables that would override a gateway's YAML file."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_OVERRIDING_PREFIXES)}


def reply_for(text: str) -> str:
    """What the fake Watson's echo dialog answers to `text`."""
    return f"You said: {text}" if text else "Welcome"


# ------------------------------------------------------------------------------------------- the fakes


class ControlledWatson(FakeWatson):
    """The fake Watson with an outage switch and a per-turn delay for v1/SOE turns.

    `hold(seconds)`: each turn waits that long before it is answered (the request is recorded at once) until
    `release()`, which also lets every waiting turn go. While `time.monotonic() < down_until` every turn is
    answered `down_status`. `answered` lists the texts it actually answered.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = 0.0
        self.down_until = 0.0
        self.down_status = 503
        self.down_hits = 0
        self.answered: list[str] = []
        self._release: asyncio.Event | None = None

    def down_for(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    def hold(self, seconds: float) -> None:
        if self._release is not None:
            self._release.set()
        self._release = None
        self.delay = seconds

    def release(self) -> None:
        self.delay = 0.0
        if self._release is not None:
            self._release.set()

    async def _v1_answer(self, rec: Recorded) -> web.Response:
        if time.monotonic() < self.down_until:
            self.down_hits += 1
            return web.json_response(
                {"error": "Service Unavailable", "code": self.down_status}, status=self.down_status
            )
        if self.delay:
            if self._release is None:
                self._release = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.delay)
        response = await super()._v1_answer(rec)
        if response.status == 200 and isinstance(rec.json, dict):
            self.answered.append(str((rec.json.get("input") or {}).get("text", "")))
        return response

    def turn_texts(self) -> list[str]:
        """The input text of every v1 turn request received (answered or not), in arrival order."""
        return [str(((r.json or {}).get("input") or {}).get("text", "")) for r in self.of_kind("v1", "soe")]


class TimedTwilio(FakeTwilio):
    """The fake Twilio, also noting when (monotonic) each message was accepted, and able to answer late.

    `answer_late(count, seconds)`: the next `count` sends are read in full, then answered after `seconds`,
    and sent even if the client has given up by then (a send that timed out at the caller but happened).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_at: list[float] = []
        self.arrived = 0  # send requests that reached the fake (before any scripted delay)
        self.arrived_to: list[str] = []  # their `To`, in the order they arrived
        self._late: deque[float] = deque()

    def answer_late(self, count: int, seconds: float) -> None:
        self._late.extend([seconds] * count)

    async def _create_message(self, request: web.Request) -> web.Response:
        self.arrived += 1
        self.arrived_to.append(str((await request.post()).get("To", "")))  # aiohttp keeps the form read
        if self._late:
            delay = self._late.popleft()
            await request.post()  # read now (aiohttp keeps it): the send happens whatever the client does
            await asyncio.sleep(delay)
        return await super()._create_message(request)

    def _accept(self, data: Mapping[str, Any], auth: tuple[str, str], form: list[tuple[str, str]]) -> SentMessage:
        self.sent_at.append(time.monotonic())
        return super()._accept(data, auth, form)

    def replies(self) -> Counter[tuple[str, str]]:
        """(to, body) -> how many times it was sent."""
        return Counter((m.to, m.body or "") for m in self.messages)


# ------------------------------------------------------------------------------------------- config


def gateway_config(
    *,
    port: int,
    store_url: str,
    twilio_url: str,
    account_sid: str,
    auth_token: str,
    watson_url: str,
    tenant: str = V1,
    rate_limits: Mapping[str, Any] | None = None,
    worker_concurrency: int | None = None,
    lease_seconds: float | None = None,
    conversation: Mapping[str, Any] | None = None,
    provider: Mapping[str, Any] | None = None,
    tenant_extra: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A native config: one Watson v1 tenant on the fakes, no rate limits unless given.

    `lease_seconds` (store.leaseSeconds, the gateway's default when None) bounds how soon the work of a killed
    process is taken over: fault tests that kill a process set it to a few seconds."""
    config: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "port": port, "publicURL": f"http://127.0.0.1:{port}"},
        "store": {"url": store_url},
        "logging": {"level": "info", "redactPhoneNumbers": False},
        "media": {"checkSize": False},
        **({"rateLimits": dict(rate_limits)} if rate_limits is not None else {}),
        "tenants": [
            {
                "tenantPhoneNumber": tenant,
                "conversation": {
                    "type": "watson_v1",
                    "url": watson_url,
                    "workspaceID": "WS1",
                    "authType": "none",
                    "convConnectTimeout": 2000,
                    "convReadTimeout": 10000,
                    "maxRetryNum": 1,
                    **(conversation or {}),
                },
                "smsProvider": {
                    "url": twilio_url,
                    "username": account_sid,
                    "password": auth_token,
                    "connectTimeout": 2000,
                    "readTimeout": 5000,
                    "maxRetryNum": 5,
                    **(provider or {}),
                },
                "allowSessionCreateViaSMS": True,
                "conversationFailedReplyMessage": FAILED_REPLY,
                **(tenant_extra or {}),
            }
        ],
    }
    if worker_concurrency is not None:
        config["workerConcurrency"] = worker_concurrency
    if lease_seconds is not None:
        config["store"]["leaseSeconds"] = lease_seconds
    config.update(extra or {})
    return config


# ------------------------------------------------------------------------------------------- processes


def _pump(stream: IO[bytes], sink: IO[bytes]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in iter(stream.readline, b""):
            sink.write(line)
            sink.flush()


class GatewayProcess:
    """One `sms-gateway serve` subprocess (restartable on the same config, port and store)."""

    def __init__(
        self,
        name: str,
        config_path: Path,
        port: int,
        log_dir: Path,
        env: Mapping[str, str],
        preexec_fn: Callable[[], None] | None = None,
        module: str = "sms_gateway",
    ) -> None:
        self.name = name
        self.module = module
        self.config_path = config_path
        self.port = port
        self.log_dir = log_dir
        self.env = dict(env)
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_paths: list[Path] = []
        self._threads: list[threading.Thread] = []
        self._sinks: list[IO[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def inbound_url(self) -> str:
        return self.url + INBOUND_PATH

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"gateway {self.name} is already running")
        self._close_logs()
        self.starts += 1
        log_path = self.log_dir / f"{self.name}.{self.starts}.log"
        self.log_paths.append(log_path)
        sink = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--config", str(self.config_path), "serve"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches anything it starts
            preexec_fn=self.preexec_fn,  # only setrlimit/signal calls, by tests that ask for them
        )
        assert self.proc.stdout is not None
        thread = threading.Thread(
            target=_pump, args=(self.proc.stdout, sink), daemon=True, name=f"log-{self.name}-{self.starts}"
        )
        thread.start()
        self._threads.append(thread)
        self._sinks.append(sink)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until `/ready` answers 200; fails at once (with the log) if the process exits."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise AssertionError(f"gateway {self.name} exited with {self.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url + "/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"gateway {self.name} not ready after {timeout}s:\n{self.log_tail()}")

    async def ready_status(self, timeout: float = 3.0) -> int | None:
        """The status `/ready` answers now; None when nothing answers within `timeout`."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
                async with http.get(self.url + "/ready") as response:
                    return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def restart(self, timeout: float = 30.0) -> None:
        self.start()
        await self.wait_ready(timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the gateway's process group (SIGKILL: kill -9, nothing runs after it)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait (without blocking the loop the fakes run in) for the process to exit; its exit code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway {self.name} did not exit within {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def terminate_and_wait(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for a graceful exit (a SIGKILL after `timeout`, and an AssertionError)."""
        self.kill(signal.SIGTERM)
        try:
            return await self.wait_exit(timeout)
        except AssertionError:
            self.kill()
            raise

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

    def _close_logs(self) -> None:
        if self.proc is not None and self.proc.poll() is not None and self.proc.stdout is not None:
            for thread in self._threads:
                thread.join(5)
            self.proc.stdout.close()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        for sink in self._sinks:
            sink.close()
        self._sinks.clear()

    def close(self) -> None:
        self.kill()
        self._close_logs()


class Gateways:
    """Starts gateway processes on the world's fakes; `close()` kills every one of them."""

    def __init__(self, directory: Path, twilio: FakeTwilio, watson_url: str) -> None:
        self.directory = directory
        self.twilio = twilio
        self.watson_url = watson_url
        self.processes: list[GatewayProcess] = []

    def spawn(
        self,
        name: str,
        *,
        store_url: str,
        env: Mapping[str, str] | None = None,
        drain_seconds: float = 0.0,
        log_level: str = "info",
        preexec_fn: Callable[[], None] | None = None,
        port: int | None = None,
        module: str = "sms_gateway",
        **config: Any,
    ) -> GatewayProcess:
        """Write the config and make the process object (not started). `config`: gateway_config() options;
        `module`: what `python -m` runs (`tests.elsewhere`: a gateway that takes itself for one on another host)."""
        port = port or free_port()
        assert self.twilio.base_url is not None
        native = gateway_config(
            port=port,
            store_url=store_url,
            twilio_url=self.twilio.base_url,
            account_sid=self.twilio.account_sid,
            auth_token=self.twilio.auth_token,
            watson_url=self.watson_url,
            **config,
        )
        path = self.directory / f"{name}.yaml"
        path.write_text(json.dumps(native, indent=2))  # JSON is YAML
        base = inherited_env()
        full_env = {
            **base,
            "PYTHONUNBUFFERED": "1",
            "SHUTDOWN_DRAIN_SECONDS": str(drain_seconds),
            "LOG_LEVEL": log_level,
            **(env or {}),
        }
        process = GatewayProcess(name, path, port, self.directory, full_env, preexec_fn, module)
        self.processes.append(process)
        return process

    async def start(self, name: str, **kwargs: Any) -> GatewayProcess:
        process = self.spawn(name, **kwargs)
        await process.restart()
        return process

    def close(self) -> None:
        for process in self.processes:
            process.close()


# ------------------------------------------------------------------------------------------- counting


@dataclass
class Tally:
    """What a fault test counted; printed at its end (`pytest -s` or the captured output on failure)."""

    name: str
    sent: int = 0  # distinct inbound messages
    accepted: int = 0  # got a 200 at least once
    answered: int = 0  # got their reply (or the failure message where that counts)
    duplicated: int = 0  # got more than one
    lost: int = 0  # accepted, never answered
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"[{self.name}] sent={self.sent} accepted={self.accepted} answered={self.answered} "
            f"duplicated={self.duplicated} lost={self.lost}" + (f" {extra}" if extra else "")
        )

    def report(self) -> None:
        print("\n" + self.line(), flush=True)


@dataclass(frozen=True)
class Inbound:
    sid: str
    user: str
    text: str


def count_answers(
    messages: Iterable[Inbound],
    accepted: set[str],
    replies: Counter[tuple[str, str]],
    *,
    also: Callable[[Inbound], Iterable[str]] = lambda m: (),
) -> tuple[int, int, list[Inbound], list[Inbound]]:
    """(answered, duplicated, lost, duplicates) where a message is answered by `reply_for(text)` sent to its
    user (or any body in `also(message)`); lost = accepted but unanswered. Texts must be unique per user."""
    answered = duplicated = 0
    lost: list[Inbound] = []
    doubled: list[Inbound] = []
    for m in messages:
        n = replies[(m.user, reply_for(m.text))] + sum(replies[(m.user, body)] for body in also(m))
        if n:
            answered += 1
        if n > 1:
            duplicated += 1
            doubled.append(m)
        if n == 0 and m.sid in accepted:
            lost.append(m)
    return answered, duplicated, lost, doubled


# ------------------------------------------------------------------------------------------- the world


@dataclass
class World:
    twilio: TimedTwilio
    watson: ControlledWatson
    watson_url: str
    gateways: Gateways
    http: aiohttp.ClientSession
    directory: Path
    sent: dict[str, Inbound] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)

    def sign(self, url: str, form: Mapping[str, str]) -> str:
        return str(RequestValidator(self.twilio.auth_token).compute_signature(url, dict(form)))

    async def post(self, gw: GatewayProcess, form: Mapping[str, str], timeout: float = 15.0) -> int | None:
        """Deliver one webhook as Twilio does (signed for `gw`'s URL); its status, None if no answer."""
        url = gw.inbound_url
        try:
            async with self.http.post(
                url,
                data=dict(form),
                headers={"X-Twilio-Signature": self.sign(url, form)},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.statuses[status or 0] += 1
        sid = form["MessageSid"]
        if status == 200:
            self.accepted.add(sid)
        return status

    def message(self, text: str, user: str, sid: str | None = None) -> dict[str, str]:
        form = inbound_form(text, user=user, sid=sid)
        self.sent[form["MessageSid"]] = Inbound(form["MessageSid"], user, text)
        return form

    async def deliver(self, gw: GatewayProcess, text: str, user: str, sid: str | None = None) -> tuple[str, int | None]:
        form = self.message(text, user, sid)
        return form["MessageSid"], await self.post(gw, form)

    async def deliver_each(
        self, gateways: Sequence[GatewayProcess], texts: Sequence[str], people: Sequence[str]
    ) -> list[int | None]:
        """Text i from user i, all at once, to the gateways in turn (round robin); their statuses."""
        results = await asyncio.gather(
            *(
                self.deliver(gateways[i % len(gateways)], text, user)
                for i, (text, user) in enumerate(zip(texts, people, strict=True))
            )
        )
        return [status for _, status in results]

    async def replay(self, gw: GatewayProcess, sid: str) -> int | None:
        """Deliver an already sent message again (same MessageSid, same form)."""
        m = self.sent[sid]
        return await self.post(gw, inbound_form(m.text, user=m.user, sid=sid))

    async def redeliver(
        self,
        gw: GatewayProcess | Callable[[int], GatewayProcess],
        sids: Iterable[str],
        attempts: int = 20,
        pause: float = 0.3,
    ) -> list[str]:
        """Deliver again (as Twilio's retry would) each message until it gets a 200; those that never did."""
        pending = [s for s in sids if s not in self.accepted]
        for attempt in range(attempts):
            if not pending:
                break
            target = gw if isinstance(gw, GatewayProcess) else gw(attempt)
            for sid in pending:
                await self.replay(target, sid)
            pending = [s for s in pending if s not in self.accepted]
            if pending:
                await asyncio.sleep(pause)
        return pending

    def count(
        self, messages: Iterable[Inbound] | None = None, **kw: Any
    ) -> tuple[int, int, list[Inbound], list[Inbound]]:
        chosen = list(self.sent.values()) if messages is None else list(messages)
        return count_answers(chosen, self.accepted, self.twilio.replies(), **kw)

    async def wait_answered(
        self, messages: Iterable[Inbound] | None = None, timeout: float = 20.0, quiet: float = 0.5, **kw: Any
    ) -> tuple[int, int, list[Inbound], list[Inbound]]:
        """Until every accepted message (of `messages`) is answered and nothing was sent for `quiet` seconds
        (so late duplicates are seen too), or `timeout`; returns count()."""
        chosen = list(self.sent.values()) if messages is None else list(messages)
        deadline = time.monotonic() + timeout
        last_total, last_change = -1, time.monotonic()
        while True:
            result = self.count(chosen, **kw)
            total = len(self.twilio.messages)
            now = time.monotonic()
            if total != last_total:
                last_total, last_change = total, now
            if not result[2] and now - last_change >= quiet:
                return result
            if now > deadline:
                return result
            await asyncio.sleep(0.05)

    async def wait_turns(self, texts: Iterable[str], times: int = 2, timeout: float = 60.0) -> float:
        """Until each of `texts` has reached the engine `times` times (with 2: a turn cut short by a crash has
        been run again); when (time.monotonic(), within 20 ms). AssertionError after `timeout` seconds."""
        wanted = set(texts)
        deadline = time.monotonic() + timeout
        while True:
            counts = Counter(t for t in self.watson.turn_texts() if t in wanted)
            if all(counts[t] >= times for t in wanted):
                return time.monotonic()
            if time.monotonic() > deadline:
                missing = sorted(t for t in wanted if counts[t] < times)
                raise AssertionError(f"{len(missing)} turns not run {times} times within {timeout}s: {missing[:5]}")
            await asyncio.sleep(0.02)

    def tally(self, name: str, messages: Iterable[Inbound] | None = None, **kw: Any) -> Tally:
        chosen = list(self.sent.values()) if messages is None else list(messages)
        answered, duplicated, lost, _ = self.count(chosen, **kw)
        return Tally(
            name,
            sent=len(chosen),
            accepted=sum(1 for m in chosen if m.sid in self.accepted),
            answered=answered,
            duplicated=duplicated,
            lost=len(lost),
        )


def _mkdir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


@asynccontextmanager
async def fault_world(directory: Path) -> AsyncIterator[World]:
    """The fakes in this loop, a gateway supervisor writing into `directory`, an HTTP client; all cleaned up."""
    _mkdir(directory)
    watson = ControlledWatson()
    watson_runner, watson_url = await serve(watson)
    gateways: Gateways | None = None
    try:
        async with serve_fake_twilio(TimedTwilio()) as twilio:
            assert isinstance(twilio, TimedTwilio)
            gateways = Gateways(directory, twilio, watson_url)
            connector = aiohttp.TCPConnector(limit=200)
            try:
                async with aiohttp.ClientSession(connector=connector) as http:
                    yield World(twilio, watson, watson_url, gateways, http, directory)
            finally:
                gateways.close()
    finally:
        if gateways is not None:
            gateways.close()
        watson.release()
        await watson_runner.cleanup()


def users(n: int, base: int = 15550100000) -> list[str]:
    return [f"+{base + i}" for i in range(n)]
