"""Configuration: our YAML, IBM's environment variables and IBM's tenant JSON -> one validated Config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_gateway.config.build import build_config
from sms_gateway.config.ibm_json import parse_bool
from sms_gateway.config.load import ConfigError, load_config
from sms_gateway.config.mask import effective_config_dict, mask_url, native_dict
from sms_gateway.config.model import (
    V1_DEFAULT_VERSION,
    Config,
    Credentials,
    EngineConfig,
    MediaPolicy,
    ProxyConfig,
)
from sms_gateway.model import MessageLimits
from sms_gateway.providers.sinch import LIMITS as SINCH_LIMITS
from sms_gateway.providers.sinch import SinchConfig
from sms_gateway.providers.telesign import TeleSignConfig
from sms_gateway.providers.twilio import LIMITS as TWILIO_LIMITS
from sms_gateway.providers.twilio import TwilioConfig
from sms_gateway.ratelimit import SenderRate, rates_from_config, sender_cap

REPO = Path(__file__).resolve().parents[1]

V1_ENV = {
    "TENANT_PHONE_NUMBER": "+15555550100",
    "WATSON_CONVERSATION_URL": "https://gateway.watsonplatform.net/conversation/api",
    "WATSON_CONVERSATION_WORKSPACE_ID": "ws-1",
    "WATSON_CONVERSATION_USERNAME": "wa-user",
    "WATSON_CONVERSATION_PASSWORD": "wa-pass",
    "SMS_PROVIDER_URL": "https://api.twilio.com",
    "SMS_PROVIDER_USERNAME": "AC123",
    "SMS_PROVIDER_PASSWORD": "twilio-token",
}

YAML_TENANT = """
tenants:
  - tenantPhoneNumber: "+15555550199"
    conversation:
      type: watson_v1
      url: https://wa.example.com
      workspaceID: ws-yaml
      apikey: yaml-key
    smsProvider:
      username: AC999
      password: yaml-token
"""

# IBM's own sample (WASdev/sample.voice.gateway sms/docker/tenantConfig/tenantConfig.json), trailing comma
# included, which IBM's parser accepts.
IBM_SAMPLE = """{
  "tenants": [{
      "tenantPhoneNumber": "+12345556789",
      "description": "Tenant1",
      "allowSessionCreateViaSMS": "true",
      "timeoutForSession": "86400",
      "conversationFailedReplyMessage": "Unable to connect to conversation",
      "convReadTimeout": "30000",
      "convConnectTimeout": "30000",
      "smsProviderConnectTimeout": "30000",
      "smsProviderReadTimeout": "30000",
      "conversation": {
        "workspaceID": "myWorkspaceID",
        "url": "https://gateway.watsonplatform.net/conversation/api/",
        "username": "myConvUserName",
        "password": "p4ssw0rd"
      },
      "smsProvider": {"url": "https://api.twilio.com", "username": "mySMSProviderUserName", "password": "p4ssw0rd"},
      "webHookCredentials": {"username": "myUserName", "password": "p4ssw0rd"},
      "controlCredentials": {"username": "control", "password": "developer"}
    },
    {
      "tenantPhoneNumber": "15555566666",
      "description": "Tenant2 uses restcomm",
      "allowSessionCreateViaSMS": "false",
      "timeoutForSession": "86400",
      "conversationFailedReplyMessage": "Unable to connect to conversation",
      "conversation": {
        "workspaceID": "myWorkspaceID",
        "url": "https://gateway.watsonplatform.net/conversation/api/",
        "username": "myConvUserName",
        "password": "p4ssw0rd"
      },
      "smsProvider": {
        "explicitURL": "https://cloud.restcomm.com/restcomm/2012-04-24/Accounts/mySMSProviderUserName/SMS/Messages.json",
        "username": "mySMSProviderUserName",
        "password": "p4ssw0rd"
      }
    },
    {
      "tenantPhoneNumber": "+19999988888",
      "description": "Tenant3 with workspace id in url",
      "conversationFailedReplyMessage": "Unable to connect to conversation",
      "conversation": {
        "url": "https://gateway.watsonplatform.net/conversation/api/v1/workspaces/myWorkspaceID/message?version=2016-09-20",
        "username": "myConvUserName",
        "password": "p4ssw0rd"
      },
      "smsProvider": {
        "explicitURL": "https://api.twilio.com/2010-04-01/Accounts/23de67h0236e5e7c7f1ead4499h7f54cb/Messages.json",
        "username": "mySMSProviderUserName",
        "password": "p4ssw0rd"
      }
    },

  ]
}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def tenant_json(tmp_path: Path, *tenants: dict[str, Any]) -> dict[str, str]:
    """An environment pointing MULTI_TENANT_CONFIG_FILE at a file holding `tenants`."""
    return {"MULTI_TENANT_CONFIG_FILE": write(tmp_path, "tenants.json", json.dumps({"tenants": list(tenants)}))}


def ibm_tenant(**overrides: Any) -> dict[str, Any]:
    tenant: dict[str, Any] = {
        "tenantPhoneNumber": "+15555550100",
        "conversation": {"url": "https://wa.example.com", "workspaceID": "ws", "apikey": "k"},
        "smsProvider": {"url": "https://api.twilio.com", "username": "AC1", "password": "tok"},
    }
    tenant.update(overrides)
    return tenant


def errors_of(config_file: str | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, environ or {})
    return dict(caught.value.errors)


# --- sources -----------------------------------------------------------------------------------------


def test_no_configuration_at_all_gives_ibm_defaults_and_no_tenants() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert (config.http_host, config.http_port, config.store_url) == ("0.0.0.0", 9080, "sqlite:///sms-gateway.db")
    assert (config.log_level, config.latency_reporting_threshold_ms) == ("info", 10000)
    assert config.enable_transcription_messages is False and config.redact_phone_numbers is True
    assert config.tenants == ()


