"""A Redis 7.2 as far as a client can tell, in front of a real redis-server of any version: for the WAITAOF code
path, which the Redis on these machines (7.0) does not have.

    async with waitaof_shim(server.port) as shim:    # server: a RedisServer(appendonly=True)
        store = RedisStore(shim.url)                  # sees redis_version 7.2.4
        shim.local_fsyncs = 0                         # WAITAOF now answers "not on disk in time"

Every client connection gets a connection of its own to the real server, and its commands are forwarded in order.
`INFO` and `HELLO` answers say version 7.2.4. `WAITAOF` is answered by the shim (`[local_fsyncs, 0]`) in its place
among the connection's answers, after those to everything sent before it, and noted in `calls` with the command
that came before it on its connection (WAITAOF confirms only its own connection's writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

SHIM_VERSION = b"7.2.4"


@dataclass(frozen=True, slots=True)
class WaitaofCall:
    previous: str  # the command sent before it on the same connection
    args: tuple[str, ...]  # numlocal, numreplicas, timeout


async def _read_command(reader: asyncio.StreamReader) -> tuple[list[bytes], bytes] | None:
    """One RESP command as clients send it (an array of bulk strings): (arguments, raw bytes); None at the end."""
    head = await reader.readline()
    if not head:
        return None
    if not head.startswith(b"*"):
        raise ValueError(f"not a RESP array: {head!r}")
    raw, args = [head], []
    for _ in range(int(head[1:-2])):
        size = await reader.readline()
        data = await reader.readexactly(int(size[1:-2]) + 2)
        raw += [size, data]
        args.append(data[:-2])
    return args, b"".join(raw)


async def _read_reply(reader: asyncio.StreamReader) -> bytes:
    """One RESP2 or RESP3 reply (redis-py speaks RESP3 when the server does), raw."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("the server closed the connection")
    kind = line[:1]
    if kind in b"+-:_,#(":  # simple string, error, integer, null, double, boolean, big number
        return line
    if kind in b"$!=":  # bulk string, bulk error, verbatim string
        size = int(line[1:-2])
        return line if size < 0 else line + await reader.readexactly(size + 2)
    if kind in b"*~>%|":  # array, set, push; map and attribute: two replies an entry (an attribute precedes one)
        count = max(int(line[1:-2]), 0) * (2 if kind in b"%|" else 1) + (1 if kind == b"|" else 0)
        parts = [line]
        for _ in range(count):
            parts.append(await _read_reply(reader))
        return b"".join(parts)
    raise ValueError(f"unexpected reply {line!r}")


def _as_7_2(reply: bytes) -> bytes:
    """An INFO answer (a bulk or verbatim string) with redis_version 7.2.4; HELLO's map likewise."""
    if reply[:1] in b"$=":
        body = reply[reply.index(b"\r\n") + 2 : -2]
        body = re.sub(rb"redis_version:[0-9.]+", b"redis_version:" + SHIM_VERSION, body)
        return reply[:1] + b"%d\r\n%s\r\n" % (len(body), body)
    if reply[:1] == b"%":  # HELLO: ... $7 version $6 7.0.15 ...
        return re.sub(
            rb"\$7\r\nversion\r\n\$\d+\r\n[0-9.]+\r\n",
            b"$7\r\nversion\r\n$%d\r\n%s\r\n" % (len(SHIM_VERSION), SHIM_VERSION),
            reply,
        )
    return reply


class WaitaofShim:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.local_fsyncs = 1  # what WAITAOF answers: 1 = on this server's disk, 0 = not confirmed in time
        self.calls: list[WaitaofCall] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # each connection's loop then ends by itself
            writer.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        # What to answer next, in order: ("up", None) a reply of the server's, ("version", None) one whose
        # version is rewritten,
        # ("own", bytes) the shim's own answer.
        answers: asyncio.Queue[tuple[str, bytes | None]] = asyncio.Queue()
        relay = asyncio.create_task(self._relay(up_reader, writer, answers))
        previous = ""
        try:
            while (command := await _read_command(reader)) is not None:
                args, raw = command
                name = args[0].decode().upper()
                if name == "WAITAOF":
                    self.calls.append(WaitaofCall(previous, tuple(a.decode() for a in args[1:])))
                    await answers.put(("own", b"*2\r\n:%d\r\n:0\r\n" % self.local_fsyncs))
                else:
                    up_writer.write(raw)
                    await up_writer.drain()
                    await answers.put(("version" if name in ("INFO", "HELLO") else "up", None))
                previous = name
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await relay
            up_writer.close()

    @staticmethod
    async def _relay(
        up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: asyncio.Queue[tuple[str, bytes | None]]
    ) -> None:
        while True:
            kind, own = await answers.get()
            if kind == "own":
                assert own is not None
                reply = own
            else:
                reply = await _read_reply(up_reader)
                if kind == "version":
                    reply = _as_7_2(reply)
            writer.write(reply)
            await writer.drain()


@asynccontextmanager
async def waitaof_shim(upstream_port: int) -> AsyncIterator[WaitaofShim]:
    shim = WaitaofShim(upstream_port)
    await shim.start()
    try:
        yield shim
    finally:
        await shim.close()
