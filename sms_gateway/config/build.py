"""The native config dict -> `Config`: normalising before validation, checks the schema cannot express, build.

The tables below name, for each dataclass field, its key in the native format; `mask.py` reads them the
other way round to print a `Config` back out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from sms_gateway.config.model import (
    Config,
    Credentials,
    EngineConfig,
    KeyPath,
    MediaPolicy,
    ProviderConfig,
    ProxyConfig,
    TenantConfig,
    normalise_number,
)
from sms_gateway.providers import DEFAULT_KIND, PROVIDER_TYPES, settings_type

PathProblem = tuple[KeyPath, str]

GLOBAL_FIELDS: dict[tuple[str, ...], str] = {
    ("http", "host"): "http_host",
    ("http", "port"): "http_port",
    ("http", "publicURL"): "public_url",
    ("store", "url"): "store_url",
    ("logging", "level"): "log_level",
    ("logging", "redactPhoneNumbers"): "redact_phone_numbers",
    ("logging", "transcriptionMessages"): "enable_transcription_messages",
    ("latencyReportingThreshold",): "latency_reporting_threshold_ms",
    ("workerConcurrency",): "worker_concurrency",
    ("store", "leaseSeconds"): "lease_seconds",
    ("http", "trustForwardedHeaders"): "trust_forwarded_headers",
    ("http", "headerTimeout"): "header_timeout_s",
    ("http", "bodyTimeout"): "body_timeout_s",
    ("http", "keepAliveTimeout"): "keepalive_timeout_s",
    ("controlAPI", "allowAnonymous"): "allow_anonymous_control",
    ("pipes", "allowedCallbackHosts"): "pipe_allowed_callback_hosts",
    ("pipes", "allowPrivateCallbacks"): "allow_private_callbacks",
}
MEDIA_FIELDS = {
    "maxMediaPerMessage": "max_media_per_message",
    "maxTotalBytes": "max_total_bytes",
    "maxBodyChars": "max_body_chars",
    "allowPrivateHosts": "allow_private_hosts",
    "checkSize": "check_size",
    "sizeCheckTimeout": "size_check_timeout_ms",
    "mmsCountryPrefixes": "mms_country_prefixes",
}
TENANT_FIELDS = {
    "tenantPhoneNumber": "phone_number",
    "description": "description",
    "allowSessionCreateViaSMS": "allow_session_create_via_sms",
    "timeoutForSession": "timeout_for_session",
    "notifyOnSessionTimeout": "notify_on_session_timeout",
    "conversationFailedReplyMessage": "conversation_failed_reply_message",
}
ENGINE_FIELDS = {
    "type": "kind",
    "url": "url",
    "workspaceID": "workspace_id",
    "assistantID": "assistant_id",
    "environmentID": "environment_id",
    "v2PathStyle": "v2_path_style",
    "apiVersion": "api_version",
    "authType": "auth",
    "username": "username",
    "password": "password",
    "apikey": "apikey",
    "bearerToken": "bearer_token",
    "tokenServiceProviderURL": "token_url",
    "convConnectTimeout": "connect_timeout_ms",
    "convReadTimeout": "read_timeout_ms",
    "maxRetryNum": "max_retries",
    "retryInterval": "retry_interval_ms",
}
# The keys every provider's settings have; each provider's own are its settings type's KEYS.
PROVIDER_FIELDS = {
    "connectTimeout": "connect_timeout_ms",
    "readTimeout": "read_timeout_ms",
    "maxRetryNum": "max_retries",
    "retryInterval": "retry_interval_ms",
}
PROXY_FIELDS = {"url": "url", "username": "username", "password": "password"}
CREDENTIAL_FIELDS = {"username": "username", "password": "password"}

# IBM (Liberty/java.util.logging) level names are accepted beside Python's; Config holds Python's.
LOG_LEVELS = {
    "all": "debug", "finest": "debug", "finer": "debug", "fine": "debug", "debug": "debug",
    "config": "info", "info": "info", "audit": "info",
    "warning": "warning", "warn": "warning",
    "error": "error", "severe": "error",
    "critical": "critical", "fatal": "critical", "off": "critical",
}  # fmt: skip

_EMBEDDED_WORKSPACE = re.compile(
    r"^(?P<base>https?://.+?)/v1/workspaces/(?P<workspace>[^/?#]+)/message/?(?:\?(?P<query>[^#]*))?$"
)


def split_workspace_url(url: str) -> tuple[str, str, str | None] | None:
    """`.../v1/workspaces/<id>/message?version=<date>` -> (base url, workspace id, version date)."""
    match = _EMBEDDED_WORKSPACE.match(url)
    if match is None:
        return None
    versions = parse_qs(match["query"] or "").get("version")
    return match["base"], match["workspace"], versions[0] if versions else None


def infer_auth(conversation: Mapping[str, Any]) -> str:
    if "apikey" in conversation:
        return "iam"
    if "bearerToken" in conversation:
        return "bearer"
    if "username" in conversation or "password" in conversation:
        return "basic"
    return "none"


def normalise(native: dict[str, Any]) -> list[PathProblem]:
    """Fill in what the native format lets one leave out, in place, before schema validation.

    Tolerates any shape: the schema reports what is wrong with it afterwards.
    """
    logging = native.get("logging")
    if isinstance(logging, dict) and isinstance(logging.get("level"), str):
        logging["level"] = logging["level"].lower()
    problems: list[PathProblem] = []
    for i, tenant in _tenants(native):
        conversation = tenant.get("conversation")
        if isinstance(conversation, dict):
            problems += [(("tenants", i, "conversation", *p), r) for p, r in _normalise_engine(conversation)]
    return problems


def _normalise_engine(conv: dict[str, Any]) -> list[PathProblem]:
    # IBM's convention for IAM with Basic-style fields: username "apikey", password = the key.
    if conv.get("authType", "iam") == "iam" and conv.get("username") == "apikey" and "password" in conv:
        conv.setdefault("apikey", conv.pop("password"))
        del conv["username"]
    conv.setdefault("authType", infer_auth(conv))
    url = conv.get("url")
    split = split_workspace_url(url) if conv.get("type") == "watson_v1" and isinstance(url, str) else None
    if split is None:
        return []
    base, workspace, version = split
    if conv.setdefault("workspaceID", workspace) != workspace:
        return [(("url",), f"names workspace {workspace!r} but workspaceID is {conv['workspaceID']!r}")]
    conv["url"] = base
    if version is not None:
        conv.setdefault("apiVersion", version)
    return []


def semantic_problems(native: Mapping[str, Any]) -> list[PathProblem]:
    """What the schema cannot say: tenant numbers must differ in their digits; each provider's own rules."""
    problems: list[PathProblem] = []
    by_kind: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for i, tenant in _tenants(native):
        section = tenant.get("smsProvider")
        kind = section.get("type", DEFAULT_KIND) if isinstance(section, dict) else None
        if isinstance(kind, str) and kind in PROVIDER_TYPES:
            by_kind.setdefault(kind, []).append((i, tenant))
    for kind, tenants in by_kind.items():
        problems += settings_type(kind).config_problems(tenants)
    first_with: dict[str, int] = {}
    for i, tenant in _tenants(native):
        number = tenant.get("tenantPhoneNumber")
        if not isinstance(number, str) or not (digits := normalise_number(number)):
            continue
        if digits in first_with:
            reason = f"same number as tenants[{first_with[digits]}] (tenants are matched on digits)"
            problems.append((("tenants", i, "tenantPhoneNumber"), reason))
        else:
            first_with[digits] = i
    return problems