def test_yaml_file_sets_every_section(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        """
http: {host: 127.0.0.1, port: 8080, publicURL: "https://sms.example.com"}
store: {url: "memory://"}
logging: {level: DEBUG, redactPhoneNumbers: false, transcriptionMessages: true}
latencyReportingThreshold: 500
media: {maxMediaPerMessage: 5, maxTotalBytes: 1000, maxBodyChars: 160, allowPrivateHosts: true,
        checkSize: false, sizeCheckTimeout: 100, mmsCountryPrefixes: ["+1", "+44"]}
workerConcurrency: 8
"""
        + YAML_TENANT,
    )
    config = load_config(path, {})
    assert (config.http_host, config.http_port, config.public_url) == ("127.0.0.1", 8080, "https://sms.example.com")
    assert config.store_url == "memory://"
    assert (config.log_level, config.redact_phone_numbers, config.enable_transcription_messages) == (
        "debug",
        False,
        True,
    )
    assert config.latency_reporting_threshold_ms == 500 and config.worker_concurrency == 8
    assert config.media.max_media_per_message == 5 and config.media.mms_country_prefixes == ("+1", "+44")
    assert config.media.check_size is False and config.media.size_check_timeout_ms == 100
    (tenant,) = config.tenants
    assert tenant.engine == EngineConfig(
        kind="watson_v1", url="https://wa.example.com", workspace_id="ws-yaml", auth="iam", apikey="yaml-key"
    )
    assert tenant.provider == TwilioConfig(username="AC999", password="yaml-token")
    assert config.tenant_for("1 (555) 555-0199") is tenant


def test_yaml_keeps_unquoted_dates_as_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path, "gw.yaml", YAML_TENANT.replace("workspaceID: ws-yaml", "apiVersion: 2020-04-01\n      workspaceID: w")
    )
    assert load_config(path, {}).tenants[0].engine.api_version == "2020-04-01"


def test_env_single_tenant_uses_ibm_defaults() -> None:
    config = load_config(None, V1_ENV)
    (tenant,) = config.tenants
    assert tenant.phone_number == "+15555550100"
    assert tenant.engine == EngineConfig(
        kind="watson_v1",
        url="https://gateway.watsonplatform.net/conversation/api",
        workspace_id="ws-1",
        auth="basic",
        username="wa-user",
        password="wa-pass",
        connect_timeout_ms=30000,
        read_timeout_ms=30000,
        max_retries=2,
    )
    assert tenant.engine.version_date == V1_DEFAULT_VERSION
    assert tenant.provider == TwilioConfig(url="https://api.twilio.com", username="AC123", password="twilio-token")
    assert tenant.provider.send_url == "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
    assert (tenant.allow_session_create_via_sms, tenant.timeout_for_session) == (False, 3600)
    assert tenant.notify_on_session_timeout is False
    assert tenant.webhook_credentials is None and tenant.control_credentials is None
    assert (config.http_port, config.log_level, config.latency_reporting_threshold_ms) == (9080, "info", 10000)


def test_env_every_variable_maps_to_its_setting() -> None:
    environ = V1_ENV | {
        "WATSON_CONVERSATION_READ_TIMEOUT": "5000",
        "WATSON_CONVERSATION_CONNECT_TIMEOUT": "6000",
        "WATSON_CONVERSATION_MAX_RETRY_NUM": "4",
        "WATSON_CONVERSATION_VERSION_DATE": "2020-01-01",
        "SMS_PROVIDER_EXPLICIT_URL": "https://cloud.restcomm.com/restcomm/2012-04-24/Accounts/AC123/SMS/Messages.json",
        "SMS_PROVIDER_READ_TIMEOUT": "7000",
        "SMS_PROVIDER_CONNECT_TIMEOUT": "8000",
        "SMS_PROVIDER_MAX_RETRY_NUM": "0",
        "SMS_PROVIDER_VALIDATE_SIGNATURE": "false",
        "SMS_WEBHOOK_USERNAME": "hook",
        "SMS_WEBHOOK_PASSWORD": "hook-pass",
        "CTRL_TENANT_USERNAME": "ctrl",
        "CTRL_TENANT_PASSWORD": "ctrl-pass",
        "ALLOW_SESSION_CREATE_VIA_SMS": "TRUE",
        "TIMEOUT_FOR_SESSION": "60",
        "NOTIFY_ON_SESSION_TIMEOUT": "true",
        "CONVERSATION_FAILED_REPLY_MESSAGE": "Sorry!",
        "HTTP_HOST": "*",
        "HTTP_PORT": "8443",
        "PUBLIC_URL": "https://sms.example.com",
        "STORE_URL": "redis://localhost:6379/0",
        "LOG_LEVEL": "FINEST",
        "LOG_REDACT_PHONE_NUMBERS": "false",
        "ENABLE_TRANSCRIPTION_MESSAGES": "true",
        "LATENCY_REPORTING_THRESHOLD": "1000",
    }
    config = load_config(None, environ)
    (tenant,) = config.tenants
    engine, provider = tenant.engine, tenant.provider
    assert (engine.read_timeout_ms, engine.connect_timeout_ms, engine.max_retries) == (5000, 6000, 4)
    assert engine.version_date == "2020-01-01"
    assert provider.send_url == environ["SMS_PROVIDER_EXPLICIT_URL"]
    assert (provider.read_timeout_ms, provider.connect_timeout_ms, provider.max_retries) == (7000, 8000, 0)
    assert provider.validate_signature is False
    assert tenant.webhook_credentials == Credentials("hook", "hook-pass")
    assert tenant.control_credentials == Credentials("ctrl", "ctrl-pass")
    assert (tenant.allow_session_create_via_sms, tenant.timeout_for_session) == (True, 60)
    assert tenant.notify_on_session_timeout is True and tenant.conversation_failed_reply_message == "Sorry!"
    assert (config.http_host, config.http_port, config.public_url) == ("0.0.0.0", 8443, "https://sms.example.com")
    assert config.store_url == "redis://localhost:6379/0"
    assert (config.log_level, config.redact_phone_numbers, config.enable_transcription_messages) == (
        "debug",
        False,
        True,
    )
    assert config.latency_reporting_threshold_ms == 1000


def test_empty_env_vars_count_as_unset() -> None:
    config = load_config(None, V1_ENV | {"HTTP_PORT": "", "TIMEOUT_FOR_SESSION": "", "SMS_PROXY_HOST": ""})
    assert config.http_port == 9080 and config.tenants[0].timeout_for_session == 3600
    assert config.tenants[0].provider.proxy is None


