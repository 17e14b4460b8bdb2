"""`sms-gateway dead-letters list|replay`: what the gateway gave up on, for an operator to see and retry."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sms_gateway.config.model import Config
from sms_gateway.store.base import Job, Store, StoreUnavailable
from sms_gateway.store.factory import create_store


def describe(job: Job) -> dict[str, object]:
    payload = job.payload
    summary: dict[str, object] = {"id": job.job_id, "kind": job.kind, "attempts": job.attempts, "error": job.last_error}
    if job.kind == "send":
        summary.update(messageId=payload.get("messageId"), tenant=payload.get("tenantNumber"),
                       media=len(payload.get("mediaUrls") or []))
    elif job.kind == "turn":
        summary.update(messageId=payload.get("messageId"), tenant=payload.get("tenantNumber"))
    return summary


async def run(config: Config, action: str, ids: Sequence[str], replay_all: bool, limit: int) -> int:
    store: Store = create_store(config.store_url)
    try:
        await store.open()
        dead = await store.dead_letters(limit)
        if action == "list":
            for job in dead:
                print(json.dumps(describe(job)))
            print(f"{len(dead)} dead letter(s)")
            return 0
        targets = [job.job_id for job in dead] if replay_all else list(ids)
        if not targets:
            print("nothing to replay: give dead-letter ids or --all")
            return 2
        missing = 0
        for job_id in targets:
            if await store.replay_dead_letter(job_id, time.time()):
                print(f"queued again: {job_id}")
            else:
                print(f"no such dead letter: {job_id}")
                missing += 1
        return 1 if missing else 0
    except StoreUnavailable as exc:
        print(f"store unavailable: {exc}")
        return 3
    finally:
        await store.close()
