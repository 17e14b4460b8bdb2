"""`sms-gateway dead-letters [list|replay]`: what the gateway gave up on, for an operator to see and retry.

`list` writes one JSON object per line to stdout and nothing else (so it can be piped to `jq`); counts and
errors go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sms_gateway.config.mask import mask_urls_in_text
from sms_gateway.config.model import Config
from sms_gateway.store.base import Job, Store, StoreUnavailable
from sms_gateway.store.factory import create_store, existing_store_problem

# Dead-lettered before the time was kept, a turn's run_at is the worker's "never": no time to show.
_LATEST_TIME = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


def describe(job: Job) -> dict[str, object]:
    """One dead letter as `list` shows it: when it was given up on, why (the engine's or the provider's own
    error), and what it was."""
    payload = job.payload
    summary: dict[str, object] = {
        "id": job.job_id,
        "kind": job.kind,
        "deadLetteredAt": _iso(job.run_at),
        "attempts": job.attempts,
        "error": job.last_error,
    }
    if job.kind == "send":
        summary.update(
            messageId=payload.get("messageId"),
            tenant=payload.get("tenantNumber"),
            media=len(payload.get("mediaUrls") or []),
        )
    elif job.kind == "turn":
        summary.update(messageId=payload.get("messageId"), tenant=payload.get("tenantNumber"))
    return summary


def _iso(epoch: float) -> str | None:
    if not 0 < epoch < _LATEST_TIME:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def run(config: Config, action: str, ids: Sequence[str], replay_all: bool, limit: int) -> int:
    problem = existing_store_problem(config.store_url)
    if problem is not None:
        print(f"cannot open the store: {problem}", file=sys.stderr)
        return 2
    store: Store = create_store(config.store_url)
    try:
        await store.open()
        if action == "list":
            dead = await store.dead_letters(limit)
            for job in dead:
                print(json.dumps(describe(job)))
            print(
                f"{len(dead)} dead letter(s)" + (f" (--limit {limit} reached)" if len(dead) >= limit else ""),
                file=sys.stderr,
            )
            return 0
        targets = [job.job_id for job in await store.dead_letters(limit)] if replay_all else list(ids)
        if not targets:
            if replay_all:
                print("0 dead letter(s): nothing to replay", file=sys.stderr)
                return 0
            print("nothing to replay: give dead-letter ids or --all", file=sys.stderr)
            return 2
        missing = 0
        for job_id in targets:
            if await store.replay_dead_letter(job_id, time.time()):
                print(f"queued again: {job_id}")
            else:
                print(f"no such dead letter: {job_id}", file=sys.stderr)
                missing += 1
        return 1 if missing else 0
    except StoreUnavailable as exc:
        print(f"store unavailable: {mask_urls_in_text(str(exc))}", file=sys.stderr)
        return 3
    finally:
        await store.close()