@pytest.mark.parametrize(
    ("name", "level"), [("info", "info"), ("FINE", "debug"), ("severe", "error"), ("warn", "warning")]
)
def test_log_level_accepts_python_and_ibm_names(name: str, level: str) -> None:
    assert load_config(None, {"LOG_LEVEL": name}).log_level == level


def test_env_overrides_yaml_globals_but_not_what_it_leaves_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "http: {host: 127.0.0.1, port: 8000}\nlogging: {level: debug}\n")
    config = load_config(path, {"HTTP_PORT": "9000"})
    assert (config.http_host, config.http_port, config.log_level) == ("127.0.0.1", 9000, "debug")


def test_tenant_json_wins_over_env_tenant_which_wins_over_yaml_tenants(tmp_path: Path) -> None:
    yaml_path = write(tmp_path, "gw.yaml", YAML_TENANT)
    assert [t.phone_number for t in load_config(yaml_path, {}).tenants] == ["+15555550199"]
    assert [t.phone_number for t in load_config(yaml_path, V1_ENV).tenants] == ["+15555550100"]
    environ = V1_ENV | tenant_json(tmp_path, ibm_tenant(tenantPhoneNumber="+15555550177"))
    assert [t.phone_number for t in load_config(yaml_path, environ).tenants] == ["+15555550177"]


# --- IBM tenant JSON ---------------------------------------------------------------------------------


def test_ibm_sample_tenant_json_loads(tmp_path: Path) -> None:
    config = load_config(None, {"MULTI_TENANT_CONFIG_FILE": write(tmp_path, "tenantConfig.json", IBM_SAMPLE)})
    first, second, third = config.tenants
    assert first.allow_session_create_via_sms is True and first.timeout_for_session == 86400
    assert first.conversation_failed_reply_message == "Unable to connect to conversation"
    assert first.engine.kind == "watson_v1" and first.engine.auth == "basic"
    assert first.webhook_credentials == Credentials("myUserName", "p4ssw0rd")
    assert second.allow_session_create_via_sms is False
    assert second.provider.send_url.startswith("https://cloud.restcomm.com/")
    # the workspace and version embedded in the url are split out
    assert (third.engine.kind, third.engine.url) == ("watson_v1", "https://gateway.watsonplatform.net/conversation/api")
    assert (third.engine.workspace_id, third.engine.version_date) == ("myWorkspaceID", "2016-09-20")
    assert config.tenant_for("+15555566666") is second


def test_ibm_json_string_values_are_typed_and_tenant_level_timeouts_apply(tmp_path: Path) -> None:
    tenant = ibm_tenant(
        allowSessionCreateViaSMS="True",
        notifyOnSessionTimeout="false",
        timeoutForSession="120",
        convReadTimeout="1000",
        convConnectTimeout="2000",
        smsProviderConnectTimeout="3000",
        smsProvideReadTimeout="4000",  # IBM's CP4D sample misspells smsProviderReadTimeout so
    )
    (loaded,) = load_config(None, tenant_json(tmp_path, tenant)).tenants
    assert (loaded.allow_session_create_via_sms, loaded.notify_on_session_timeout) == (True, False)
    assert loaded.timeout_for_session == 120
    assert (loaded.engine.read_timeout_ms, loaded.engine.connect_timeout_ms) == (1000, 2000)
    assert (loaded.provider.connect_timeout_ms, loaded.provider.read_timeout_ms) == (3000, 4000)


def test_ibm_json_accepts_real_booleans_and_numbers(tmp_path: Path) -> None:
    tenant = ibm_tenant(allowSessionCreateViaSMS=True, timeoutForSession=90, smsProviderReadTimeout=5)
    (loaded,) = load_config(None, tenant_json(tmp_path, tenant)).tenants
    assert (loaded.allow_session_create_via_sms, loaded.timeout_for_session) == (True, 90)
    assert loaded.provider.read_timeout_ms == 5


def test_ibm_json_conversation_auth_and_api_version(tmp_path: Path) -> None:
    tenants = [
        ibm_tenant(
            tenantPhoneNumber="+1001",
            conversation={
                "url": "https://wa.example.com",
                "workspaceID": "w",
                "apikey": "k",
                "tokenAuthEnabled": "true",
                "tokenServiceProviderUrl": "https://iam.example.com/token",
            },
        ),
        ibm_tenant(
            tenantPhoneNumber="+1002",
            conversation={"url": "https://cp4d.example.com", "workspaceID": "w", "bearerToken": "b"},
        ),
        ibm_tenant(
            tenantPhoneNumber="+1003",
            conversation={
                "convApiVersion": "v2",
                "url": "https://wa.example.com",
                "assistantID": "a",
                "environmentID": "e",
                "apikey": "k",
            },
        ),
        ibm_tenant(tenantPhoneNumber="+1004", conversation={"url": "https://soe.example.com/orchestrate"}),
    ]
    iam, bearer, v2, soe = (t.engine for t in load_config(None, tenant_json(tmp_path, *tenants)).tenants)
    assert (iam.auth, iam.apikey, iam.token_url) == ("iam", "k", "https://iam.example.com/token")
    assert (bearer.auth, bearer.bearer_token) == ("bearer", "b")
    assert (v2.kind, v2.assistant_id, v2.environment_id, v2.v2_path_style) == ("watson_v2", "a", "e", "environments")
    assert (soe.kind, soe.url, soe.auth) == ("soe", "https://soe.example.com/orchestrate", "none")


def test_ibm_json_empty_placeholders_count_as_unset(tmp_path: Path) -> None:
    # IBM's CP4D sample ships with "url": "", "workspaceID": "", "bearerToken": "" to be filled in.
    tenant = ibm_tenant(conversation={"url": "", "workspaceID": "", "bearerToken": ""})
    environ = tenant_json(tmp_path, tenant)
    assert errors_of(None, environ) == {
        f"{environ['MULTI_TENANT_CONFIG_FILE']}:tenants[0].conversation.url": "is required"
    }


# --- engine selection and auth -------------------------------------------------------------------------


def test_env_without_workspace_is_an_soe_posted_as_given() -> None:
    environ = V1_ENV | {"WATSON_CONVERSATION_URL": "https://soe.example.com/api/message"}
    del environ["WATSON_CONVERSATION_WORKSPACE_ID"]
    engine = load_config(None, environ).tenants[0].engine
    assert (engine.kind, engine.url, engine.workspace_id) == ("soe", "https://soe.example.com/api/message", None)


