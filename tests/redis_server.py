"""A throw-away `redis-server` for tests: its own free port, its own directory, stopped afterwards.

    with RedisServer(appendonly=True, appendfsync="always") as server:
        store = create_store(server.url)
        ...
        server.stop()       # Redis is down
        server.start()      # the same server again: same port, same directory (AOF data kept)
        server.kill()       # kill -9: a crash, nothing written on the way out

Never touches a shared Redis. `redis_available()` tells a fixture whether to skip.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """Send one inline command and return the raw reply (no client library needed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command + b"\r\n")
        return s.recv(4096)


class RedisServer:
    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: Sequence[str] = (),
    ) -> None:
        self._owned_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="sms-gw-redis-")) if directory is None else Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # Redis's default
        self.extra_args = list(extra_args)  # e.g. ["--rename-command", "CONFIG", ""]
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server; the first start picks a free port, later starts reuse it (a restart)."""
        if self.running:
            return
        attempts = 1 if self.port else 5  # a free port can be taken by someone else before we bind it
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = _free_port()
            if self._spawn(timeout):
                return
        raise RuntimeError(f"redis-server did not start on port {self.port}: {self._log_tail()}")

    def _spawn(self, timeout: float) -> bool:
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                self.appendfsync,
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            try:
                if _command(self.port, b"PING").startswith(b"+PONG"):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        self._kill()
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down cleanly (SIGTERM: Redis writes its append-only file before it exits)."""
        if self._process is None:
            return
        self.resume()
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: Redis dies at once, as in a crash; what it had not written to its files is gone."""
        self.resume()
        self._kill()

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections but never answers (a hung or overloaded Redis)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        """FLUSHALL: a clean slate between tests sharing one server."""
        reply = _command(self.port, b"FLUSHALL")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def redis_server(
    directory: Path | str | None = None, *, appendonly: bool = False, appendfsync: str = "everysec"
) -> Iterator[RedisServer]:
    """For a pytest fixture: `with redis_server() as server: yield server`."""
    with RedisServer(directory, appendonly=appendonly, appendfsync=appendfsync) as server:
        yield server
