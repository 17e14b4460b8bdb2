"""Failures are kept as dead letters an operator can list and replay (`sms-gateway dead-letters`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.fakes.watson import text_output
from tests.harness import running_gateway
from tests.procs import inherited_env
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
# The console script pip installed beside this interpreter: what an operator runs.
CONSOLE_SCRIPT = Path(sys.executable).parent / "sms-gateway"


def cli(db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = inherited_env()
    env["STORE_URL"] = db if isinstance(db, str) else f"sqlite:///{db}"
    return subprocess.run(
        [str(CONSOLE_SCRIPT), "dead-letters", *args], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT
    )


def listed(db: Path, *args: str) -> list[dict[str, Any]]:
    """`dead-letters list`: every line of stdout is one JSON object, the count is on stderr."""
    result = cli(db, "list", *args)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert f"{len(entries)} dead letter(s)" in result.stderr
    return entries


def seconds_ago(iso: str) -> float:
    return time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_unanswered_turn_is_dead_lettered_and_replayed(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with running_gateway(tmp_path) as gw:
        gw.watson.fail(2, status=500, body={"error": "Internal error in dialog runtime", "code": 500})
        await gw.sms("is my claim approved?")
        sent = await gw.wait_sent(1)
        await gw.settle()
        assert sent[0].body == "Sorry, we can't answer right now."
        entries = listed(db)
        assert [(e["kind"], e["attempts"]) for e in entries] == [("turn", 0)]
        # The engine's own answer, not only that it failed; and when.
        assert entries[0]["error"] == "engine answered HTTP 500: Internal error in dialog runtime"
        assert 0 <= seconds_ago(entries[0]["deadLetteredAt"]) < 600
        assert cli(db).stdout == cli(db, "list").stdout, "`dead-letters` alone lists"
        gw.watson.v1_dialog = lambda text, ctx: {"output": text_output(f"Answer to: {text}")}
        replay = cli(db, "replay", entries[0]["id"])
        assert replay.returncode == 0 and "queued again" in replay.stdout
        sent = await gw.wait_sent(2)
        await gw.settle()
        assert sent[1].body == "Answer to: is my claim approved?"
        assert listed(db) == []
        missing = cli(db, "replay", "no-such-id")
        assert missing.returncode == 1 and "no such dead letter: no-such-id" in missing.stderr


async def test_send_given_up_after_retries_is_dead_lettered_then_replayed(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with running_gateway(tmp_path) as gw:
        gw.twilio.fail_next(3, status=500)
        await gw.sms("hi")
        await gw.settle(timeout=15)
        assert gw.twilio.messages == [] and gw.twilio.request_count == 3, "1 try + SMS_PROVIDER_MAX_RETRY_NUM=2"
        entries = listed(db)
        assert [(e["kind"], e["attempts"]) for e in entries] == [("send", 3)]
        assert entries[0]["error"] == "20500: Scripted failure (500)", "Twilio's own code and message"
        assert 0 <= seconds_ago(entries[0]["deadLetteredAt"]) < 600
        assert cli(db, "replay", "--all").returncode == 0
        sent = await gw.wait_sent(1)
        assert sent[0].body == "You said: hi"
        # The turn after the failure told the engine about it.
        await gw.sms("still there?")
        await gw.settle()
        assert gw.watson.of_kind("v1")[1].json["context"]["smsError"]["code"] == "20500"


async def test_replayed_turn_that_fails_again_keeps_the_engines_new_error(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with running_gateway(tmp_path) as gw:
        gw.watson.fail(2, status=500)
        await gw.sms("hello?")
        await gw.wait_sent(1)
        await gw.settle()
        [entry] = listed(db)
        gw.watson.fail(1, status=404, body={"error": "Workspace not found", "code": 404})  # not retried
        assert cli(db, "replay", entry["id"]).returncode == 0
        await until(lambda: not gw.watson.failures, what="the replayed turn")
        await gw.settle()
        [again] = listed(db)
        assert again["id"] == entry["id"] and again["error"] == "engine answered HTTP 404: Workspace not found"


def test_limit_caps_the_list_and_says_so(tmp_path: Path) -> None:
    import asyncio

    from sms_gateway.store.base import Job
    from sms_gateway.store.sqlite import SQLiteStore

    async def dead_letters(count: int) -> None:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'gateway.db'}")
        await store.open()
        try:
            for n in range(count):
                await store.enqueue_job(Job(f"job-{n}", "send", {"messageId": f"m{n}"}))
                await store.dead_letter_job(f"job-{n}", f"21610: unsubscribed {n}", time.time())
        finally:
            await store.close()

    asyncio.run(dead_letters(3))
    result = cli(tmp_path / "gateway.db", "list", "--limit", "2")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["job-0", "job-1"]
    assert "2 dead letter(s) (--limit 2 reached)" in result.stderr


def test_a_store_that_does_not_exist_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for args in ((), ("list",), ("replay", "--all")):
        result = cli(missing, *args)
        assert result.returncode == 2 and result.stdout == ""
        assert f"no SQLite database at {missing}" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists()
    memory = cli("memory://")
    assert memory.returncode == 2 and "memory://" in memory.stderr