def test_env_url_with_embedded_workspace_is_split() -> None:
    environ = V1_ENV | {
        "WATSON_CONVERSATION_URL": "https://wa.example.com/api/v1/workspaces/abc/message?version=2019-02-28"
    }
    del environ["WATSON_CONVERSATION_WORKSPACE_ID"]
    engine = load_config(None, environ).tenants[0].engine
    assert (engine.kind, engine.url, engine.workspace_id, engine.api_version) == (
        "watson_v1",
        "https://wa.example.com/api",
        "abc",
        "2019-02-28",
    )


@pytest.mark.parametrize("style", ["environments", "legacy"])
def test_env_v2_in_both_path_styles(style: str) -> None:
    environ = V1_ENV | {
        "WATSON_CONVERSATION_API_VERSION": "v2",
        "WATSON_ASSISTANT_ID": "asst",
        "WATSON_CONVERSATION_V2_PATH_STYLE": style,
    }
    if style == "environments":
        environ["WATSON_ASSISTANT_ENVIRONMENT_ID"] = "env"
    engine = load_config(None, environ).tenants[0].engine
    assert (engine.kind, engine.assistant_id, engine.v2_path_style) == ("watson_v2", "asst", style)
    assert engine.environment_id == ("env" if style == "environments" else None)


def test_v2_environments_style_needs_an_environment_id() -> None:
    environ = V1_ENV | {"WATSON_CONVERSATION_API_VERSION": "v2", "WATSON_ASSISTANT_ID": "asst"}
    assert errors_of(None, environ) == {"WATSON_ASSISTANT_ENVIRONMENT_ID": "is required"}


def test_unknown_api_version_names_the_variable() -> None:
    assert errors_of(None, V1_ENV | {"WATSON_CONVERSATION_API_VERSION": "v3"}) == {
        "WATSON_CONVERSATION_API_VERSION": "must be v1 or v2 (got 'v3')"
    }


def without_credentials(**extra: str) -> dict[str, str]:
    environ = {
        k: v for k, v in V1_ENV.items() if k not in {"WATSON_CONVERSATION_USERNAME", "WATSON_CONVERSATION_PASSWORD"}
    }
    return environ | extra


@pytest.mark.parametrize(
    ("environ", "auth", "secret"),
    [
        (without_credentials(WATSON_CONVERSATION_APIKEY="key"), "iam", ("apikey", "key")),
        (
            without_credentials(WATSON_CONVERSATION_USERNAME="apikey", WATSON_CONVERSATION_PASSWORD="key"),
            "iam",
            ("apikey", "key"),
        ),
        (
            without_credentials(WATSON_CONVERSATION_USERNAME="u", WATSON_CONVERSATION_PASSWORD="p"),
            "basic",
            ("password", "p"),
        ),
        (without_credentials(WATSON_CONVERSATION_BEARER_TOKEN="tok"), "bearer", ("bearer_token", "tok")),
        (without_credentials(), "none", ("username", None)),
    ],
)
def test_auth_kind_follows_the_credentials_given(
    environ: dict[str, str], auth: str, secret: tuple[str, str | None]
) -> None:
    engine = load_config(None, environ).tenants[0].engine
    assert engine.auth == auth
    assert getattr(engine, secret[0]) == secret[1]


def test_iam_token_url_from_env() -> None:
    environ = without_credentials(
        WATSON_CONVERSATION_APIKEY="k", WATSON_CONVERSATION_TOKEN_URL="https://iam.example.com/t"
    )
    assert load_config(None, environ).tenants[0].engine.token_url == "https://iam.example.com/t"


def test_explicit_auth_type_needs_its_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", YAML_TENANT.replace("apikey: yaml-key", "authType: bearer"))
    assert errors_of(path) == {"tenants[0].conversation.bearerToken": "is required"}


def test_echo_engine_needs_nothing(tmp_path: Path) -> None:
    text = YAML_TENANT.replace(
        "type: watson_v1\n      url: https://wa.example.com\n      workspaceID: ws-yaml\n      apikey: yaml-key",
        "type: echo",
    )
    assert load_config(write(tmp_path, "gw.yaml", text), {}).tenants[0].engine.kind == "echo"


# --- proxies -------------------------------------------------------------------------------------------


def test_proxy_variables_map_to_proxy_urls() -> None:
    environ = V1_ENV | {
        "SMS_PROXY_TYPE": "HTTP",
        "SMS_PROXY_HOST": "proxy.example.com",
        "SMS_PROXY_PORT": "81",
        "SMS_PROXY_USERNAME": "xyz@somecompany.com",
        "SMS_PROXY_PASSWORD": "Password17",
        "WCS_PROXY_HOST": "wcs-proxy",
        "WCS_PROXY_PORT": "3128",
    }
    (tenant,) = load_config(None, environ).tenants
    assert tenant.provider.proxy == ProxyConfig("http://proxy.example.com:81", "xyz@somecompany.com", "Password17")
    assert tenant.engine.proxy == ProxyConfig("http://wcs-proxy:3128")


def test_proxy_variables_apply_to_tenants_from_json_and_yaml(tmp_path: Path) -> None:
    proxy = {"SMS_PROXY_HOST": "p", "SMS_PROXY_PORT": "8080"}
    (from_json,) = load_config(None, proxy | tenant_json(tmp_path, ibm_tenant())).tenants
    (from_yaml,) = load_config(write(tmp_path, "gw.yaml", YAML_TENANT), proxy).tenants
    assert from_json.provider.proxy == from_yaml.provider.proxy == ProxyConfig("http://p:8080")
    assert from_json.engine.proxy is None


def test_proxy_port_without_host_is_ignored() -> None:
    # As in IBM's single-tenant Kubernetes sample, which sets SMS_PROXY_PORT/TYPE/USERNAME but no host.
    environ = V1_ENV | {"SMS_PROXY_PORT": "81", "SMS_PROXY_TYPE": "HTTP", "SMS_PROXY_USERNAME": "u"}
    assert load_config(None, environ).tenants[0].provider.proxy is None


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"SMS_PROXY_TYPE": "SOCKS", "SMS_PROXY_PORT": "1080"}, "SMS_PROXY_TYPE"),
        ({}, "SMS_PROXY_PORT"),
        ({"SMS_PROXY_PORT": "x"}, "SMS_PROXY_PORT"),
    ],
)
def test_bad_proxy_settings_name_the_variable(extra: dict[str, str], key: str) -> None:
    assert list(errors_of(None, V1_ENV | {"SMS_PROXY_HOST": "p"} | extra)) == [key]


