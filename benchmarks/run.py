"""Run the benchmark suite: `python -m benchmarks.run [--quick] [--only ack,turns,redis,memory,soak,scale]`.

Every server is a process of its own, started here and stopped at the end (process groups, even on error):
the gateway (`python -m sms_gateway serve --config <tmp yaml>`) or the baseline (`benchmarks.baseline`) pinned
to core 0, the fakes (`benchmarks.fakes`), the load generator (`benchmarks.load`) and a private redis-server on
core 1. Prints a table (figure | gateway | baseline | ratio | target | met?) and the scaling table, and writes
everything (each point's load output, the commands, CPU use of every process, the gateway's log and metric
counts) as JSON. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    ENGINE_PASSWORD,
    ENGINE_USER,
    MESSAGES_PATH,
    TENANT,
    WORKSPACE,
    cpu_seconds,
    free_port,
    fsync_latency,
    machine_cpu,
    rss_kib,
    status_kib,
)

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("ack", "turns", "redis", "memory", "soak", "scale")
TASKSET = shutil.which("taskset")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
GATEWAY_CORE, LOAD_CORE = 0, 1
# Environment variables the gateway reads (IBM's and ours): none may leak in from the caller's shell.
_GATEWAY_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
HELD_ENGINE_DELAY_MS = 60_000


# ------------------------------------------------------------------------------ processes


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log: Path
    cpu: str | None
    url: str | None = None
    code: str = ""  # the gateway's code when it started: commit, plus a hash of uncommitted changes

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def pinned(argv: Sequence[str], cpu: str | int | None) -> list[str]:
    if cpu is None or TASKSET is None:
        return list(argv)
    return [TASKSET, "-c", str(cpu), *argv]


class Procs:
    """Every process this run started; `stop_all` ends each of them (its whole process group)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[Proc] = []
        self._names: Counter[str] = Counter()

    def start(
        self, name: str, argv: Sequence[str], cpu: str | int | None, env: dict[str, str] | None = None, cwd: Path = REPO
    ) -> Proc:
        self._names[name] += 1
        log = self.workdir / f"{name}-{self._names[name]}.log"
        full = pinned(argv, cpu)
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd,
                env=env,
            )
        proc = Proc(name, full, popen, log, None if cpu is None else str(cpu))
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc, graceful: bool = True, timeout: float = 25.0) -> None:
        if proc in self.running:
            self.running.remove(proc)
        if proc.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc, graceful=False, timeout=10)


