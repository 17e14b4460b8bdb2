"""IBM SMS Gateway's environment variables, and our own, -> the native config dict.

An empty variable counts as unset, as in IBM's docker-compose sample where unused ones are left blank.
Problems name the variable.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from sms_gateway.config.ibm_json import engine_kind, parse_bool, parse_int
from sms_gateway.config.model import ConfigWarning

Problem = tuple[str, str]
Kind = Literal["str", "int", "bool"]
Table = dict[str, tuple[tuple[str, ...], Kind]]

GLOBAL_VARS: Table = {
    "HTTP_HOST": (("http", "host"), "str"),
    "HTTP_PORT": (("http", "port"), "int"),
    "PUBLIC_URL": (("http", "publicURL"), "str"),
    "STORE_URL": (("store", "url"), "str"),
    "LOG_LEVEL": (("logging", "level"), "str"),
    "LOG_REDACT_PHONE_NUMBERS": (("logging", "redactPhoneNumbers"), "bool"),
    "ENABLE_TRANSCRIPTION_MESSAGES": (("logging", "transcriptionMessages"), "bool"),
    "LATENCY_REPORTING_THRESHOLD": (("latencyReportingThreshold",), "int"),
    "HTTP_TRUST_FORWARDED_HEADERS": (("http", "trustForwardedHeaders"), "bool"),
    "CTRL_TENANT_ALLOW_ANONYMOUS": (("controlAPI", "allowAnonymous"), "bool"),
    "PIPE_ALLOW_PRIVATE_CALLBACKS": (("pipes", "allowPrivateCallbacks"), "bool"),
}

# The single tenant, read when TENANT_PHONE_NUMBER is set.
TENANT_VARS: Table = {
    "TENANT_PHONE_NUMBER": (("tenantPhoneNumber",), "str"),
    "WATSON_CONVERSATION_URL": (("conversation", "url"), "str"),
    "WATSON_CONVERSATION_WORKSPACE_ID": (("conversation", "workspaceID"), "str"),
    "WATSON_ASSISTANT_ID": (("conversation", "assistantID"), "str"),
    "WATSON_ASSISTANT_ENVIRONMENT_ID": (("conversation", "environmentID"), "str"),
    "WATSON_CONVERSATION_V2_PATH_STYLE": (("conversation", "v2PathStyle"), "str"),
    "WATSON_CONVERSATION_VERSION_DATE": (("conversation", "apiVersion"), "str"),
    "WATSON_CONVERSATION_USERNAME": (("conversation", "username"), "str"),
    "WATSON_CONVERSATION_PASSWORD": (("conversation", "password"), "str"),
    "WATSON_CONVERSATION_APIKEY": (("conversation", "apikey"), "str"),
    "WATSON_CONVERSATION_TOKEN_URL": (("conversation", "tokenServiceProviderURL"), "str"),
    "WATSON_CONVERSATION_BEARER_TOKEN": (("conversation", "bearerToken"), "str"),
    "WATSON_CONVERSATION_CONNECT_TIMEOUT": (("conversation", "convConnectTimeout"), "int"),
    "WATSON_CONVERSATION_READ_TIMEOUT": (("conversation", "convReadTimeout"), "int"),
    "WATSON_CONVERSATION_MAX_RETRY_NUM": (("conversation", "maxRetryNum"), "int"),
    "SMS_PROVIDER_URL": (("smsProvider", "url"), "str"),
    "SMS_PROVIDER_EXPLICIT_URL": (("smsProvider", "explicitURL"), "str"),
    "SMS_PROVIDER_USERNAME": (("smsProvider", "username"), "str"),
    "SMS_PROVIDER_PASSWORD": (("smsProvider", "password"), "str"),
    "SMS_PROVIDER_CONNECT_TIMEOUT": (("smsProvider", "connectTimeout"), "int"),
    "SMS_PROVIDER_READ_TIMEOUT": (("smsProvider", "readTimeout"), "int"),
    "SMS_PROVIDER_MAX_RETRY_NUM": (("smsProvider", "maxRetryNum"), "int"),
    "SMS_PROVIDER_VALIDATE_SIGNATURE": (("smsProvider", "validateSignature"), "bool"),
    "SMS_WEBHOOK_USERNAME": (("webHookCredentials", "username"), "str"),
    "SMS_WEBHOOK_PASSWORD": (("webHookCredentials", "password"), "str"),
    "CTRL_TENANT_USERNAME": (("controlCredentials", "username"), "str"),
    "CTRL_TENANT_PASSWORD": (("controlCredentials", "password"), "str"),
    "ALLOW_SESSION_CREATE_VIA_SMS": (("allowSessionCreateViaSMS",), "bool"),
    "TIMEOUT_FOR_SESSION": (("timeoutForSession",), "int"),
    "NOTIFY_ON_SESSION_TIMEOUT": (("notifyOnSessionTimeout",), "bool"),
    "CONVERSATION_FAILED_REPLY_MESSAGE": (("conversationFailedReplyMessage",), "str"),
}
API_VERSION_VAR = "WATSON_CONVERSATION_API_VERSION"
TENANT_FILE_VAR = "MULTI_TENANT_CONFIG_FILE"
# CTRL_TENANT_USERNAME/PASSWORD: among the single tenant's variables, and read for a file's tenants too.
SHARED_CONTROL_VARS = ("CTRL_TENANT_USERNAME", "CTRL_TENANT_PASSWORD")
# Proxy prefix -> the tenant section it applies to; each prefix is followed by one of PROXY_SUFFIXES.
PROXY_PREFIXES = {"WCS_PROXY": "conversation", "SMS_PROXY": "smsProvider"}
PROXY_SUFFIXES = ("HOST", "PORT", "TYPE", "USERNAME", "PASSWORD")

# Every variable read; a variable with one of IBM_PREFIXES that is not one of them is probably misspelt.
KNOWN_VARS = frozenset(
    {
        *GLOBAL_VARS,
        *TENANT_VARS,
        API_VERSION_VAR,
        TENANT_FILE_VAR,
        *(f"{prefix}_{suffix}" for prefix in PROXY_PREFIXES for suffix in PROXY_SUFFIXES),
    }
)
IBM_PREFIXES = ("WATSON_", "SMS_", "CTRL_", "WCS_", "TENANT_", "MULTI_TENANT_", "CONVERSATION_")

# Native key path -> the variable that sets it, for naming that variable in an error.
GLOBAL_NAMES = {path: name for name, (path, _) in GLOBAL_VARS.items()}
TENANT_NAMES: dict[tuple[str, ...], str] = {
    **{path: name for name, (path, _) in TENANT_VARS.items()},
    ("conversation", "type"): API_VERSION_VAR,
    **{
        (section, "proxy", key): f"{prefix}_{'HOST' if key == 'url' else key.upper()}"
        for prefix, section in PROXY_PREFIXES.items()
        for key in ("url", "username", "password")
    },
}


def get(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or None


def unknown_variables(environ: Mapping[str, str]) -> list[ConfigWarning]:
    """A warning for each set variable that looks like one of IBM's (its prefix) but is none we read."""
    warnings = []
    for name in sorted(environ):
        if name.startswith(IBM_PREFIXES) and name not in KNOWN_VARS and get(environ, name) is not None:
            close = difflib.get_close_matches(name, KNOWN_VARS, n=1)
            hint = f"did you mean {close[0]}?" if close else "no such setting"
            warnings.append(ConfigWarning(name, f"is not a variable of the gateway and is ignored ({hint})"))
    return warnings