# --- errors --------------------------------------------------------------------------------------------


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", YAML_TENANT.replace("workspaceID", "workpaceID"))
    errors = errors_of(path)
    assert errors["tenants[0].conversation.workpaceID"] == "unknown key (did you mean 'workspaceID'?)"
    assert errors["tenants[0].conversation.workspaceID"] == "is required"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, "gw.yaml", "htp: {port: 1}\n")) == {"htp": "unknown key (did you mean 'http'?)"}


def test_wrong_types_and_ranges_are_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        "http: {port: eighty}\nmedia: {maxMediaPerMessage: 11}\nstore: {url: 'postgres://u:pw@db'}\n",
    )
    errors = errors_of(path)
    assert errors["http.port"] == "must be a whole number (got 'eighty')"
    assert errors["media.maxMediaPerMessage"] == "must be at most 10 (got 11)"
    assert errors["store.url"].startswith("must be a store URL")
    assert "pw" not in errors["store.url"]


def test_unquoted_phone_number_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", YAML_TENANT.replace('"+15555550199"', "+15555550199"))
    assert errors_of(path) == {"tenants[0].tenantPhoneNumber": "must be a string (got 15555550199); put it in quotes"}


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", YAML_TENANT.replace("password: yaml-token", "password: 123456789"))
    assert errors_of(path) == {"tenants[0].smsProvider.password": "must be a string (got a int); put it in quotes"}


def test_missing_workspace_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", YAML_TENANT.replace("      workspaceID: ws-yaml\n", ""))
    assert errors_of(path) == {"tenants[0].conversation.workspaceID": "is required"}


def test_embedded_workspace_conflicting_with_workspace_id(tmp_path: Path) -> None:
    text = YAML_TENANT.replace("url: https://wa.example.com", "url: https://wa.example.com/v1/workspaces/other/message")
    assert errors_of(write(tmp_path, "gw.yaml", text)) == {
        "tenants[0].conversation.url": "names workspace 'other' but workspaceID is 'ws-yaml'"
    }


def test_missing_env_settings_name_the_variables() -> None:
    errors = errors_of(None, {"TENANT_PHONE_NUMBER": "+15555550100", "WATSON_CONVERSATION_USERNAME": "u"})
    assert errors == {
        "WATSON_CONVERSATION_URL": "is required",
        "WATSON_CONVERSATION_PASSWORD": "is required",
        "SMS_PROVIDER_USERNAME": "is required",
        "SMS_PROVIDER_PASSWORD": "is required",
    }


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("HTTP_PORT", "80a", "must be a whole number (got '80a')"),
        ("TIMEOUT_FOR_SESSION", "1h", "must be a whole number (got '1h')"),
        ("WATSON_CONVERSATION_READ_TIMEOUT", "30s", "must be a whole number (got '30s')"),
        ("ALLOW_SESSION_CREATE_VIA_SMS", "maybe", "must be true or false (got 'maybe')"),
        ("HTTP_PORT", "70000", "must be at most 65535 (got 70000)"),
    ],
)
def test_bad_env_values_name_the_variable(name: str, value: str, reason: str) -> None:
    assert errors_of(None, V1_ENV | {name: value}) == {name: reason}


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, "gw.yaml", "http: {port: x}\nworkerConcurrency: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"LATENCY_REPORTING_THRESHOLD": "soon"})
    assert [key for key, _ in caught.value.errors] == ["LATENCY_REPORTING_THRESHOLD", "http.port", "workerConcurrency"]
    assert "http.port: must be a whole number" in str(caught.value)


def test_duplicate_tenant_numbers_match_on_digits(tmp_path: Path) -> None:
    environ = tenant_json(
        tmp_path, ibm_tenant(tenantPhoneNumber="+15555550100"), ibm_tenant(tenantPhoneNumber="1 555 555 0100")
    )
    key = f"{environ['MULTI_TENANT_CONFIG_FILE']}:tenants[1].tenantPhoneNumber"
    assert errors_of(None, environ) == {key: "same number as tenants[0] (tenants are matched on digits)"}


def test_ibm_json_problems_name_the_file_and_ibm_key(tmp_path: Path) -> None:
    tenant = ibm_tenant(allowSessionCreateViaSMS="sometimes", smsProvideReadTimeout="0", colour="blue")
    environ = tenant_json(tmp_path, tenant)
    file = environ["MULTI_TENANT_CONFIG_FILE"]
    assert errors_of(None, environ) == {
        f"{file}:tenants[0].allowSessionCreateViaSMS": "must be true or false (got 'sometimes')",
        f"{file}:tenants[0].smsProvideReadTimeout": "must be at least 1 (got 0)",
        f"{file}:tenants[0].colour": "unknown key",
    }


def test_ibm_json_bad_conversation_flags(tmp_path: Path) -> None:
    tenant = ibm_tenant(
        conversation={"url": "https://wa.example.com", "convApiVersion": "v9", "tokenAuthEnabled": "si"}
    )
    environ = tenant_json(tmp_path, tenant)
    file = environ["MULTI_TENANT_CONFIG_FILE"]
    assert errors_of(None, environ) == {
        f"{file}:tenants[0].conversation.tokenAuthEnabled": "must be true or false (got 'si')",
        f"{file}:tenants[0].conversation.convApiVersion": "must be v1 or v2 (got 'v9')",
        f"{file}:tenants[0].conversation.workspaceID": "is required",
    }


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("gw.yaml", "http: {port: 1\n", "not valid YAML"),
        ("gw.yaml", "http: {}\nhttp: {}\n", "not valid YAML: duplicate key 'http' (line 2"),
        ("gw.yaml", "- a list\n", "must be a YAML mapping"),
    ],
)
def test_unparsable_yaml_names_the_file(tmp_path: Path, name: str, text: str, reason: str) -> None:
    path = write(tmp_path, name, text)
    errors = errors_of(path)
    assert list(errors) == [path] and errors[path].startswith(reason)