# The credentials each engine authType sends; any other of CREDENTIAL_KEYS that is set is ignored.
AUTH_CREDENTIALS = {"none": (), "basic": ("username", "password"), "iam": ("apikey",), "bearer": ("bearerToken",)}
CREDENTIAL_KEYS = ("apikey", "username", "password", "bearerToken")
# At most this many digits and no "+": a short code, which has no country code to write.
SHORT_CODE_DIGITS = 8


def semantic_warnings(native: Mapping[str, Any]) -> list[PathProblem]:
    """Valid settings that are ignored or probably wrong, in a normalised, schema-valid native dict: engine
    credentials that the authType does not send, tenant numbers that are not E.164, each provider's own."""
    warnings: list[PathProblem] = []
    by_kind: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for i, tenant in _tenants(native):
        by_kind.setdefault(tenant["smsProvider"].get("type", DEFAULT_KIND), []).append((i, tenant))
        conversation = tenant["conversation"]
        auth = conversation.get("authType", "none")
        for key in CREDENTIAL_KEYS:
            if key in conversation and key not in AUTH_CREDENTIALS.get(auth, ()):
                used = " and ".join(AUTH_CREDENTIALS.get(auth, ())) or "no credentials"
                warnings.append((("tenants", i, "conversation", key), f"is ignored: authType {auth} sends {used}"))
        warning = e164_warning(tenant["tenantPhoneNumber"])
        if warning is not None:
            warnings.append((("tenants", i, "tenantPhoneNumber"), warning))
    for kind, tenants in by_kind.items():
        warnings += settings_type(kind).config_warnings(tenants)
    return warnings