def ignored_tenant_variables(environ: Mapping[str, str]) -> list[ConfigWarning]:
    """The single tenant's variables that are set but not read: with a tenant file, or without
    TENANT_PHONE_NUMBER."""
    tenant_file = get(environ, TENANT_FILE_VAR)
    if tenant_file is None and get(environ, "TENANT_PHONE_NUMBER") is not None:
        return []
    ignored = [name for name in TENANT_VARS if name not in SHARED_CONTROL_VARS and get(environ, name) is not None]
    if get(environ, API_VERSION_VAR) is not None:
        ignored.append(API_VERSION_VAR)
    if not ignored:
        return []
    why = (
        f"the tenants come from {TENANT_FILE_VAR}"
        if tenant_file is not None
        else "the single tenant's variables are read only when TENANT_PHONE_NUMBER is set"
    )
    return [ConfigWarning(", ".join(ignored), f"ignored: {why}")]


def read_globals(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[Problem]]:
    native, problems = _read(environ, GLOBAL_VARS)
    if native.get("http", {}).get("host") == "*":  # Liberty's "all interfaces", as in IBM's samples
        native["http"]["host"] = "0.0.0.0"
    return native, problems


def read_tenant(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[Problem]]:
    """The single tenant of IBM's env-var configuration, engine chosen by IBM's rule."""
    tenant, problems = _read(environ, TENANT_VARS)
    conversation = tenant.setdefault("conversation", {})
    tenant.setdefault("smsProvider", {})
    version = get(environ, API_VERSION_VAR)
    kind = engine_kind(version, conversation.get("workspaceID"), conversation.get("url"))
    if kind is None:
        problems.append((API_VERSION_VAR, f"must be v1 or v2 (got {version!r})"))
    conversation["type"] = kind or "watson_v1"
    return tenant, problems