@pytest.mark.parametrize(
    ("text", "reason"), [('{"tenants": [', "not valid JSON"), ('{"tenant": []}', "must be a JSON object")]
)
def test_unparsable_tenant_json_names_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, "t.json", text)
    errors = errors_of(None, {"MULTI_TENANT_CONFIG_FILE": path})
    assert list(errors) == [path] and errors[path].startswith(reason)


def test_missing_files_are_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert errors_of(missing, {"MULTI_TENANT_CONFIG_FILE": missing + ".json"}) == {
        missing: "cannot read the file: No such file or directory",
        missing + ".json": "cannot read the file: No such file or directory",
    }


# --- shipped examples, printing and masking ------------------------------------------------------------


def test_shipped_example_yaml_loads() -> None:
    config = load_config(str(REPO / "config" / "sms-gateway.example.yaml"), {})
    assert [t.engine.kind for t in config.tenants] == ["watson_v1", "watson_v2", "watson_v2", "watson_v1"]
    assert [t.provider.kind for t in config.tenants] == ["twilio", "twilio", "sinch", "telesign"]


def test_rate_limits_are_opt_in_caps_per_number_type_or_number() -> None:
    shipped = load_config(str(REPO / "config" / "sms-gateway.example.yaml"), {})
    assert shipped.rate_limits == {}
    assert sender_cap("+15555550100", rates_from_config(shipped.rate_limits)) is None, "no limit by default"
    configured = build_config({"rateLimits": {"longCode": 2, "numbers": {"+18005550199": 25}}})
    caps = rates_from_config(configured.rate_limits)
    assert sender_cap("+15555550100", caps) == SenderRate(2.0, 2)
    assert sender_cap("+18005550199", caps) == SenderRate(25.0, 25), "a number's own cap"
    assert sender_cap("+18005550100", caps) is None, "no toll-free cap configured, none assumed"
    assert sender_cap("12345", caps) is None


def test_shipped_example_tenant_json_loads() -> None:
    config = load_config(None, {"MULTI_TENANT_CONFIG_FILE": str(REPO / "config" / "tenantConfig.example.json")})
    assert [(t.engine.kind, t.engine.auth) for t in config.tenants] == [("watson_v1", "iam"), ("watson_v2", "iam")]