def e164_warning(number: str) -> str | None:
    """Why a tenant number (schema-valid) is probably not the number a provider will send, if it is not."""
    _, _, bare = number.rpartition(":")  # a channel prefix, e.g. "whatsapp:+1..."
    digits = normalise_number(bare)
    if len(digits) > 15:
        return f"has {len(digits)} digits: an E.164 number has at most 15"
    if bare.startswith("+") or len(digits) <= SHORT_CODE_DIGITS:
        return None
    return (
        "is not E.164 (a + and the country code, then the number): providers send numbers so, and a tenant "
        "is matched on digits, so only if its digits include the country code"
    )


def _tenants(native: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    tenants = native.get("tenants")
    if not isinstance(tenants, list):
        return []
    return [(i, t) for i, t in enumerate(tenants) if isinstance(t, dict)]


def build_config(native: Mapping[str, Any]) -> Config:
    """A normalised, schema-valid native dict -> Config; anything left out keeps the dataclass default."""
    settings: dict[str, Any] = {}
    for (*parents, key), field in GLOBAL_FIELDS.items():
        section = native
        for parent in parents:
            section = section.get(parent, {})
        if key in section:
            settings[field] = section[key]
    if "log_level" in settings:
        settings["log_level"] = LOG_LEVELS[settings["log_level"]]
    if "pipe_allowed_callback_hosts" in settings:
        settings["pipe_allowed_callback_hosts"] = tuple(settings["pipe_allowed_callback_hosts"])
    media = _pick(native.get("media", {}), MEDIA_FIELDS)
    if "mms_country_prefixes" in media:
        media["mms_country_prefixes"] = tuple(media["mms_country_prefixes"])
    return Config(
        tenants=tuple(_tenant(t) for t in native.get("tenants", [])),
        media=MediaPolicy(**media),
        rate_limits=_rate_limits(native.get("rateLimits", {})),
        **settings,
    )


RATE_KINDS = {"longCode": "long_code", "tollFree": "toll_free", "shortCode": "short_code"}


def _rate_limits(section: Mapping[str, Any]) -> dict[str, float]:
    rates = {RATE_KINDS[key]: float(value) for key, value in section.items() if key in RATE_KINDS}
    for number, value in section.get("numbers", {}).items():
        rates[normalise_number(number)] = float(value)
    return rates


def _tenant(tenant: Mapping[str, Any]) -> TenantConfig:
    return TenantConfig(
        engine=EngineConfig(**_pick(tenant["conversation"], ENGINE_FIELDS), proxy=_proxy(tenant["conversation"])),
        provider=_provider(tenant["smsProvider"]),
        webhook_credentials=_credentials(tenant.get("webHookCredentials")),
        control_credentials=_credentials(tenant.get("controlCredentials")),
        **_pick(tenant, TENANT_FIELDS),
    )


def _provider(section: Mapping[str, Any]) -> ProviderConfig:
    settings = settings_type(section.get("type", DEFAULT_KIND))
    return settings(**_pick(section, PROVIDER_FIELDS), **_pick(section, settings.KEYS), proxy=_proxy(section))


def _proxy(section: Mapping[str, Any]) -> ProxyConfig | None:
    proxy = section.get("proxy")
    return ProxyConfig(**_pick(proxy, PROXY_FIELDS)) if proxy is not None else None


def _credentials(section: Mapping[str, Any] | None) -> Credentials | None:
    return Credentials(**_pick(section, CREDENTIAL_FIELDS)) if section is not None else None


def _pick(section: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    return {field: section[key] for key, field in fields.items() if key in section}