def read_control_credentials(environ: Mapping[str, str]) -> tuple[dict[str, str] | None, list[Problem]]:
    """CTRL_TENANT_USERNAME/PASSWORD as a native controlCredentials section, for the tenants of a file that have
    none of their own (the single tenant of the environment reads them with its other variables)."""
    username, password = get(environ, "CTRL_TENANT_USERNAME"), get(environ, "CTRL_TENANT_PASSWORD")
    if username is None and password is None:
        return None, []
    if username is None:
        return None, [("CTRL_TENANT_USERNAME", "is required when CTRL_TENANT_PASSWORD is set")]
    if password is None:
        return None, [("CTRL_TENANT_PASSWORD", "is required when CTRL_TENANT_USERNAME is set")]
    return {"username": username, "password": password}, []


def read_proxies(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """SMS_PROXY_* and WCS_PROXY_*, keyed by the tenant section they apply to."""
    proxies: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for prefix, section in PROXY_PREFIXES.items():
        host = get(environ, f"{prefix}_HOST")
        if host is None:
            continue
        proxy_type = get(environ, f"{prefix}_TYPE") or "HTTP"
        port = parse_int(get(environ, f"{prefix}_PORT") or "")
        if proxy_type.upper() != "HTTP":
            problems.append((f"{prefix}_TYPE", f"only HTTP proxies are supported (got {proxy_type!r})"))
        elif port is None or not 0 < port < 65536:
            problems.append((f"{prefix}_PORT", f"must be a port number 1-65535 when {prefix}_HOST is set"))
        else:
            host = f"[{host}]" if ":" in host else host
            proxy: dict[str, Any] = {"url": f"http://{host}:{port}"}
            for key in ("username", "password"):
                if value := get(environ, f"{prefix}_{key.upper()}"):
                    proxy[key] = value
            proxies[section] = proxy
    return proxies, problems


def _read(environ: Mapping[str, str], table: Table) -> tuple[dict[str, Any], list[Problem]]:
    native: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, (path, kind) in table.items():
        text = get(environ, name)
        if text is None:
            continue
        value: str | int | bool | None = text
        if kind == "int":
            value = parse_int(text)
        elif kind == "bool":
            value = parse_bool(text)
        if value is None:
            expected = "a whole number" if kind == "int" else "true or false"
            problems.append((name, f"must be {expected} (got {text!r})"))
            continue
        *parents, key = path
        section = native
        for parent in parents:
            section = section.setdefault(parent, {})
        section[key] = value
    return native, problems