def http_json(url: str, data: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(
        url, data=body, method="POST" if data is not None else "GET", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def http_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def wait_ready(proc: Proc, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: {tail(proc.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s: {tail(proc.log)}")


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def set_affinity(pid: int, cpus: str) -> None:
    if TASKSET is not None:
        subprocess.run([TASKSET, "-p", "-c", cpus, str(pid)], check=False, capture_output=True)


# ------------------------------------------------------------------------------ the bench


@dataclass
class Settings:
    quick: bool
    duration: float
    warmup: float
    senders: tuple[int, ...]
    sessions: int
    turns: int
    open_rate: float
    log_level: str
    worker_concurrency: int | None
    redis_appendonly: str
    client: str
    quiet_wait: float = 20.0
    memory_stores: tuple[str, ...] = ("memory", "sqlite", "redis")


@dataclass
class Bench:
    settings: Settings
    workdir: Path
    procs: Procs
    points: list[dict[str, Any]] = field(default_factory=list)
    gateway_runs: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    fakes: Proc | None = None
    fakes_url: str = ""
    feed: str = ""
    redis: Proc | None = None
    redis_url: str = ""

    # ---------------------------------------------------------------------------- servers
    def start_fakes(self, delay_ms: float = 0) -> None:
        if self.fakes is not None:
            self.reset_fakes(delay_ms)
            return
        port, feed_port = free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "benchmarks.fakes",
            "--port",
            str(port),
            "--feed-port",
            str(feed_port),
            "--engine-delay-ms",
            str(delay_ms),
        ]
        self.fakes = self.procs.start("fakes", argv, LOAD_CORE)
        self.fakes_url = f"http://127.0.0.1:{port}"
        self.feed = f"127.0.0.1:{feed_port}"
        wait_ready(self.fakes, f"{self.fakes_url}/health")

    def reset_fakes(self, delay_ms: float | None = None) -> None:
        http_json(f"{self.fakes_url}/reset", {} if delay_ms is None else {"engine_delay_ms": delay_ms})

    def fakes_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = http_json(f"{self.fakes_url}/stats")
        return stats

    def start_redis(self) -> None:
        if self.redis is not None:
            return
        port = free_port()
        directory = self.workdir / "redis"
        directory.mkdir(exist_ok=True)
        aof = (
            ["--appendonly", "no"]
            if self.settings.redis_appendonly == "no"
            else ["--appendonly", "yes", "--appendfsync", self.settings.redis_appendonly]
        )
        argv = [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *aof,
            "--dir",
            str(directory),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]
        self.redis = self.procs.start("redis", argv, LOAD_CORE)
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        import redis

        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def redis_command(self, *args: str) -> Any:
        import redis

        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        client = redis.Redis(port=port)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def gateway_config(self, port: int, store_url: str, extra: Sequence[str] = ()) -> str:
        lines = [
            "# written by benchmarks/run.py",
            f"http: {{host: 127.0.0.1, port: {port}, publicURL: 'http://127.0.0.1:{port}'}}",
            f"store: {{url: '{store_url}'}}",
            f"logging: {{level: {self.settings.log_level}}}",
            "media: {checkSize: false}",
            # A cap that never binds: a checkout from before paced sending (1 msg/s per long code by default)
            # compares fairly with it; `--b 'rateLimits: {}'` measures today's default, no cap.
            "rateLimits: {longCode: 10000}",
        ]
        if self.settings.worker_concurrency:
            lines.append(f"workerConcurrency: {self.settings.worker_concurrency}")
        # An extra line replaces ours of the same top-level key (a key must not be given twice).
        named = {line.split(":", 1)[0] for line in extra}
        lines = [line for line in lines if line.split(":", 1)[0] not in named] + list(extra)
        if "tenants" in named:
            return "\n".join(lines) + "\n"
        lines += [
            "tenants:",
            f"  - tenantPhoneNumber: '{TENANT}'",
            "    allowSessionCreateViaSMS: true",
            "    conversation:",
            "      type: watson_v1",
            f"      url: '{self.fakes_url}'",
            f"      workspaceID: {WORKSPACE}",
            f"      username: {ENGINE_USER}",
            f"      password: {ENGINE_PASSWORD}",
            "    smsProvider:",
            f"      url: '{self.fakes_url}'",
            f"      username: {ACCOUNT_SID}",
            f"      password: {AUTH_TOKEN}",
            "    controlCredentials: {username: bench, password: bench-control-password}",
        ]
        return "\n".join(lines) + "\n"

    def start_gateway(
        self,
        label: str,
        store: str,
        cpu: str | int | None = GATEWAY_CORE,
        *,
        extra: Sequence[str] = (),
        tree: Path = REPO,
        redis_prefix: str | None = None,
    ) -> Proc:
        """`extra`: top-level YAML lines for this gateway's config (replacing ours of the same key); `tree`: the
        checkout whose `sms_gateway` it runs (`python -m` imports from its working directory first);
        `redis_prefix`: keys of its own in the shared Redis (gateways with the same prefix share their work)."""
        port = free_port()
        name = f"gateway-{label}"
        if store == "sqlite":
            db_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
            store_url = f"sqlite:///{db_dir / 'gateway.db'}"
        elif store == "memory":
            store_url = "memory://"
        else:
            store_url = self.redis_url + (f"?prefix={redis_prefix}" if redis_prefix else "")
        config = self.workdir / f"{name}-{port}.yaml"
        config.write_text(self.gateway_config(port, store_url, extra))
        env = {key: os.environ[key] for key in _GATEWAY_ENV_KEEP if key in os.environ}
        argv = [sys.executable, "-m", "sms_gateway", "--config", str(config), "serve"]
        proc = self.procs.start(name, argv, cpu, env=env, cwd=tree)
        proc.url = f"http://127.0.0.1:{port}"
        proc.code = code_version(tree)
        wait_ready(proc, f"{proc.url}/ready")
        return proc

    def stop_gateway(self, proc: Proc, graceful: bool = True) -> dict[str, Any]:
        """Stop it and keep what its log and /metrics say went wrong (errors, 5xx, retries)."""
        run: dict[str, Any] = {
            "name": proc.name,
            "command": proc.command,
            "pid": proc.pid,
            "code": proc.code,
            "rss_kib_at_end": rss_kib(proc.pid),
        }
        with contextlib.suppress(OSError, urllib.error.URLError):
            run["metrics"] = scrape_metrics(http_text(f"{proc.url}/metrics"))
        self.procs.stop(proc, graceful=graceful)
        run["exit_code"] = proc.popen.returncode
        run["log"] = summarise_log(proc.log)
        self.gateway_runs.append(run)
        return run

    def start_baseline(self, turns: bool) -> Proc:
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.baseline", "--port", str(port)]
        if turns:
            argv += [
                "--engine-url",
                f"{self.fakes_url}/v1/workspaces/{WORKSPACE}/message",
                "--provider-url",
                f"{self.fakes_url}{MESSAGES_PATH}",
                "--concurrency",
                str(self.settings.worker_concurrency or 64),
            ]
        proc = self.procs.start("baseline-turns" if turns else "baseline", argv, GATEWAY_CORE)
        proc.url = f"http://127.0.0.1:{port}"
        wait_ready(proc, f"{proc.url}/ready")
        return proc

    # ---------------------------------------------------------------------------- load
    def wait_for_quiet(self) -> dict[str, float]:
        """Other sessions' processes share this machine: wait (a bounded while) until they use under a quarter
        of a core, so that fewer points are measured while something else runs. The point records what it got."""
        started = time.monotonic()
        foreign = 0.0
        while True:
            pids = [p.pid for p in self.procs.running]
            ours0 = sum(cpu_seconds(pid) or 0 for pid in pids)
            busy0, _ = machine_cpu()
            time.sleep(1.0)
            ours1 = sum(cpu_seconds(pid) or 0 for pid in pids)
            busy1, _ = machine_cpu()
            foreign = max(0.0, (busy1 - busy0) - (ours1 - ours0))
            waited = time.monotonic() - started
            if foreign < 0.25 or waited >= self.settings.quiet_wait:
                return {"waited_s": round(waited, 1), "other_cores_before": round(foreign, 2)}

    def load(
        self,
        targets: Sequence[Proc],
        mode: str,
        senders: int,
        *,
        watch: Sequence[Proc] = (),
        count: int = 0,
        users: str = "per-sender",
        cpu: str | int | None = LOAD_CORE,
        poll: Callable[[], None] | None = None,
        duration: float | None = None,
    ) -> dict[str, Any]:
        s = self.settings
        argv = [
            sys.executable,
            "-m",
            "benchmarks.load",
            "--mode",
            mode,
            "--senders",
            str(senders),
            "--client",
            s.client,
            "--fakes-url",
            self.fakes_url,
        ]
        for target in targets:
            argv += ["--target", str(target.url)]
        if mode == "turn":
            argv += ["--feed", self.feed]
        if count:
            argv += ["--count", str(count), "--users", users]
        else:
            argv += ["--duration", str(duration or s.duration), "--warmup", str(s.warmup)]
        if mode == "open":
            argv += ["--rate", str(s.open_rate)]
        watched = [*watch, *([self.fakes] if self.fakes else []), *([self.redis] if self.redis else [])]
        for proc in watched:
            argv += ["--watch-pid", str(proc.pid)]
        full = pinned(argv, cpu)
        quiet = self.wait_for_quiet()
        limit = (count / 20 + 300) if count else (s.duration + s.warmup + 240)
        started = time.monotonic()
        with subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO) as popen:
            try:
                while popen.poll() is None:
                    if time.monotonic() - started > limit:
                        popen.kill()
                        raise RuntimeError(f"load generator did not finish within {limit:.0f}s")
                    if poll is not None:
                        poll()
                    time.sleep(0.5)
                out, err = popen.communicate()
            finally:
                if popen.poll() is None:
                    popen.kill()
        if popen.returncode != 0:
            raise RuntimeError(f"load generator failed ({popen.returncode}): {err.decode()[-2000:]}")
        result: dict[str, Any] = json.loads(out)
        result["command"] = shlex.join(full)
        result["quiet_wait"] = quiet
        cpu_s = result["cpu_s"]
        window = result["window_s"] or 1.0
        named = {str(p.pid): p.name for p in watched}
        processes = {k: v for k, v in cpu_s.items() if k in named or k == "load_generator"}
        ours = sum(v for v in processes.values() if v is not None)
        result["cpu_cores"] = {named.get(k, k): round(v / window, 3) for k, v in processes.items() if v is not None}
        result["cpu_cores"]["other_processes"] = round(max(0.0, cpu_s["machine_busy"] - ours) / window, 3)
        result["runq_wait_share"] = {
            named.get(k.split(":")[1], k): round(v / window, 3)
            for k, v in cpu_s.items()
            if k.startswith("runq_wait:") and v is not None
        }
        return result

    def record(
        self, label: str, system: str, result: dict[str, Any], servers: Sequence[Proc], **facts: Any
    ) -> dict[str, Any]:
        facts |= {
            "server_pids": [p.pid for p in servers],
            "server_names": [p.name for p in servers],
            "server_code": sorted({p.code for p in servers if p.code}),
            "server_command": " & ".join(p.command for p in servers),
        }
        point = {"label": label, "system": system, **facts, "result": result}
        per_msg_key = "turns_per_s" if result["mode"] == "turn" else "acks_per_s"
        rate = result.get(per_msg_key) or 0
        messages = rate * result["window_s"]
        server = facts.get("server_pids", [])
        server_cpu = sum(result["cpu_s"].get(str(pid)) or 0 for pid in server)
        point["server_cpu_us_per_msg"] = round(server_cpu / messages * 1e6, 1) if messages else None
        cores = result["cpu_cores"]
        helpers = sum(v for k, v in cores.items() if k in ("load_generator", "fakes", "redis"))
        point["helpers_cores"] = round(helpers, 3)
        flags = []
        if result["errors"] or result.get("dropped"):
            flags.append("errors")
        if result.get("turn_timeouts"):
            flags.append("turn timeouts")
        if helpers > 0.9 and facts.get("pinned", True):
            flags.append("load side near 1 core")
        if cores.get("other_processes", 0) > 0.25:
            flags.append(f"other processes used {cores['other_processes']:.2f} cores")
        # Kept, not flagged: the gateway's SQLite thread also waits for its own main thread on the one core.
        point["server_runq_wait_share"] = max(
            (result["runq_wait_share"].get(n, 0) for n in facts.get("server_names", [])), default=0
        )
        if result.get("signed_in_window"):
            flags.append("signed in window")
        point["flags"] = flags
        self.points.append(point)
        shown = result.get(per_msg_key)
        print(
            f"  {label:<58} {system:<22} {shown!s:>9}/s  cpu/msg {point['server_cpu_us_per_msg']!s:>7} us"
            f"  {' '.join(flags)}",
            flush=True,
        )
        return point

    def drain(self, expected_sends: int, what: str) -> dict[str, Any]:
        """Wait until the fake provider has one send per accepted webhook (the backlog of turns ran)."""
        started = time.monotonic()
        limit = max(120.0, expected_sends / 50)
        last, last_change = -1, started
        while True:
            stats = self.fakes_stats()
            if stats["sends"] >= expected_sends:
                return {
                    "drained": True,
                    "seconds": round(time.monotonic() - started, 2),
                    "sends": stats["sends"],
                    "duplicates": stats["duplicates"],
                }
            if stats["sends"] != last:
                last, last_change = stats["sends"], time.monotonic()
            if time.monotonic() - started > limit or time.monotonic() - last_change > 60:
                print(
                    f"  !! {what}: {stats['sends']} of {expected_sends} replies sent; the gateway is stuck", flush=True
                )
                return {
                    "drained": False,
                    "seconds": round(time.monotonic() - started, 2),
                    "sends": stats["sends"],
                    "expected": expected_sends,
                    "duplicates": stats["duplicates"],
                }
            time.sleep(0.25)

    # ---------------------------------------------------------------------------- scenarios
    def scenario_ack(self) -> None:
        s = self.settings
        print("== 1. webhook acknowledgements", flush=True)
        self.start_fakes(0)
        baseline = self.start_baseline(turns=False)
        try:
            for n in s.senders:
                r = self.load([baseline], "ack", n, watch=[baseline])
                self.record(f"acks, {n} senders", "baseline", r, scenario="ack", senders=n, servers=[baseline])
            r = self.load([baseline], "open", 10, watch=[baseline])
            self.record(f"acks open loop {s.open_rate:.0f}/s", "baseline", r, scenario="ack-open", servers=[baseline])
            self.extra["baseline_rss_kib"] = rss_kib(baseline.pid)
        finally:
            self.procs.stop(baseline)

        gateway = self.start_gateway("ack", "sqlite")
        try:
            for n in s.senders:
                self.reset_fakes(0)
                r = self.load([gateway], "ack", n, watch=[gateway])
                drained = self.drain(r["ok_total"], f"acks {n}")
                self.record(
                    f"acks, {n} senders",
                    "gateway sqlite",
                    r,
                    scenario="ack",
                    senders=n,
                    drain=drained,
                    servers=[gateway],
                    turns="background",
                )
            self.reset_fakes(0)
            r = self.load([gateway], "open", 10, watch=[gateway])
            drained = self.drain(r["ok_total"], "acks open loop")
            self.record(
                f"acks open loop {s.open_rate:.0f}/s",
                "gateway sqlite",
                r,
                scenario="ack-open",
                drain=drained,
                servers=[gateway],
                turns="background",
            )
        finally:
            self.stop_gateway(gateway)

        # The same with the turns held back: the engine answers only after a minute, so at most
        # workerConcurrency turns are in flight and the window measures the webhook path alone.
        for n in (*s.senders, 0):
            self.reset_fakes(HELD_ENGINE_DELAY_MS)
            gateway = self.start_gateway(f"ack-held-{n}", "sqlite")
            try:
                if n:
                    r = self.load([gateway], "ack", n, watch=[gateway])
                    self.record(
                        f"acks, {n} senders",
                        "gateway sqlite held",
                        r,
                        scenario="ack-held",
                        senders=n,
                        servers=[gateway],
                        turns="held",
                    )
                else:
                    r = self.load([gateway], "open", 10, watch=[gateway])
                    self.record(
                        f"acks open loop {s.open_rate:.0f}/s",
                        "gateway sqlite held",
                        r,
                        scenario="ack-open-held",
                        servers=[gateway],
                        turns="held",
                    )
            finally:
                self.stop_gateway(gateway, graceful=False)
        self.reset_fakes(0)

    def scenario_turns(self) -> None:
        s = self.settings
        print("== 2. whole turns, SQLite store (synchronous=FULL)", flush=True)
        self.start_fakes(0)
        for delay in (0, 200):
            self.reset_fakes(delay)
            baseline = self.start_baseline(turns=True)
            try:
                for n in s.senders:
                    self.reset_fakes(delay)
                    r = self.load([baseline], "turn", n, watch=[baseline])
                    self.record(
                        f"turns, {n} senders, engine {delay} ms",
                        "baseline bare turn",
                        r,
                        scenario="turns",
                        senders=n,
                        engine_delay_ms=delay,
                        servers=[baseline],
                    )
            finally:
                self.procs.stop(baseline)
            gateway = self.start_gateway(f"turns-{delay}ms", "sqlite")
            try:
                if delay == 0:
                    self.extra["gateway_idle"] = idle_cpu(gateway, 3.0 if s.quick else 10.0)
                for n in s.senders:
                    self.reset_fakes(delay)
                    r = self.load([gateway], "turn", n, watch=[gateway])
                    self.record(
                        f"turns, {n} senders, engine {delay} ms",
                        "gateway sqlite",
                        r,
                        scenario="turns",
                        senders=n,
                        engine_delay_ms=delay,
                        servers=[gateway],
                    )
            finally:
                self.stop_gateway(gateway)
        self.reset_fakes(0)

    def scenario_redis(self) -> None:
        s = self.settings
        print("== 3. whole turns, Redis store: one process, then two on one Redis", flush=True)
        if not Path(REDIS_SERVER).exists():
            print("  redis-server not found: skipped", flush=True)
            self.extra["redis"] = "skipped: no redis-server"
            return
        self.start_fakes(0)
        self.start_redis()
        gateway = self.start_gateway("redis-1", "redis")
        try:
            for n in s.senders:
                self.reset_fakes(0)
                r = self.load([gateway], "turn", n, watch=[gateway])
                self.record(
                    f"turns, {n} senders, engine 0 ms",
                    "gateway redis x1",
                    r,
                    scenario="redis-1",
                    senders=n,
                    servers=[gateway],
                )
        finally:
            self.stop_gateway(gateway)
        self.redis_command("FLUSHALL")
        # Two processes, one per core; the fakes, Redis and the load generator float over both cores.
        assert self.fakes is not None and self.redis is not None
        set_affinity(self.fakes.pid, "0,1")
        set_affinity(self.redis.pid, "0,1")
        gateways = [self.start_gateway("redis-2a", "redis", cpu=0), self.start_gateway("redis-2b", "redis", cpu=1)]
        try:
            for n in s.senders:
                if n < 2:
                    continue
                self.reset_fakes(0)
                r = self.load(gateways, "turn", n, watch=gateways, cpu=None)
                self.record(
                    f"turns, {n} senders, engine 0 ms",
                    "gateway redis x2",
                    r,
                    scenario="redis-2",
                    senders=n,
                    servers=gateways,
                    pinned=False,
                )
        finally:
            for g in gateways:
                self.stop_gateway(g)
            set_affinity(self.fakes.pid, str(LOAD_CORE))
            set_affinity(self.redis.pid, str(LOAD_CORE))

    def scenario_memory(self) -> None:
        s = self.settings
        n = s.sessions
        print(f"== 4a. memory: RSS with {n:,} sessions", flush=True)
        self.start_fakes(0)
        stores = [x for x in s.memory_stores if x != "redis" or Path(REDIS_SERVER).exists()]
        results: dict[str, Any] = {"sessions": n}
        for store in stores:
            if store == "redis":
                self.start_redis()
                self.redis_command("FLUSHALL")
            self.reset_fakes(0)
            gateway = self.start_gateway(f"memory-{store}", store)
            try:
                time.sleep(0.5)
                before = rss_kib(gateway.pid)
                r = self.load([gateway], "ack", 100, watch=[gateway], count=n, users="unique")
                drained = self.drain(r["ok_total"], f"{n} sessions ({store})")
                time.sleep(1.0)
                after = rss_kib(gateway.pid)
                entry: dict[str, Any] = {
                    "rss_kib_ready": before,
                    "rss_kib_with_sessions": after,
                    "peak_kib": peak_kib(gateway.pid),
                    "drain": drained,
                    "load": r,
                    "server_command": gateway.command,
                }
                if store == "redis":
                    info = self.redis_command("INFO", "memory")
                    entry["redis_server_rss_kib"] = rss_kib(self.redis.pid) if self.redis else None
                    entry["redis_used_memory"] = parse_info(info).get("used_memory")
                    entry["redis_keys"] = self.redis_command("DBSIZE")
                results[store] = entry
                print(
                    f"  {store:<8} RSS ready {fmt_mib(before)} -> with {n:,} sessions {fmt_mib(after)}"
                    f" (drained in {drained['seconds']} s)",
                    flush=True,
                )
            finally:
                self.stop_gateway(gateway)
        self.extra["memory"] = results

    def scenario_soak(self) -> None:
        s = self.settings
        total = s.turns
        print(f"== 4b. memory: RSS over {total:,} turns (SQLite, 100 senders)", flush=True)
        self.start_fakes(0)
        self.reset_fakes(0)
        gateway = self.start_gateway("soak", "sqlite")
        samples: list[tuple[int, int, float]] = []
        started = time.monotonic()
        next_report = [0.1]

        def poll() -> None:
            sends = int(self.fakes_stats()["sends"])
            rss = rss_kib(gateway.pid) or 0
            samples.append((sends, rss, round(time.monotonic() - started, 2)))
            if sends >= next_report[0] * total:
                print(
                    f"  {sends:>9,} turns  RSS {rss / 1024:7.1f} MiB  {time.monotonic() - started:6.0f} s", flush=True
                )
                next_report[0] += 0.1

        try:
            r = self.load([gateway], "turn", 100, watch=[gateway], count=total, poll=poll)
            poll()
            self.extra["soak"] = soak_summary(samples, total) | {"load": r, "server_command": gateway.command}
        finally:
            self.stop_gateway(gateway)


# ------------------------------------------------------------------------------ analysis helpers


def code_version(tree: Path = REPO) -> str:
    """HEAD, plus a hash of `git diff HEAD -- sms_gateway` when the gateway's code has uncommitted changes: the
    gateway is imported from the work tree when it starts, so a change made during a run shows here."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True, check=False).stdout

    head = git("rev-parse", "--short=12", "HEAD").strip()
    diff = git("diff", "HEAD", "--", "sms_gateway")
    return head + (f"+dirty-{hashlib.sha1(diff.encode()).hexdigest()[:8]}" if diff else "")


def idle_cpu(proc: Proc, seconds: float) -> dict[str, Any]:
    """What the gateway burns with nothing to do (its pollers and sweepers), in cores."""
    time.sleep(1.0)
    before = cpu_seconds(proc.pid) or 0.0
    time.sleep(seconds)
    used = (cpu_seconds(proc.pid) or 0.0) - before
    print(f"  gateway idle: {used / seconds:.3f} cores over {seconds:.0f} s", flush=True)
    return {"cores": round(used / seconds, 4), "seconds": seconds, "rss_kib": rss_kib(proc.pid)}


def peak_kib(pid: int) -> int | None:
    return status_kib(pid, "VmHWM")


def parse_info(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def fmt_mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f} MiB"


def scrape_metrics(text: str) -> dict[str, float]:
    """The counters that say what happened: turns, sends, webhooks, errors, jobs, dead letters (non-zero)."""
    wanted = (
        "smsgw_turns_total",
        "smsgw_sends_total",
        "smsgw_webhooks_total",
        "smsgw_errors_total",
        "smsgw_jobs_total",
        "smsgw_dead_letters_total",
        "smsgw_inbound_in_flight",
    )
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                if float(value):
                    out[name] = float(value)
    return out


def summarise_log(path: Path) -> dict[str, Any]:
    """Lines by level, and the events logged at warning or above (with a count each)."""
    levels: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    samples: list[str] = []
    other = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    other += 1
                    continue
                if not isinstance(entry, dict):
                    other += 1
                    continue
                level = str(entry.get("level", "?"))
                levels[level] += 1
                if level in ("warning", "error", "critical", "exception"):
                    problems[f"{level}:{entry.get('event')}"] += 1
                    if level != "warning" and len(samples) < 5:
                        samples.append(line.strip()[:1000])
    except OSError:
        pass
    return {
        "lines_by_level": dict(levels),
        "problems": dict(problems.most_common(20)),
        "error_samples": samples,
        "non_json_lines": other,
        "bytes": path.stat().st_size if path.exists() else 0,
    }


def soak_summary(samples: list[tuple[int, int, float]], total: int) -> dict[str, Any]:
    """RSS at each 10% of the turns, and the slope of the second half (least squares, KiB per 100k turns)."""
    marks = []
    for tenth in range(1, 11):
        goal = total * tenth / 10
        sample = next((x for x in samples if x[0] >= goal), samples[-1] if samples else None)
        if sample is not None:
            marks.append({"turns": sample[0], "rss_kib": sample[1], "seconds": sample[2]})
    half = [x for x in samples if x[0] >= total / 2]
    slope = None
    if len(half) >= 3:
        xs = [float(x[0]) for x in half]
        ys = [float(x[1]) for x in half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in xs)
        if var > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 100_000
    growth = (half[-1][1] - half[0][1]) if half else None
    return {
        "turns": total,
        "marks": marks,
        "second_half_slope_kib_per_100k_turns": None if slope is None else round(slope, 1),
        "second_half_growth_kib": growth,
        "first_rss_kib": samples[0][1] if samples else None,
        "last_rss_kib": samples[-1][1] if samples else None,
    }


# ------------------------------------------------------------------------------ the table


def find(points: list[dict[str, Any]], system: str, scenario: str, **facts: Any) -> dict[str, Any] | None:
    for point in points:
        if (
            point["system"] == system
            and point.get("scenario") == scenario
            and all(point.get(k) == v for k, v in facts.items())
        ):
            return point
    return None


def redis_cpu_per_turn(point: dict[str, Any]) -> float | None:
    """The private redis-server's CPU (us) per turn of a point's window."""
    result = point["result"]
    cores, turns = result["cpu_cores"].get("redis"), result.get("turns_per_s")
    return round(cores / turns * 1e6, 1) if cores and turns else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def build_figures(bench: Bench) -> list[dict[str, Any]]:
    s, pts = bench.settings, bench.points
    figures: list[dict[str, Any]] = []

    def add(
        name: str,
        gw: float | None,
        base: float | None,
        unit: str,
        target: str,
        met: bool | None,
        point: dict[str, Any] | None,
        base_point: dict[str, Any] | None = None,
        note: str = "",
    ) -> None:
        flags = [f"gateway: {x}" for x in (point or {}).get("flags", [])] + [
            f"baseline: {x}" for x in (base_point or {}).get("flags", [])
        ]
        figures.append(
            {
                "figure": name,
                "gateway": gw,
                "baseline": base,
                "unit": unit,
                "ratio": ratio(gw, base),
                "target": target,
                "met": met,
                "note": note,
                "flags": flags,
                "command": (point or {}).get("result", {}).get("command"),
                "server_command": (point or {}).get("server_command"),
                "baseline_command": (base_point or {}).get("result", {}).get("command"),
                "baseline_server_command": (base_point or {}).get("server_command"),
            }
        )

    def lat(point: dict[str, Any] | None, key: str, q: str) -> float | None:
        return None if point is None else point["result"].get(key, {}).get(q)

    for n in s.senders:
        gw, base = find(pts, "gateway sqlite", "ack", senders=n), find(pts, "baseline", "ack", senders=n)
        if gw and base:
            g, b = gw["result"]["acks_per_s"], base["result"]["acks_per_s"]
            r = ratio(g, b)
            add(
                f"acks/s, {n} senders, turns running",
                g,
                b,
                "/s",
                ">= 0.5x baseline",
                None if r is None else r >= 0.5,
                gw,
                base,
            )
        held = find(pts, "gateway sqlite held", "ack-held", senders=n)
        if held and base:
            g, b = held["result"]["acks_per_s"], base["result"]["acks_per_s"]
            r = ratio(g, b)
            add(
                f"acks/s, {n} senders, turns held",
                g,
                b,
                "/s",
                ">= 0.5x baseline",
                None if r is None else r >= 0.5,
                held,
                base,
            )
    top = max(s.senders)
    gw, base = find(pts, "gateway sqlite", "ack", senders=top), find(pts, "baseline", "ack", senders=top)
    if gw and base:
        for q in ("p50", "p99", "p99.9"):
            add(
                f"ack {q} ms, {top} senders closed loop",
                lat(gw, "ack_latency_ms", q),
                lat(base, "ack_latency_ms", q),
                "ms",
                "",
                None,
                gw,
                base,
            )
    base = find(pts, "baseline", "ack-open")
    for system, scenario, what in (
        ("gateway sqlite", "ack-open", "turns running"),
        ("gateway sqlite held", "ack-open-held", "turns held"),
    ):
        gw = find(pts, system, scenario)
        if gw and base:
            for q in ("p50", "p99", "p99.9"):
                value = lat(gw, "ack_latency_ms", q)
                target, met = ("< 10 ms", None if value is None else value < 10) if q == "p99" else ("", None)
                add(
                    f"ack {q} ms @ {s.open_rate:.0f}/s open loop, {what}",
                    value,
                    lat(base, "ack_latency_ms", q),
                    "ms",
                    target,
                    met,
                    gw,
                    base,
                )

    for delay in (0, 200):
        for n in s.senders:
            gw = find(pts, "gateway sqlite", "turns", senders=n, engine_delay_ms=delay)
            base = find(pts, "baseline bare turn", "turns", senders=n, engine_delay_ms=delay)
            if not gw:
                continue
            g = gw["result"]["turns_per_s"]
            b = base["result"]["turns_per_s"] if base else None
            target, met = "", None
            if delay == 0 and n == top:
                target, met = ">= 1,000/s", g >= 1000
            note = ""
            if delay:
                cap = min(n, s.worker_concurrency or 64) / (delay / 1000)
                note = f"bound by concurrency: {cap:.0f}/s"
            add(f"turns/s SQLite, {n} senders, engine {delay} ms", g, b, "/s", target, met, gw, base, note)
            for q in ("p50", "p99"):
                add(
                    f"turn {q} ms SQLite, {n} senders, engine {delay} ms",
                    lat(gw, "turn_latency_ms", q),
                    lat(base, "turn_latency_ms", q),
                    "ms",
                    "",
                    None,
                    gw,
                    base,
                )

    for n in s.senders:
        one = find(pts, "gateway redis x1", "redis-1", senders=n)
        base = find(pts, "baseline bare turn", "turns", senders=n, engine_delay_ms=0)
        if one:
            add(
                f"turns/s Redis x1, {n} senders",
                one["result"]["turns_per_s"],
                base["result"]["turns_per_s"] if base else None,
                "/s",
                "",
                None,
                one,
                base,
            )
            for q in ("p50", "p99"):
                add(
                    f"turn {q} ms Redis x1, {n} senders",
                    lat(one, "turn_latency_ms", q),
                    lat(base, "turn_latency_ms", q),
                    "ms",
                    "",
                    None,
                    one,
                    base,
                )
        two = find(pts, "gateway redis x2", "redis-2", senders=n)
        if two and one:
            g, b = two["result"]["turns_per_s"], one["result"]["turns_per_s"]
            r = ratio(g, b)
            add(
                f"turns/s Redis x2 vs x1, {n} senders",
                g,
                b,
                "/s",
                ">= 1.7x one process",
                None if r is None else r >= 1.7,
                two,
                one,
                "2 cores only: load, fakes and Redis share them with the 2 gateways",
            )
            # What the two-process point can say without a core per process: whether sharing the store costs
            # each turn more CPU, and how far Redis's own CPU per turn would let two full cores go.
            per_one, per_two = one["server_cpu_us_per_msg"], two["server_cpu_us_per_msg"]
            add(
                f"gateway CPU us per turn, Redis x2 vs x1, {n} senders",
                per_two,
                per_one,
                "us",
                "about 1x: sharing costs nothing",
                None,
                two,
                one,
                "both gateways' CPU over all turns",
            )
            redis_us = redis_cpu_per_turn(two)
            if per_two and redis_us:
                derived = min(2e6 / per_two, 1e6 / redis_us)
                add(
                    f"turns/s Redis x2 with a core each (derived), {n} senders",
                    round(derived, 1),
                    one["result"]["turns_per_s"],
                    "/s",
                    ">= 1.7x one process",
                    derived >= 1.7 * b,
                    two,
                    one,
                    f"min(2 cores / gateway CPU per turn, 1 core / Redis CPU per turn {redis_us:.0f} us): not measured",
                )

    memory = bench.extra.get("memory")
    base_rss = bench.extra.get("baseline_rss_kib")
    if memory:
        n = memory["sessions"]
        for store in ("memory", "sqlite", "redis"):
            entry = memory.get(store)
            if not entry:
                continue
            mib = entry["rss_kib_with_sessions"] / 1024 if entry["rss_kib_with_sessions"] else None
            target, met = (
                ("< 200 MB", None if mib is None else mib * 1.048576 < 200)
                if n >= 100_000
                else ("(target is for 100,000)", None)
            )
            note = ""
            if store == "redis" and entry.get("redis_server_rss_kib"):
                note = f"redis-server RSS {entry['redis_server_rss_kib'] / 1024:.1f} MiB"
            add(
                f"RSS MiB with {n:,} sessions, {store} store",
                None if mib is None else round(mib, 1),
                round(base_rss / 1024, 1) if base_rss else None,
                "MiB",
                target,
                met,
                None,
                None,
                note,
            )
    soak = bench.extra.get("soak")
    if soak:
        slope = soak["second_half_slope_kib_per_100k_turns"]
        growth = soak["second_half_growth_kib"]
        add(
            f"RSS growth MiB, 2nd half of {soak['turns']:,} turns",
            None if growth is None else round(growth / 1024, 2),
            None,
            "MiB",
            "no growth (slope <= 1 MiB/100k turns)",
            None if slope is None else slope <= 1024,
            None,
            None,
            f"slope {slope} KiB/100k turns; RSS {fmt_mib(soak['first_rss_kib'])} -> {fmt_mib(soak['last_rss_kib'])}",
        )
    return figures


def scale_rows(bench: Bench) -> list[dict[str, Any]]:
    rows = []
    for n in bench.settings.senders:
        row: dict[str, Any] = {"senders": n}
        for key, system, scenario, facts in (
            ("acks", "gateway sqlite", "ack", {}),
            ("acks_held", "gateway sqlite held", "ack-held", {}),
            ("acks_baseline", "baseline", "ack", {}),
            ("turns", "gateway sqlite", "turns", {"engine_delay_ms": 0}),
            ("turns_baseline", "baseline bare turn", "turns", {"engine_delay_ms": 0}),
            ("turns_redis", "gateway redis x1", "redis-1", {}),
        ):
            point = find(bench.points, system, scenario, senders=n, **facts)
            if point is None:
                continue
            result = point["result"]
            lat_key = "turn_latency_ms" if result["mode"] == "turn" else "ack_latency_ms"
            row[key] = {
                "per_s": result.get("turns_per_s" if result["mode"] == "turn" else "acks_per_s"),
                "p50_ms": result[lat_key]["p50"],
                "p99_ms": result[lat_key]["p99"],
                "cpu_us_per_msg": point["server_cpu_us_per_msg"],
                "server_cores": round(
                    sum(result["cpu_s"].get(str(pid)) or 0 for pid in point["server_pids"]) / result["window_s"], 2
                ),
            }
        rows.append(row)
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def print_tables(figures: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    header = ("figure", "gateway", "baseline", "ratio", "target", "met?")
    table = [header] + [
        (
            f["figure"],
            fmt(f["gateway"]),
            fmt(f["baseline"]),
            fmt(f["ratio"]),
            f["target"],
            fmt(f["met"]) if f["met"] is not None else "",
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    for i, line in enumerate(table):
        print(
            " | ".join(
                cell.ljust(widths[j]) if j == 0 or j == 4 else cell.rjust(widths[j]) for j, cell in enumerate(line)
            )
        )
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    # Latency rows repeat their throughput row's point: note each point once.
    seen: set[tuple[str, ...]] = set()
    notes = []
    for f in figures:
        key = (f["command"] or "", f["baseline_command"] or "", f["note"])
        if (f["note"] or f["flags"]) and key not in seen:
            seen.add(key)
            notes.append((f["figure"], f["note"], f["flags"]))
    if notes:
        print("\nnotes:")
        for name, note, flags in notes:
            print(f"  {name}: {'; '.join(x for x in [note, *flags] if x)}")
    if rows:
        print("\nscaling (per-message CPU of the server process in us; does it stay flat?)")
        cols = ("acks", "acks_held", "acks_baseline", "turns", "turns_baseline", "turns_redis")
        print(f"{'senders':>7} | " + " | ".join(f"{c:>28}" for c in cols))
        print(f"{'':>7} | " + " | ".join(f"{'per s   p99 ms   cpu us/msg':>28}" for _ in cols))
        for row in rows:
            cells = []
            for c in cols:
                v = row.get(c)
                cells.append(
                    f"{fmt(v['per_s']):>9} {fmt(v['p99_ms']):>8} {fmt(v['cpu_us_per_msg']):>9}" if v else f"{'-':>28}"
                )
            print(f"{row['senders']:>7} | " + " | ".join(f"{c:>28}" for c in cells))


# ------------------------------------------------------------------------------ main


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_kib = int(f.readline().split()[1])
    import aiohttp
    import twilio

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "twilio": twilio.__version__,
        "platform": platform.platform(),
        "taskset": TASKSET is not None,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "sms_gateway")),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sms-gw-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"(logs and databases kept in {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per point, 10,000 sessions, 20,000 soak turns")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--out", help="the JSON file (default benchmarks/results/<timestamp>.json)")
    parser.add_argument("--duration", type=float, help="measured seconds per point (default 10, quick 3)")
    parser.add_argument("--senders", default="1,10,100", help="concurrent senders for the scaling points")
    parser.add_argument("--sessions", type=int, help="sessions to seed for RSS (default 100,000; quick 10,000)")
    parser.add_argument("--turns", type=int, help="turns of the soak (default 1,000,000; quick 20,000)")
    parser.add_argument("--memory-stores", default="memory,sqlite,redis", help="stores of the sessions RSS scenario")
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop webhooks per second")
    parser.add_argument("--log-level", default="info", help="the gateway's log level (default info, as shipped)")
    parser.add_argument("--worker-concurrency", type=int, help="the gateway's workerConcurrency (default: its own)")
    parser.add_argument(
        "--redis-appendonly",
        choices=["no", "everysec", "always"],
        default="no",
        help="the private redis-server's AOF (default no)",
    )
    parser.add_argument("--client", choices=["raw", "aiohttp"], default="raw", help="the load generator's client")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="before each point, wait up to this many seconds for other processes to go quiet (default 20, quick 5)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGTERM, and SIGINT even when started in the background (where it is ignored), stop the run cleanly:
    # every process it started is ended and what was measured so far is still printed and written.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    if "scale" in only:  # the scaling table is read off the ack and turns points
        only += [x for x in ("ack", "turns") if x not in only]
    settings = Settings(
        quick=args.quick,
        duration=args.duration or (3.0 if args.quick else 10.0),
        warmup=0.5 if args.quick else 1.0,
        senders=tuple(int(x) for x in args.senders.split(",")),
        sessions=args.sessions or (10_000 if args.quick else 100_000),
        turns=args.turns if args.turns is not None else (20_000 if args.quick else 1_000_000),
        open_rate=args.rate,
        log_level=args.log_level,
        worker_concurrency=args.worker_concurrency,
        redis_appendonly=args.redis_appendonly,
        client=args.client,
        memory_stores=tuple(x.strip() for x in args.memory_stores.split(",") if x.strip()),
        quiet_wait=args.quiet_wait if args.quiet_wait is not None else (5.0 if args.quick else 20.0),
    )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"{stamp}.json"
    meta = machine_facts() | {
        "command": shlex.join([sys.executable, "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "settings": settings.__dict__,
        "scenarios": only,
        "started": stamp,
    }
    print(
        f"sms-gateway benchmarks: {meta['cpus']} cores ({meta['cpu_model']}), python {meta['python']}, "
        f"aiohttp {meta['aiohttp']}; gateway on core {GATEWAY_CORE}, load + fakes on core {LOAD_CORE}"
        f"{'' if TASKSET else ' (no taskset: unpinned)'}",
        flush=True,
    )
    with workspace(args.keep) as workdir:
        meta["fsync_ms_at_start"] = fsync_latency(workdir)
        print(
            f"fsync of a 4 KiB write in the work folder: p50 {meta['fsync_ms_at_start']['p50']} ms, "
            f"p99 {meta['fsync_ms_at_start']['p99']} ms (every durable acknowledgement waits for one)",
            flush=True,
        )
        procs = Procs(workdir)
        bench = Bench(settings, workdir, procs)
        failed: str | None = None
        try:
            for name in SCENARIOS:
                if name in only and name != "scale":
                    if name == "soak" and settings.turns <= 0:
                        continue
                    getattr(bench, f"scenario_{name}")()
        except Exception as exc:
            failed = f"{type(exc).__name__}: {exc}"
            print(f"!! benchmark failed: {failed}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            failed = "interrupted"
        finally:
            procs.stop_all()
        figures = build_figures(bench)
        rows = scale_rows(bench) if "scale" in only else []
        print_tables(figures, rows)
        meta["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        meta["fsync_ms_at_end"] = fsync_latency(workdir)
        report = {
            "meta": meta,
            "failed": failed,
            "figures": figures,
            "scaling": rows,
            "points": bench.points,
            "gateway_runs": bench.gateway_runs,
            **bench.extra,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))
        print(f"\nJSON: {out}")
        versions = sorted({run["code"] for run in bench.gateway_runs if run.get("code")})
        if len(versions) > 1:
            print(f"!! the gateway's code changed during the run: {versions} (each point says which it ran)")
        problems: Counter[str] = Counter()
        for run in bench.gateway_runs:
            problems.update(run["log"]["problems"])
        if problems:
            print(f"gateway warnings/errors logged: {dict(problems)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