def test_schema_symlink_serves_the_packaged_schema() -> None:
    schema = json.loads((REPO / "schemas" / "config.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_effective_config_masks_every_secret(tmp_path: Path) -> None:
    secrets = ["s-wa-pass", "s-twilio", "s-hook", "s-ctrl", "s-proxy", "s-redis", "s-wcs-proxy"]
    environ = V1_ENV | {
        "WATSON_CONVERSATION_PASSWORD": "s-wa-pass",
        "SMS_PROVIDER_PASSWORD": "s-twilio",
        "SMS_WEBHOOK_USERNAME": "h",
        "SMS_WEBHOOK_PASSWORD": "s-hook",
        "CTRL_TENANT_USERNAME": "c",
        "CTRL_TENANT_PASSWORD": "s-ctrl",
        "SMS_PROXY_HOST": "p",
        "SMS_PROXY_PORT": "1",
        "SMS_PROXY_PASSWORD": "s-proxy",
        "WCS_PROXY_HOST": "w",
        "WCS_PROXY_PORT": "2",
        "WCS_PROXY_PASSWORD": "s-wcs-proxy",
        "STORE_URL": "redis://:s-redis@localhost:6379/0",
    }
    text = json.dumps(effective_config_dict(load_config(None, environ)))
    assert not [s for s in secrets if s in text]
    assert "****" in text and "redis://:****@localhost:6379/0" in text
    yaml_text = json.dumps(effective_config_dict(load_config(write(tmp_path, "gw.yaml", YAML_TENANT), {})))
    assert "yaml-key" not in yaml_text and "yaml-token" not in yaml_text


def test_bearer_token_and_apikey_are_masked(tmp_path: Path) -> None:
    tenants = [
        ibm_tenant(tenantPhoneNumber="+1", conversation={"url": "https://a.example.com", "bearerToken": "s-bearer"}),
        ibm_tenant(tenantPhoneNumber="+2", conversation={"url": "https://a.example.com", "apikey": "s-apikey"}),
    ]
    text = json.dumps(effective_config_dict(load_config(None, tenant_json(tmp_path, *tenants))))
    assert "s-bearer" not in text and "s-apikey" not in text


def test_secrets_in_url_query_strings_are_masked() -> None:
    environ = V1_ENV | {
        "WATSON_CONVERSATION_URL": "https://soe.example.com/orchestrate?apikey=s-q-key&version=2&sig=s-q-sig",
        "STORE_URL": "redis://:s-redis@localhost:6379/0?prefix=gw&password=s-q-pass",
    }
    text = json.dumps(effective_config_dict(load_config(None, environ)))
    assert not [s for s in ("s-q-key", "s-q-sig", "s-redis", "s-q-pass") if s in text]
    assert "https://soe.example.com/orchestrate?apikey=****&version=2&sig=****" in text
    assert "redis://:****@localhost:6379/0?prefix=gw&password=****" in text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://h.example.com/p?token=abc&x=1", "https://h.example.com/p?token=****&x=1"),
        (
            "https://h.example.com/p?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://h.example.com/p?X-Amz-Signature=****&X-Amz-Credential=****",
        ),
        ("https://h.example.com/cb#access_token=abc&state=s", "https://h.example.com/cb#access_token=****&state=s"),
        ("https://u:pw@h.example.com/p?client_secret=abc", "https://u:****@h.example.com/p?client_secret=****"),
        ("https://h.example.com/p?api_key=", "https://h.example.com/p?api_key="),
        ("sqlite:///gw.db?synchronous=normal", "sqlite:///gw.db?synchronous=normal"),
        ("not a URL?token=abc", "not a URL?token=abc"),
    ],
)
def test_mask_url_hides_userinfo_passwords_and_secret_parameters(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("source", ["yaml", "json", "env"])
def test_native_dict_round_trips(tmp_path: Path, source: str) -> None:
    if source == "yaml":
        config = load_config(str(REPO / "config" / "sms-gateway.example.yaml"), {})
    elif source == "json":
        config = load_config(None, {"MULTI_TENANT_CONFIG_FILE": write(tmp_path, "t.json", IBM_SAMPLE)})
    else:
        config = load_config(None, V1_ENV | {"SMS_PROXY_HOST": "p", "SMS_PROXY_PORT": "1"})
    assert build_config(native_dict(config)) == config
    path = write(tmp_path, "again.yaml", json.dumps(native_dict(config)))  # JSON is YAML
    assert load_config(path, {}) == config


# --- properties ----------------------------------------------------------------------------------------


@given(st.booleans(), st.lists(st.booleans(), min_size=5, max_size=5))
def test_ibm_string_booleans_in_any_case(value: bool, upper: list[bool]) -> None:
    word = str(value).lower()
    text = "".join(ch.upper() if up else ch for ch, up in zip(word, upper, strict=False))
    assert parse_bool(text) is value


@given(
    allow=st.booleans(),
    notify=st.booleans(),
    session=st.integers(min_value=1, max_value=10**7),
    read=st.integers(min_value=1, max_value=600000),
    as_strings=st.booleans(),
)
def test_ibm_json_values_round_trip(
    tmp_path_factory: pytest.TempPathFactory, allow: bool, notify: bool, session: int, read: int, as_strings: bool
) -> None:
    def ibm(value: bool | int) -> str | bool | int:
        return (str(value).lower() if isinstance(value, bool) else str(value)) if as_strings else value

    tenant = ibm_tenant(
        allowSessionCreateViaSMS=ibm(allow),
        notifyOnSessionTimeout=ibm(notify),
        timeoutForSession=ibm(session),
        convReadTimeout=ibm(read),
    )
    environ = tenant_json(tmp_path_factory.mktemp("ibm"), tenant)
    (loaded,) = load_config(None, environ).tenants
    assert (loaded.allow_session_create_via_sms, loaded.notify_on_session_timeout) == (allow, notify)
    assert (loaded.timeout_for_session, loaded.engine.read_timeout_ms) == (session, read)


# --- providers -------------------------------------------------------------------------------------------

SINCH_PROVIDER = {
    "type": "sinch",
    "projectId": "proj-1",
    "appId": "01APP",
    "keyId": "key-1",
    "keySecret": "s-key-secret",
    "webhookSecret": "s-hook-secret",
}


def test_sinch_tenant_from_yaml_with_defaults(tmp_path: Path) -> None:
    tenant = {"tenantPhoneNumber": "+15555550102", "conversation": {"type": "echo"}, "smsProvider": SINCH_PROVIDER}
    config = load_config(write(tmp_path, "gw.yaml", json.dumps({"tenants": [tenant]})), {})
    settings = config.tenants[0].provider
    assert settings == SinchConfig(
        project_id="proj-1", app_id="01APP", key_id="key-1", key_secret="s-key-secret", webhook_secret="s-hook-secret"
    )
    assert settings.kind == "sinch" and settings.api_base == "https://us.conversation.api.sinch.com"
    assert settings.auth_url == "https://auth.sinch.com/oauth2/token"
    eu = load_config(
        write(
            tmp_path,
            "eu.yaml",
            json.dumps({"tenants": [{**tenant, "smsProvider": {**SINCH_PROVIDER, "region": "eu"}}]}),
        ),
        {},
    )
    assert eu.tenants[0].provider.api_base == "https://eu.conversation.api.sinch.com"  # type: ignore[attr-defined]


def test_sinch_tenant_from_ibm_tenant_json_with_string_values(tmp_path: Path) -> None:
    provider = {
        **SINCH_PROVIDER,
        "region": "br",
        "connectTimeout": "2000",
        "mmsSender": "15555550100",
        "url": "https://conversation.example.com",
    }
    config = load_config(None, tenant_json(tmp_path, ibm_tenant(smsProvider=provider, smsProviderReadTimeout="4000")))
    settings = config.tenants[0].provider
    assert isinstance(settings, SinchConfig)
    assert (settings.region, settings.connect_timeout_ms, settings.read_timeout_ms) == ("br", 2000, 4000)
    assert settings.api_base == "https://conversation.example.com" and settings.mms_sender == "15555550100"


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"keySecret": None}, "keySecret", "is required"),
        ({"appId": ""}, "appId", "must not be empty"),
        ({"region": "ap"}, "region", "must be one of us, eu, br"),
        ({"username": "AC1"}, "username", "unknown key"),
        ({"mmsSender": "+15555550999"}, "mmsSender", "must be the tenant's phone number"),
        ({"type": "nexmo"}, "type", "must be one of twilio, sinch"),
    ],
)
def test_sinch_settings_errors_name_the_key(tmp_path: Path, change: dict[str, Any], key: str, reason: str) -> None:
    provider = {k: v for k, v in {**SINCH_PROVIDER, **change}.items() if v is not None}
    tenant = {"tenantPhoneNumber": "+15555550102", "conversation": {"type": "echo"}, "smsProvider": provider}
    errors = errors_of(write(tmp_path, "gw.yaml", json.dumps({"tenants": [tenant]})))
    assert reason in errors[f"tenants[0].smsProvider.{key}"]


def test_a_twilio_key_on_a_sinch_tenant_and_the_reverse_are_unknown(tmp_path: Path) -> None:
    tenants = [
        {
            "tenantPhoneNumber": "+15555550102",
            "conversation": {"type": "echo"},
            "smsProvider": {**SINCH_PROVIDER, "validateSignature": False},
        },
        {
            "tenantPhoneNumber": "+15555550103",
            "conversation": {"type": "echo"},
            "smsProvider": {"username": "AC1", "password": "tok", "appId": "01APP"},
        },
    ]
    errors = errors_of(write(tmp_path, "gw.yaml", json.dumps({"tenants": tenants})))
    assert errors["tenants[0].smsProvider.validateSignature"].startswith("unknown key")
    assert errors["tenants[1].smsProvider.appId"].startswith("unknown key")


