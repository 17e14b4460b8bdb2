"""Configuration that is valid but probably not what the operator meant: each setting that is ignored,
overridden or suspicious is a warning naming it as the operator wrote it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sms_gateway.config.env import KNOWN_VARS
from sms_gateway.config.load import read_config

ENV_TENANT = {
    "TENANT_PHONE_NUMBER": "+15555550100",
    "WATSON_CONVERSATION_URL": "https://wa.example.com",
    "WATSON_CONVERSATION_WORKSPACE_ID": "ws-1",
    "WATSON_CONVERSATION_APIKEY": "wa-key",
    "SMS_PROVIDER_USERNAME": "AC123",
    "SMS_PROVIDER_PASSWORD": "twilio-token",
}

YAML_TENANT = """
tenants:
  - tenantPhoneNumber: "+15555550199"
    conversation: {type: watson_v1, url: "https://wa.example.com", workspaceID: ws-yaml, apikey: yaml-key}
    smsProvider: {username: AC999, password: yaml-token}
"""


def ibm_tenant(**overrides: Any) -> dict[str, Any]:
    tenant: dict[str, Any] = {
        "tenantPhoneNumber": "+15555550177",
        "conversation": {"url": "https://wa.example.com", "workspaceID": "ws", "apikey": "k"},
        "smsProvider": {"username": "AC1", "password": "tok"},
    }
    return tenant | overrides


def tenant_file(tmp_path: Path, *tenants: dict[str, Any]) -> dict[str, str]:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": list(tenants)}), encoding="utf-8")
    return {"MULTI_TENANT_CONFIG_FILE": str(path)}


def warnings_of(environ: dict[str, str], config_file: str | None = None) -> dict[str, str]:
    return {w.key: w.message for w in read_config(config_file, environ).warnings}


def test_a_well_configured_tenant_gives_no_warning() -> None:
    assert warnings_of(ENV_TENANT) == {}


def test_a_misspelt_ibm_variable_is_named_with_what_it_was_meant_to_be() -> None:
    # Without its workspace id the tenant would be an SOE, silently: the warning says why.
    environ = ENV_TENANT | {
        "WATSON_CONVERSATION_WORKSPACEID": "ws-1",
        "SMS_PROVIDR_URL": "https://x.example.com",
        "TENANT_COLOUR": "blue",
        "PATH": "/usr/bin",
        "HOME": "/root",
    }
    del environ["WATSON_CONVERSATION_WORKSPACE_ID"]
    warnings = warnings_of(environ)
    assert "did you mean WATSON_CONVERSATION_WORKSPACE_ID?" in warnings["WATSON_CONVERSATION_WORKSPACEID"]
    assert "did you mean SMS_PROVIDER_URL?" in warnings["SMS_PROVIDR_URL"]
    assert "ignored" in warnings["TENANT_COLOUR"]
    assert set(warnings) == {"WATSON_CONVERSATION_WORKSPACEID", "SMS_PROVIDR_URL", "TENANT_COLOUR"}


def test_every_variable_the_gateway_reads_is_known() -> None:
    assert {
        "MULTI_TENANT_CONFIG_FILE",
        "WCS_PROXY_HOST",
        "SMS_PROXY_PORT",
        "WATSON_CONVERSATION_API_VERSION",
        "CTRL_TENANT_USERNAME",
        "HTTP_PORT",
    } <= KNOWN_VARS
    proxy = {
        "WCS_PROXY_HOST": "proxy.example.com",
        "WCS_PROXY_PORT": "3128",
        "WCS_PROXY_TYPE": "HTTP",
        "WCS_PROXY_USERNAME": "u",
        "WCS_PROXY_PASSWORD": "p",
        "MULTI_TENANT_CONFIG_FILE": "",
    }
    assert warnings_of(ENV_TENANT | proxy) == {}


def test_a_tenant_file_with_the_single_tenant_variables_drops_them(tmp_path: Path) -> None:
    warnings = warnings_of(ENV_TENANT | tenant_file(tmp_path, ibm_tenant()))
    (key,) = warnings
    assert key.startswith("TENANT_PHONE_NUMBER, WATSON_CONVERSATION_URL") and "SMS_PROVIDER_PASSWORD" in key
    assert warnings[key] == "ignored: the tenants come from MULTI_TENANT_CONFIG_FILE"


def test_single_tenant_variables_without_the_tenant_number_are_ignored() -> None:
    environ = {
        "WATSON_CONVERSATION_URL": "https://wa.example.com",
        "CTRL_TENANT_USERNAME": "c",
        "CTRL_TENANT_PASSWORD": "p",
    }  # CTRL_TENANT_* protect the tenants of any source
    warnings = warnings_of(environ)
    assert warnings["WATSON_CONVERSATION_URL"] == (
        "ignored: the single tenant's variables are read only when TENANT_PHONE_NUMBER is set"
    )


def test_yaml_tenants_replaced_by_the_environments_are_named(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(YAML_TENANT, encoding="utf-8")
    assert warnings_of({}, str(config)) == {}
    replaced = warnings_of(ENV_TENANT, str(config))[f"{config}:tenants"]
    assert replaced == "its 1 tenant(s) are replaced by those of TENANT_PHONE_NUMBER and the single tenant's variables"
    replaced = warnings_of(tenant_file(tmp_path, ibm_tenant()), str(config))[f"{config}:tenants"]
    assert replaced == "its 1 tenant(s) are replaced by those of MULTI_TENANT_CONFIG_FILE"


def test_credentials_the_engine_does_not_send_are_named(tmp_path: Path) -> None:
    warnings = warnings_of(ENV_TENANT | {"WATSON_CONVERSATION_USERNAME": "u", "WATSON_CONVERSATION_PASSWORD": "p"})
    assert warnings == {
        "WATSON_CONVERSATION_USERNAME": "is ignored: authType iam sends apikey",
        "WATSON_CONVERSATION_PASSWORD": "is ignored: authType iam sends apikey",
    }
    conversation = {
        "url": "https://wa.example.com",
        "workspaceID": "ws",
        "authType": "basic",
        "username": "u",
        "password": "p",
        "apikey": "k",
    }
    warnings = warnings_of(tenant_file(tmp_path, ibm_tenant(conversation=conversation)))
    assert warnings == {
        f"{tmp_path}/tenants.json:tenants[0].conversation.apikey": (
            "is ignored: authType basic sends username and password"
        )
    }


def test_an_explicit_send_url_beside_the_base_url_is_named() -> None:
    warnings = warnings_of(
        ENV_TENANT
        | {
            "SMS_PROVIDER_URL": "https://api.twilio.com",
            "SMS_PROVIDER_EXPLICIT_URL": "https://sms.example.com/Messages.json",
        }
    )
    assert warnings == {"SMS_PROVIDER_URL": "is ignored: explicitURL is the URL messages are sent to"}


def test_tenant_numbers_that_are_not_e164_are_named(tmp_path: Path) -> None:
    numbers = ["5555550100", "15555550101", "+1 555 555 0102", "12345", "whatsapp:+15555550103", "+1234567890123456"]
    tenants = [ibm_tenant(tenantPhoneNumber=number) for number in numbers]
    warnings = warnings_of(tenant_file(tmp_path, *tenants))
    named = {key.rsplit(":", 1)[1]: message for key, message in warnings.items()}
    assert set(named) == {
        "tenants[0].tenantPhoneNumber",
        "tenants[1].tenantPhoneNumber",
        "tenants[5].tenantPhoneNumber",
    }
    assert named["tenants[0].tenantPhoneNumber"].startswith("is not E.164 (a + and the country code")
    assert named["tenants[5].tenantPhoneNumber"] == "has 16 digits: an E.164 number has at most 15"


def test_no_tenant_at_all_is_a_warning() -> None:
    assert warnings_of({}) == {"tenants": "none is configured, so every webhook is answered 403"}
