"""Failures are kept as dead letters an operator can list and replay (`sms-gateway dead-letters`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.watson import text_output
from tests.harness import running_gateway

ROOT = Path(__file__).resolve().parent.parent


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATSON_", "SMS_", "TENANT_", "CTRL_"))}
    env["STORE_URL"] = f"sqlite:///{db}"
    return subprocess.run([sys.executable, "-m", "sms_gateway", "dead-letters", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=ROOT)


async def test_unanswered_turn_is_dead_lettered_and_replayed(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with running_gateway(tmp_path) as gw:
        gw.watson.fail(2, status=500)
        await gw.sms("is my claim approved?")
        sent = await gw.wait_sent(1)
        await gw.settle()
        assert sent[0].body == "Sorry, we can't answer right now."
        listed = cli(db, "list")
        assert listed.returncode == 0, listed.stderr
        entries = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
        assert [(e["kind"], e["attempts"]) for e in entries] == [("turn", 0)]
        gw.watson.v1_dialog = lambda text, ctx: {"output": text_output(f"Answer to: {text}")}
        replay = cli(db, "replay", entries[0]["id"])
        assert replay.returncode == 0 and "queued again" in replay.stdout
        sent = await gw.wait_sent(2)
        await gw.settle()
        assert sent[1].body == "Answer to: is my claim approved?"
        assert "0 dead letter(s)" in cli(db, "list").stdout
        assert cli(db, "replay", "no-such-id").returncode == 1


async def test_send_given_up_after_retries_is_dead_lettered_then_replayed(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    async with running_gateway(tmp_path) as gw:
        gw.twilio.fail_next(3, status=500)
        await gw.sms("hi")
        await gw.settle(timeout=15)
        assert gw.twilio.messages == [] and gw.twilio.request_count == 3, "1 try + SMS_PROVIDER_MAX_RETRY_NUM=2"
        entries = [json.loads(line) for line in cli(db, "list").stdout.splitlines() if line.startswith("{")]
        assert [(e["kind"], e["attempts"]) for e in entries] == [("send", 3)]
        assert entries[0]["error"].startswith("20500")
        assert cli(db, "replay", "--all").returncode == 0
        sent = await gw.wait_sent(1)
        assert sent[0].body == "You said: hi"
        # The turn after the failure told the engine about it.
        await gw.sms("still there?")
        await gw.settle()
        assert gw.watson.of_kind("v1")[1].json["context"]["smsError"]["code"] == "20500"
