"""Which process holds a lease, and whether it still lives.

Each gateway process registers itself in the store as an `Owner` and beats every `BEAT_SECONDS`; its heartbeat
runs out after `MISSED_BEATS` missed beats. At every beat it also looks at the other owners: one whose heartbeat
has run out, or which runs on this machine and has gone (kill -9, a crash), is released, and the work it held
is free at once instead of when its leases run out. A process on this machine that still runs keeps its leases
even when its heartbeat lapses (a loaded or stalled process, a store that was locked for a while): they last as
long as it renews them, so its turns never run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog

from sms_gateway.store.base import Owner, Store, StoreUnavailable

log = structlog.get_logger("sms_gateway.owners")

BEAT_SECONDS = 2.0
MISSED_BEATS = 3
_PROC = Path("/proc")


def machine_id() -> str:
    """What processes that can see each other's pids share: the host name, and on Linux the boot and the pid
    namespace (two containers on one host, even with one host name, have different pid namespaces). Where
    Linux does not tell them, no other process shares it: their pids are never judged from here."""
    host = socket.gethostname()
    if not _PROC.joinpath("self").exists():
        return host
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        pids = os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return f"{host}|unknown|{uuid.uuid4().hex}"
    return f"{host}|{boot}|{pids}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks after boot) of a process from /proc; None if it does not exist."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (command) ", whatever the command's name holds
    return fields[0], fields[19]


def process_start(pid: int) -> str:
    """The process's start time as the kernel reports it ("" where there is no /proc)."""
    try:
        found = _stat(pid)
    except OSError:
        return ""
    return "" if found is None else found[1]


def this_process() -> Owner:
    pid = os.getpid()
    return Owner(f"{pid}-{uuid.uuid4().hex[:8]}", machine_id(), pid, process_start(pid))


def runs_here(owner: Owner, machine: str) -> bool | None:
    """Whether `owner`'s process still runs, when it ran on `machine` (this one); None for another machine.

    A pid now used by another process (another start time) and a zombie count as gone; without /proc, a pid
    that exists counts as running (a reused pid then keeps the leases until they run out: slower, never twice).
    """
    if owner.machine != machine:
        return None
    if _PROC.joinpath("self/stat").exists():
        found = _stat(owner.pid)
        if found is None:
            return False
        state, started = found
        return state not in ("Z", "X") and (not owner.started or started == owner.started)
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OwnerHeartbeat:
    """Keeps this process registered as alive, and releases the owners that are not (see the module's doc).

    `job_settle_seconds`: how long a job's attempt cut short may still take effect elsewhere (a send the provider
    is still creating), so the jobs of a dead process whose attempt had begun (`Job.begun`) wait that long (at
    most until their leases end) before they run again; its other jobs and its messages' turns run again at
    once. `on_released` is called when work was freed (to
    lease it now rather than at the next poll)."""

    def __init__(
        self,
        store: Store,
        owner: Owner | None = None,
        *,
        beat_seconds: float = BEAT_SECONDS,
        missed_beats: int = MISSED_BEATS,
        job_settle_seconds: float = 0.0,
        on_released: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.job_settle_seconds = job_settle_seconds
        self.owner = owner if owner is not None else this_process()
        self.beat_seconds = beat_seconds
        self.ttl_seconds = beat_seconds * missed_beats
        self.on_released = on_released
        self.clock = clock
        self._machine = self.owner.machine
        self._task: asyncio.Task[None] | None = None
        self._beaten = False

    async def start(self) -> None:
        """Register and release the dead at once (so a restarted process takes its predecessor's work before it
        leases anything), then beat in the background."""
        await self.beat()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.beat_seconds)
            await self.beat()

    async def beat(self) -> list[str]:
        """One beat: stay alive, release the owners that are not. Never raises (but cancellation): the owners
        it released."""
        try:
            return await self._beat()
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            log.error("store_unavailable", where="owner_heartbeat", error=str(exc))
        except Exception:
            log.exception("owner_heartbeat_failed")
        return []

    async def _beat(self) -> list[str]:
        was_alive = await self.store.beat_owner(self.owner, self.ttl_seconds, self.clock())
        if self._beaten and not was_alive:
            # Another process may have taken our work: the leases we still renew are ours again only if not.
            log.warning("owner_heartbeat_lapsed", owner=self.owner.owner_id)
        self._beaten = True
        dead: list[str] = []
        for state in await self.store.owners(self.clock()):
            if state.owner.owner_id == self.owner.owner_id:
                continue
            here = runs_here(state.owner, self._machine)
            if here is False:  # gone from this machine: no need to wait for its heartbeat to run out
                await self.store.end_owner(state.owner.owner_id)
            if here is False or (here is None and not state.alive):
                dead.append(state.owner.owner_id)
        if not dead:
            return []
        released = await self.store.release_owners(dead, self.clock(), self.job_settle_seconds)
        if released:
            log.info("owners_released", owners=released)
            self.on_released()
        return released

    async def stop(self) -> None:
        """Stop beating and deregister: whatever this process still holds is free at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.store.end_owner(self.owner.owner_id)
            await self.store.release_owners([self.owner.owner_id], self.clock(), self.job_settle_seconds)
        except StoreUnavailable as exc:
            log.error("store_unavailable", where="owner_deregister", error=str(exc))
