"""The console script, run as a user runs it: a real process."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from sms_gateway.cli import build_parser
from sms_gateway.config.load import load_config
from sms_gateway.providers import PROVIDER_TYPES
from sms_gateway.web.webhooks import webhook_urls
from tests.harness import free_port
from tests.procs import inherited_env

ROOT = Path(__file__).resolve().parent.parent
# The least a single tenant needs, set as IBM's variables.
ONE_TENANT = {
    "TENANT_PHONE_NUMBER": "+15005550006",
    "WATSON_CONVERSATION_URL": "https://api.us-south.assistant.watson.cloud.ibm.com/instances/x",
    "WATSON_CONVERSATION_WORKSPACE_ID": "ws-1",
    "WATSON_CONVERSATION_APIKEY": "an-apikey",
    "SMS_PROVIDER_USERNAME": "AC" + "1" * 32,
    "SMS_PROVIDER_PASSWORD": "an-auth-token",
}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = inherited_env()
    return subprocess.run(
        [sys.executable, "-m", "sms_gateway", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


def console_script(*args: str) -> subprocess.CompletedProcess[str]:
    """The `sms-gateway` script pip installed beside this interpreter, as a user runs it."""
    script = Path(sys.executable).parent / "sms-gateway"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_version_is_the_installed_packages() -> None:
    result = console_script("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"sms-gateway {version('sms-gateway')}"


def test_help_lists_every_command_and_each_describes_itself() -> None:
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"serve", "check-config", "dead-letters", "demo"} <= set(commands.choices)
    top = console_script("--help")
    assert top.returncode == 0 and "--version" in top.stdout
    listed = {a.dest: a.help for a in commands._choices_actions}
    for name, parser in commands.choices.items():
        assert name in top.stdout and listed.get(name), f"{name} is listed with a one-line help"
        assert parser.description and len(parser.description) > 40, f"{name} has a description"
        own = console_script(name, "--help")
        assert own.returncode == 0 and " ".join(parser.description.split()[:4]) in " ".join(own.stdout.split())
    dead = console_script("dead-letters", "--help").stdout
    assert "--limit N" in dead and "default 1000" in dead


def test_serve_prints_the_webhook_url_to_give_the_provider(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **ONE_TENANT,
        "PUBLIC_URL": "https://sms-demo.ngrok.app",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "STORE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
    }
    base = inherited_env()
    script = Path(sys.executable).parent / "sms-gateway"
    with subprocess.Popen(
        [str(script), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**base, **env, "SHUTDOWN_DRAIN_SECONDS": "0"},
        cwd=tmp_path,
    ) as proc:
        try:
            wait_ready(f"http://127.0.0.1:{port}/ready", proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [urls] = [e for e in events if e["event"] == "webhook_urls"]
    assert urls["urls"] == {"twilio": "https://sms-demo.ngrok.app/sms.receiver/SmsRecv"}


def test_each_provider_in_use_has_its_webhook_url() -> None:
    config = load_config(str(ROOT / "config" / "sms-gateway.example.yaml"), {})
    providers = {kind: provider_type(config) for kind, provider_type in PROVIDER_TYPES.items()}
    assert webhook_urls(config, providers, "https://gw.example.com/") == {
        "twilio": "https://gw.example.com/sms.receiver/SmsRecv",
        "sinch": "https://gw.example.com/sms.receiver/sinch",
        "telesign": "https://gw.example.com/sms.receiver/telesign/{tenant}",
    }
    only_twilio = dataclasses.replace(config, tenants=config.tenants[:1])
    assert list(webhook_urls(only_twilio, providers, "http://localhost:9080")) == ["twilio"]


def wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout} s")


@pytest.mark.slow
def test_demo_round_trip_in_a_real_process() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "answered 200" in out and "<Response />" in out
    assert '"smsMedia": [' in out and '"mediaContentType": "image/jpeg"' in out
    assert "3. engine -> gateway: its answer" in out and '"command": "smsActSendMedia"' in out
    assert '"MediaUrl": [' in out and "demo round trip: OK" in out
    assert "delivery status 'delivered' answered 200" in out
    # The gateway's own log lines, and none of them a warning meant for production (e.g. about the REST API).
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    assert "inbound_accepted" in [line["event"] for line in logged]
    assert [line for line in logged if line["level"] != "info"] == []


@pytest.mark.slow
def test_demo_round_trip_through_sinch_in_a_real_process() -> None:
    result = run("demo", "--provider", "sinch", "--quiet-logs")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "1. Sinch -> gateway: POST" in out and "answered 200" in out and '"status": "accepted"' in out
    assert '"mediaContentType": "image/jpeg"' in out and '"command": "smsActSendMedia"' in out
    assert '"card_message"' in out and '"MMS_SENDER"' in out and '"channel_priority_order"' in out
    assert "delivery status 'delivered' answered 200" in out and "demo round trip: OK" in out


@pytest.mark.slow
def test_demo_round_trip_through_telesign_in_a_real_process() -> None:
    result = run("demo", "--provider", "telesign", "--quiet-logs")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "1. TeleSign -> gateway: POST" in out and "answered 200" in out
    assert '"mediaContentType": "image/jpeg"' in out and '"command": "smsActSendMedia"' in out
    # TeleSign's MMS carries no text: the text by SMS, then the media by MMS with its SMS fallback.
    assert '"channel": "mms"' in out and '"fallback_time": 300' in out and '"sender_id": "12345"' in out
    assert "delivery status 'delivered' answered 200" in out and "demo round trip: OK" in out


def test_demo_names_the_providers_it_can_play() -> None:
    result = run("demo", "--provider", "carrier-pigeon")
    assert result.returncode == 2 and all(name in result.stderr for name in ("sinch", "telesign", "twilio"))


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    env = {
        "TENANT_PHONE_NUMBER": "+15005550006",
        "WATSON_CONVERSATION_URL": "https://api.us-south.assistant.watson.cloud.ibm.com/instances/x",
        "WATSON_CONVERSATION_WORKSPACE_ID": "ws-1",
        "WATSON_CONVERSATION_APIKEY": "super-secret-apikey",
        "SMS_PROVIDER_URL": "https://api.twilio.com",
        "SMS_PROVIDER_USERNAME": "AC" + "1" * 32,
        "SMS_PROVIDER_PASSWORD": "twilio-auth-token-secret",
        "SMS_WEBHOOK_USERNAME": "hook",
        "SMS_WEBHOOK_PASSWORD": "hook-password-secret",
        "ALLOW_SESSION_CREATE_VIA_SMS": "true",
    }
    result = run("check-config", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("super-secret-apikey", "twilio-auth-token-secret", "hook-password-secret"):
        assert secret not in result.stdout + result.stderr
    effective = json.loads(result.stdout)
    tenant = effective["tenants"][0]
    assert tenant["tenantPhoneNumber"] == "+15005550006"
    assert tenant["conversation"]["type"] == "watson_v1" and tenant["conversation"]["apikey"] == "****"
    assert tenant["allowSessionCreateViaSMS"] is True
    assert effective["http"]["port"] == 9080 and tenant["timeoutForSession"] == 3600


def test_check_config_reports_each_error_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("http:\n  port: nine\ntenants:\n  - tenantPhoneNumber: '+15005550006'\n    colour: blue\n")
    result = run("--config", str(config), "check-config", env={"HTTP_HOST": "0.0.0.0"})
    assert result.returncode == 2
    assert "http.port" in result.stderr and "tenants[0]" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_exits_non_zero_on_a_bad_config(tmp_path: Path) -> None:
    result = run("serve", env={"HTTP_PORT": "not-a-port"}, timeout=30)
    assert result.returncode == 2 and "HTTP_PORT" in result.stderr


def test_check_config_masks_secrets_in_url_query_strings() -> None:
    env = {
        "STORE_URL": "redis://:s-redis@localhost:6379/0?password=s-query&prefix=gw",
        "PUBLIC_URL": "https://sms.example.com/gw?token=s-token&x=1",
        **ONE_TENANT,
    }
    result = run("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert not [s for s in ("s-redis", "s-query", "s-token") if s in result.stdout + result.stderr]
    assert "prefix=gw" in result.stdout and "x=1" in result.stdout


@pytest.mark.parametrize(
    ("store_url", "reason"),
    [
        ("sqlite:///gw.db?synchronous=bogus", "synchronous"),
        ("redis://:s-redis-pw@localhost:6379/0?prefix=", "prefix"),
        ("redis://:s-redis-pw@localhost:6379/0?colour=blue", "colour"),
        ("redis://:s-redis-pw@localhost:6379/0?max_connections=many", "max_connections"),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_bad_store_url_option_is_one_line_without_the_password(command: str, store_url: str, reason: str) -> None:
    result = run(command, env={"STORE_URL": store_url, "HTTP_PORT": "0"}, timeout=30)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if "store.url" in line and reason in line]
    assert "s-redis-pw" not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_check_config_prints_each_warning_and_fails_without_a_tenant() -> None:
    result = run("check-config", env={**ONE_TENANT, "WATSON_CONVERSATION_WORKSPACEID": "ws-2"})
    assert result.returncode == 0, result.stderr
    assert (
        "WATSON_CONVERSATION_WORKSPACEID: is not a variable of the gateway and is ignored (did you mean "
        "WATSON_CONVERSATION_WORKSPACE_ID?)"
    ) in result.stderr
    assert json.loads(result.stdout)["tenants"][0]["conversation"]["workspaceID"] == "ws-1"
    result = run("check-config")
    assert result.returncode == 1
    assert "tenants: none is configured, so every webhook is answered 403" in result.stderr
    assert json.loads(result.stdout)["tenants"] == []


def test_check_config_into_a_closed_pipe_exits_quietly() -> None:
    """`sms-gateway check-config | head -1`: the reader is gone before the configuration is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        base = inherited_env()
        result = subprocess.run(
            [sys.executable, "-m", "sms_gateway", "check-config"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **ONE_TENANT},
            timeout=60,
            cwd=ROOT,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141  # as a shell reports a writer that SIGPIPE ended
    assert result.stderr == ""


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("where", ["port in use", "unresolvable host"])
def test_serve_that_cannot_listen_is_one_line_and_a_non_zero_exit(where: str) -> None:
    with listening_socket() as taken:
        port = str(taken.getsockname()[1])
        host = "127.0.0.1" if where == "port in use" else "no-such-host.invalid"
        env = {
            **ONE_TENANT,
            "HTTP_HOST": host,
            "HTTP_PORT": port,
            "STORE_URL": "memory://",
            "PUBLIC_URL": "https://sms.example.com",
            "SMS_PROVIDR_URL": "https://api.twilio.com",
        }
        result = run("serve", env=env, timeout=60)
    assert result.returncode == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"cannot listen on {host}:{port}: ")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    warned = [e for e in events if e["event"] == "config_warning"]
    assert [(e["level"], e["key"]) for e in warned] == [("warning", "SMS_PROVIDR_URL")]
    assert "did you mean SMS_PROVIDER_URL?" in warned[0]["reason"]
    assert not [e for e in events if e["event"] in ("gateway_started", "gateway_stopped")]


def test_a_misspelt_variable_is_shown_beside_the_error_it_caused() -> None:
    env = {**ONE_TENANT, "WATSON_CONVERSATION_URI": ONE_TENANT["WATSON_CONVERSATION_URL"]}
    del env["WATSON_CONVERSATION_URL"]
    result = run("check-config", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "WATSON_CONVERSATION_URI: is not a variable of the gateway" in result.stderr
    assert "did you mean WATSON_CONVERSATION_URL?" in result.stderr and "WATSON_CONVERSATION_URL:" in result.stderr


def test_serve_with_a_bad_drain_time_is_one_line() -> None:
    result = run("serve", env={**ONE_TENANT, "SHUTDOWN_DRAIN_SECONDS": "soon", "HTTP_PORT": "0"}, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "SHUTDOWN_DRAIN_SECONDS: must be a number of seconds (got 'soon')" in result.stderr
