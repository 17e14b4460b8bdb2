"""Every tenant key IBM's "Advanced JSON configuration properties for SMS Gateway" documents is accepted:
mapped to our setting, or (with no equivalent here) accepted with one warning naming it."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sms_gateway.config.load import ConfigError, load_config, read_config
from sms_gateway.config.mask import effective_config_dict
from sms_gateway.config.model import Config
from tests.harness import V1, running_gateway
from tests.test_cli import run

IBM_EXAMPLE = Path(__file__).resolve().parent / "fixtures" / "ibm" / "sms_json_config_props_example.json"


def load(path: Path | str) -> Config:
    return load_config(None, {"MULTI_TENANT_CONFIG_FILE": str(path)})


def warnings_of(path: Path | str) -> list[tuple[str, str]]:
    return [(w.key, w.message) for w in read_config(None, {"MULTI_TENANT_CONFIG_FILE": str(path)}).warnings]


def tenant_file(tmp_path: Path, **keys: Any) -> Path:
    tenant = {
        "tenantPhoneNumber": "+15555550100",
        "conversation": {"url": "https://wa.example.com", "workspaceID": "ws", "apikey": "k"},
        "smsProvider": {"url": "https://api.twilio.com", "username": "AC1", "password": "tok"},
        **keys,
    }
    path = tmp_path / "tenantConfig.json"
    path.write_text(json.dumps({"tenants": [tenant]}), encoding="utf-8")
    return path


def test_ibms_documented_example_loads_maps_every_key_and_warns_once(tmp_path: Path) -> None:
    config = load(IBM_EXAMPLE)
    (tenant,) = config.tenants
    engine, provider = tenant.engine, tenant.provider
    assert (tenant.phone_number, tenant.description) == ("+12345556789", "Car insurance assistance")
    assert not tenant.allow_session_create_via_sms and tenant.timeout_for_session == 3600
    assert tenant.conversation_failed_reply_message == "We can't respond to your message."
    assert (engine.read_timeout_ms, engine.connect_timeout_ms) == (30000, 30000)
    assert (provider.read_timeout_ms, provider.connect_timeout_ms) == (30000, 30000)
    # smsProviderMaxRetryNo / smsProvideRetryInterval (sic) / convMaxRetryNo / convRetryInterval, in ms
    assert (provider.max_retries, provider.retry_interval_ms) == (2, 2000)
    assert (engine.max_retries, engine.retry_interval_ms) == (2, 2000)
    assert engine.auth == "iam" and engine.apikey == "{apikey}"
    assert engine.token_url == "https://iam.cloud.ibm.com/identity/token"
    assert tenant.webhook_credentials and tenant.webhook_credentials.username == "myUserName"
    assert tenant.control_credentials and tenant.control_credentials.username == "myRESTAPIuser"

    # IBM's example also gives its IAM tenant a username, which an API key makes unused.
    warnings = dict(warnings_of(IBM_EXAMPLE))
    assert set(warnings) == {f"{IBM_EXAMPLE}:tenants[0].reporting", f"{IBM_EXAMPLE}:tenants[0].conversation.username"}
    reason = warnings[f"{IBM_EXAMPLE}:tenants[0].reporting"]
    assert reason.startswith("has no effect: ")
    assert "myRestTokenOrPassword" not in reason

    shown = effective_config_dict(config)["tenants"][0]
    assert shown["conversation"]["retryInterval"] == shown["smsProvider"]["retryInterval"] == 2000
    assert "reporting" not in shown


@pytest.mark.parametrize(
    ("keys", "engine", "provider"),
    [
        (
            {
                "convMaxRetryNo": "4",
                "convRetryInterval": "250",
                "smsProviderMaxRetryNo": "0",
                "smsProvideRetryInterval": "750",
            },
            (4, 250),
            (0, 750),
        ),
        # the spelling without IBM's typo, and real JSON numbers
        ({"convMaxRetryNo": 1, "smsProviderMaxRetryNo": 5, "smsProviderRetryInterval": 3000}, (1, None), (5, 3000)),
        ({}, (2, None), (2, None)),
    ],
)
def test_ibm_retry_keys_set_the_engine_and_provider_retries(
    tmp_path: Path, keys: dict[str, Any], engine: tuple[int, int | None], provider: tuple[int, int | None]
) -> None:
    path = tenant_file(tmp_path, **keys)
    config = load(path)
    (tenant,) = config.tenants
    assert (tenant.engine.max_retries, tenant.engine.retry_interval_ms) == engine
    assert (tenant.provider.max_retries, tenant.provider.retry_interval_ms) == provider
    assert warnings_of(path) == []


def test_bad_ibm_retry_values_are_errors_naming_ibms_key(tmp_path: Path) -> None:
    path = tenant_file(tmp_path, convMaxRetryNo="many", smsProvideRetryInterval="-5", convRetryInterval="600001")
    with pytest.raises(ConfigError) as caught:
        load(path)
    errors = dict(caught.value.errors)
    assert set(errors) == {
        f"{path}:tenants[0].{key}" for key in ("convMaxRetryNo", "smsProvideRetryInterval", "convRetryInterval")
    }
    assert errors[f"{path}:tenants[0].smsProvideRetryInterval"] == "must be at least 0 (got -5)"


def test_reporting_with_any_of_ibms_reporting_keys_is_one_warning_per_tenant(tmp_path: Path) -> None:
    reporting = {
        "url": "https://events.example.com/",
        "username": "u",
        "password": "p",
        "transcriptionEventIndex": "transcription",
        "cloudant": {"url": "https://c.example.com"},
    }
    path = tenant_file(tmp_path, reporting=reporting)
    assert [key for key, _ in warnings_of(path)] == [f"{path}:tenants[0].reporting"]
    with pytest.raises(ConfigError) as caught:
        load(tenant_file(tmp_path, reporting=reporting, colour="blue"))
    assert dict(caught.value.errors) == {f"{path}:tenants[0].colour": "unknown key"}, "others stay unknown"


def test_check_config_prints_each_warning_and_still_succeeds() -> None:
    result = run("check-config", env={"MULTI_TENANT_CONFIG_FILE": str(IBM_EXAMPLE)})
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.split("configuration warnings:\n", 1)[1].splitlines()
    assert len(warnings) == 2 and any(f"{IBM_EXAMPLE}:tenants[0].reporting: has no effect" in w for w in warnings)
    assert "myRestTokenOrPassword" not in result.stderr + result.stdout
    json.loads(result.stdout)


async def test_provider_retry_interval_is_waited_before_a_failed_send_is_retried(tmp_path: Path) -> None:
    def with_interval(config: Config) -> Config:
        tenants = tuple(
            dataclasses.replace(t, provider=dataclasses.replace(t.provider, retry_interval_ms=1500))
            if t.phone_number == V1
            else t
            for t in config.tenants
        )
        return dataclasses.replace(config, tenants=tenants)

    async with running_gateway(tmp_path, configure=with_interval) as gw:
        gw.twilio.fail_next(1, status=500)
        started = time.monotonic()
        await gw.sms("hi")
        (sent,) = await gw.wait_sent(1)
        # Our own backoff would retry within half a second; a lower bound cannot fail for being slow.
        assert time.monotonic() - started >= 1.4
        assert sent.body == "You said: hi"
        assert len(gw.twilio.rejected) == 1