def test_sinch_secrets_are_masked_and_never_in_errors(tmp_path: Path) -> None:
    tenant = {"tenantPhoneNumber": "+15555550102", "conversation": {"type": "echo"}, "smsProvider": SINCH_PROVIDER}
    config = load_config(write(tmp_path, "gw.yaml", json.dumps({"tenants": [tenant]})), {})
    shown = json.dumps(effective_config_dict(config))
    assert "s-key-secret" not in shown and "s-hook-secret" not in shown and shown.count("****") == 2
    assert "s-key-secret" not in repr(config) and "s-hook-secret" not in repr(config)
    assert build_config(native_dict(config)) == config
    bad = {**tenant, "smsProvider": {**SINCH_PROVIDER, "keySecret": 12345, "webhookSecret": ["s-hook-secret"]}}
    errors = errors_of(write(tmp_path, "bad.yaml", json.dumps({"tenants": [bad]})))
    assert "12345" not in json.dumps(errors) and "s-hook-secret" not in json.dumps(errors)


def test_operator_media_limits_narrow_the_providers_but_never_widen_them() -> None:
    policy = MediaPolicy(max_media_per_message=5, max_total_bytes=2_000_000, mms_country_prefixes=("+1", "+44"))
    assert policy.limits(TWILIO_LIMITS) == MessageLimits(5, 2_000_000, 1600, ("+1", "+44"))
    assert policy.limits(SINCH_LIMITS) == MessageLimits(1, 1_000_000, 1600, ("+1", "+44"))
    assert MediaPolicy().limits(SINCH_LIMITS) == SINCH_LIMITS
    text_apart = dataclasses.replace(SINCH_LIMITS, media_with_text=False)
    assert policy.limits(text_apart).media_with_text is False, "what the operator cannot set is the provider's"


TELESIGN_PROVIDER = {"type": "telesign", "customerId": "CUST-1", "apiKey": "czNjcjN0LWtleQ=="}


def telesign_tenant(**provider: Any) -> dict[str, Any]:
    return {
        "tenantPhoneNumber": "12345",
        "conversation": {"type": "echo"},
        "smsProvider": {**TELESIGN_PROVIDER, **provider},
    }


def test_telesign_tenant_with_defaults_and_from_ibm_tenant_json(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "gw.yaml", json.dumps({"tenants": [telesign_tenant()]})), {})
    assert config.tenants[0].provider == TeleSignConfig(customer_id="CUST-1", api_key="czNjcjN0LWtleQ==")
    settings = config.tenants[0].provider
    assert isinstance(settings, TeleSignConfig)
    assert (settings.url, settings.auth_method, settings.fallback_seconds, settings.message_type) == (
        "https://rest-ww.telesign.com",
        "basic",
        300,
        "ARN",
    )
    tenant = ibm_tenant(
        tenantPhoneNumber="12345",
        smsProvider={
            **TELESIGN_PROVIDER,
            "authMethod": "digest",
            "fallbackTime": "600",
            "messageType": "MKT",
            "senderId": "12345",
        },
    )
    from_json = load_config(None, tenant_json(tmp_path, tenant)).tenants[0].provider
    assert isinstance(from_json, TeleSignConfig)
    assert (from_json.auth_method, from_json.fallback_seconds, from_json.message_type) == ("digest", 600, "MKT")
    assert "czNjcjN0LWtleQ==" not in json.dumps(effective_config_dict(load_config(None, tenant_json(tmp_path, tenant))))


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"apiKey": None}, "smsProvider.apiKey", "is required"),
        ({"fallbackTime": 10}, "smsProvider.fallbackTime", "must be at least 30"),
        ({"fallbackTime": 7200}, "smsProvider.fallbackTime", "must be at most 3600"),
        ({"authMethod": "hmac"}, "smsProvider.authMethod", "must be one of basic, digest"),
        ({"messageType": "SPAM"}, "smsProvider.messageType", "must be one of ARN, MKT, OTP"),
        ({"senderId": "54321"}, "smsProvider.senderId", "must be the tenant's phone number"),
    ],
)
def test_telesign_settings_errors_name_the_key(tmp_path: Path, change: dict[str, Any], key: str, reason: str) -> None:
    tenant = telesign_tenant(**change)
    tenant["smsProvider"] = {k: v for k, v in tenant["smsProvider"].items() if v is not None}
    errors = errors_of(write(tmp_path, "gw.yaml", json.dumps({"tenants": [tenant]})))
    assert reason in errors[f"tenants[0].{key}"]


def test_telesign_tenant_cannot_take_basic_webhook_credentials(tmp_path: Path) -> None:
    """TeleSign signs its callbacks in the Authorization header, which Basic credentials would also need."""
    tenant = {**telesign_tenant(), "webHookCredentials": {"username": "hook", "password": "s-hook"}}
    errors = errors_of(write(tmp_path, "gw.yaml", json.dumps({"tenants": [tenant]})))
    assert "Authorization header" in errors["tenants[0].webHookCredentials"]


def test_security_settings_from_yaml_and_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gw.yaml",
        """
http: {trustForwardedHeaders: true, headerTimeout: 5, bodyTimeout: 20.5, keepAliveTimeout: 0}
controlAPI: {allowAnonymous: true}
pipes: {allowedCallbackHosts: [vgw.internal, 10.1.0.0/16], allowPrivateCallbacks: true}
""",
    )
    config = load_config(path, {})
    assert (
        config.trust_forwarded_headers,
        config.header_timeout_s,
        config.body_timeout_s,
        config.keepalive_timeout_s,
    ) == (True, 5, 20.5, 0)
    assert config.allow_anonymous_control and config.allow_private_callbacks
    assert config.pipe_allowed_callback_hosts == ("vgw.internal", "10.1.0.0/16")
    assert build_config(native_dict(config)) == config
    defaults = load_config(None, {})
    assert not (
        defaults.trust_forwarded_headers or defaults.allow_anonymous_control or defaults.allow_private_callbacks
    ), "secure by default"
    from_env = load_config(
        None,
        {
            "HTTP_TRUST_FORWARDED_HEADERS": "true",
            "CTRL_TENANT_ALLOW_ANONYMOUS": "yes",
            "PIPE_ALLOW_PRIVATE_CALLBACKS": "1",
        },
    )
    assert from_env.trust_forwarded_headers and from_env.allow_anonymous_control and from_env.allow_private_callbacks
    assert errors_of(write(tmp_path, "bad.yaml", "http: {headerTimeout: 0}"))["http.headerTimeout"] == (
        "must be at least 0.1 (got 0)"
    )
