"""What an acknowledgement guarantees on a given Redis: read from its persistence settings once, at start.

A provider that got 200 for a webhook never sends it again, so the message must survive whatever the server
survives from then on. Redis decides that with `appendonly` and `appendfsync`:

* `appendonly yes`, `appendfsync always`: a write is in the append-only file and fsynced before Redis
  answers it. Nothing more to do (`fsync_always`).
* `appendonly yes`, `appendfsync everysec` on Redis >= 7.2: the write is fsynced within about a second;
  WAITAOF tells when. The gateway waits for it before it answers (`waitaof`).
* anything else: an acknowledged message survives a crash of the gateway, not of Redis's machine
  (`not_durable`); or the settings cannot be read (`unverified`, e.g. CONFIG disabled on a managed Redis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# WAITAOF appeared in Redis 7.2 (Valkey, a fork of 7.2.4, reports redis_version 7.2.4 too).
WAITAOF_SINCE = (7, 2)

_ADVICE = (
    "for acknowledged messages to survive a crash of Redis's machine, run Redis with appendonly yes and "
    "appendfsync always (or everysec on Redis 7.2 or later, where the gateway waits with WAITAOF)"
)


class Durability(StrEnum):
    FSYNC_ALWAYS = "fsync_always"  # on disk when Redis answers: nothing to add
    WAITAOF = "waitaof"  # on disk once WAITAOF confirms it: waited for before answering
    NOT_DURABLE = "not_durable"  # survives a gateway crash, not a crash of Redis's machine
    UNVERIFIED = "unverified"  # the settings could not be read


@dataclass(frozen=True, slots=True)
class RedisDurability:
    mode: Durability
    guarantee: str  # what an acknowledgement guarantees, in words, for the startup log
    appendonly: str | None = None
    appendfsync: str | None = None
    version: str | None = None

    @property
    def durable(self) -> bool:
        return self.mode in (Durability.FSYNC_ALWAYS, Durability.WAITAOF)


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """`7.2.4` -> (7, 2, 4); None when it is not a version (a proxy's own string, a missing field)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def has_waitaof(version: str | None) -> bool:
    parsed = version_tuple(version)
    return parsed is not None and parsed[:2] >= WAITAOF_SINCE


def classify(appendonly: str | None, appendfsync: str | None, version: str | None) -> RedisDurability:
    """The durability of a server with these settings (`CONFIG GET` values, `INFO server`'s redis_version);
    None for a setting that could not be read."""

    def result(mode: Durability, guarantee: str) -> RedisDurability:
        return RedisDurability(mode, guarantee, appendonly, appendfsync, version)

    if appendonly is None or (appendonly == "yes" and appendfsync is None):
        return result(
            Durability.UNVERIFIED,
            "Redis's persistence settings could not be read (CONFIG GET refused, as on many managed "
            "Redis services): an acknowledged message survives a gateway crash; whether it survives a "
            f"Redis crash depends on the server's settings; {_ADVICE}",
        )
    if appendonly != "yes":
        return result(
            Durability.NOT_DURABLE,
            "appendonly is off: an acknowledged message survives a gateway crash, but a Redis crash "
            "loses every message, session and job written since the last RDB snapshot (all of them "
            "without snapshots); " + _ADVICE,
        )
    if appendfsync == "always":
        return result(
            Durability.FSYNC_ALWAYS,
            "appendonly yes, appendfsync always: a message is on disk before it is acknowledged and "
            "survives a crash of Redis or of its machine",
        )
    if appendfsync == "everysec" and has_waitaof(version):
        return result(
            Durability.WAITAOF,
            f"appendonly yes, appendfsync everysec on Redis {version}: the gateway waits (WAITAOF) "
            "until a message is on disk before it acknowledges it, and answers 503 (the provider "
            "retries) when that is not confirmed in time",
        )
    if appendfsync == "everysec":
        return result(
            Durability.NOT_DURABLE,
            f"appendfsync everysec on Redis {version or '(unknown version)'}, which has no WAITAOF: an "
            "acknowledged message survives a gateway crash and a crash of the Redis process, but up to "
            "about 1 s of acknowledged messages (more while the disk is slow) can be lost if Redis's "
            "machine crashes or loses power; " + _ADVICE,
        )
    return result(
        Durability.NOT_DURABLE,
        f"appendfsync {appendfsync}: the operating system decides when the append-only file reaches the "
        "disk (often every 30 s): an acknowledged message survives a gateway crash and a crash of the "
        "Redis process, but what was not yet written out is lost if Redis's machine crashes or loses "
        "power; " + _ADVICE,
    )
