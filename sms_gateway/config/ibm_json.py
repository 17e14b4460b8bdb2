"""IBM SMS Gateway's multi-tenant JSON (`MULTI_TENANT_CONFIG_FILE`) -> native tenant dicts.

IBM writes every value as a string ("true", "30000"); real JSON booleans and numbers are accepted too.
Keys we do not rename pass through unchanged, so the native schema reports unknown ones; keys IBM documents that
have no equivalent here (`NO_EFFECT_KEYS`) are taken out with a warning each.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from sms_gateway.config.build import split_workspace_url
from sms_gateway.providers import provider_integer_keys

Problem = tuple[str, str]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_INT = re.compile(r"^\s*[+-]?[0-9]+\s*$")

BOOL_KEYS = {"allowSessionCreateViaSMS", "notifyOnSessionTimeout", "tokenAuthEnabled", "validateSignature"}
INT_KEYS = {
    "timeoutForSession",
    "convReadTimeout",
    "convConnectTimeout",
    "smsProviderConnectTimeout",
    "smsProviderReadTimeout",
    "smsProvideReadTimeout",  # IBM's CP4D sample spells it so
    "connectTimeout",
    "readTimeout",
    "maxRetryNum",
    "retryInterval",
    "smsProviderMaxRetryNo",
    "smsProviderRetryInterval",
    "smsProvideRetryInterval",  # IBM's "Advanced JSON configuration properties" page spells it so
    "convMaxRetryNo",
    "convRetryInterval",
}
# Tenant-level IBM keys that belong to the engine or the provider in the native format.
MOVED_KEYS: dict[str, tuple[str, str]] = {
    "convReadTimeout": ("conversation", "convReadTimeout"),
    "convConnectTimeout": ("conversation", "convConnectTimeout"),
    "smsProviderConnectTimeout": ("smsProvider", "connectTimeout"),
    "smsProviderReadTimeout": ("smsProvider", "readTimeout"),
    "smsProvideReadTimeout": ("smsProvider", "readTimeout"),
    "smsProviderMaxRetryNo": ("smsProvider", "maxRetryNum"),
    "smsProviderRetryInterval": ("smsProvider", "retryInterval"),
    "smsProvideRetryInterval": ("smsProvider", "retryInterval"),
    "convMaxRetryNo": ("conversation", "maxRetryNum"),
    "convRetryInterval": ("conversation", "retryInterval"),
}
# Tenant keys IBM documents that this gateway has no equivalent for: accepted, each with a warning.
NO_EFFECT_KEYS = {
    # IBM's transcription and usage events to a REST server or Cloudant.
    "reporting": "this gateway sends no reporting events (for message texts in its log set"
    " logging.transcriptionMessages / ENABLE_TRANSCRIPTION_MESSAGES; for counts scrape /metrics)",
}


def parse_bool(text: str) -> bool | None:
    word = text.strip().lower()
    return True if word in _TRUE else False if word in _FALSE else None


def parse_int(text: str) -> int | None:
    return int(text) if _INT.match(text) else None


def engine_kind(api_version: str | None, workspace_id: Any, url: Any) -> str | None:
    """IBM's rule: v2 if asked for; else a workspace (given or inside the url) means WA v1, none an SOE."""
    version = (api_version or "v1").strip().lower()
    if version == "v2":
        return "watson_v2"
    if version != "v1":
        return None
    has_workspace = workspace_id is not None or (isinstance(url, str) and split_workspace_url(url) is not None)
    return "watson_v1" if has_workspace else "soe"


class TenantFile(NamedTuple):
    tenants: list[Any]
    # per tenant: native key path inside the tenant -> the IBM tenant key it came from
    moved: list[dict[tuple[str, ...], str]]
    problems: list[Problem]
    warnings: list[Problem]  # keys accepted that have no effect here


def read_tenant_json(path: str) -> TenantFile:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(_strip_trailing_commas(f.read()))
    except OSError as e:
        return TenantFile([], [], [(path, f"cannot read the file: {e.strerror or e}")], [])
    except json.JSONDecodeError as e:
        return TenantFile([], [], [(path, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})")], [])
    if not isinstance(data, dict) or not isinstance(data.get("tenants"), list):
        return TenantFile([], [], [(path, 'must be a JSON object {"tenants": [...]}')], [])
    problems = [(f"{path}:{key}", "unknown key") for key in data if key != "tenants"]
    tenants, moved, warnings = [], [], []
    for i, raw in enumerate(data["tenants"]):
        warnings += [(f"{path}:tenants[{i}].{key}", reason) for key, reason in _no_effect(raw)]
        tenant, moves, tenant_problems = _tenant_to_native(raw)
        tenants.append(tenant)
        moved.append(moves)
        problems += [(f"{path}:tenants[{i}].{key}", reason) for key, reason in tenant_problems]
    return TenantFile(tenants, moved, problems, warnings)


def _no_effect(raw: Any) -> list[Problem]:
    """A warning for each `NO_EFFECT_KEYS` key of the tenant, which is taken out so the schema accepts it."""
    if not isinstance(raw, dict):
        return []
    found = [key for key in NO_EFFECT_KEYS if key in raw]
    for key in found:
        del raw[key]
    return [(key, f"has no effect: {NO_EFFECT_KEYS[key]}") for key in found]


# IBM's own sample tenantConfig.json ends its list with a trailing comma, which its Java parser accepts.
_TRAILING_COMMA = re.compile(r'("(?:[^"\\]|\\.)*")|,(\s*[\]}])')


def _strip_trailing_commas(text: str) -> str:
    return _TRAILING_COMMA.sub(lambda m: m[1] or m[2], text)


def _tenant_to_native(raw: Any) -> tuple[Any, dict[tuple[str, ...], str], list[Problem]]:
    if not isinstance(raw, dict):
        return raw, {}, []
    tenant = _coerce(raw)
    moved: dict[tuple[str, ...], str] = {}
    for ibm_key, (section, key) in MOVED_KEYS.items():
        if ibm_key in tenant:
            value = tenant.pop(ibm_key)
            target = tenant.setdefault(section, {})
            if isinstance(target, dict) and key not in target:
                target[key] = value
                moved[(section, key)] = ibm_key
    problems: list[Problem] = []
    if isinstance(tenant.get("conversation"), dict):
        tenant["conversation"], problems = _conversation_to_native(tenant["conversation"])
    return tenant, moved, problems


def _conversation_to_native(conv: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    if "tokenServiceProviderUrl" in conv:  # the spelling in IBM's smsActSetConversationConfig example
        conv.setdefault("tokenServiceProviderURL", conv.pop("tokenServiceProviderUrl"))
    token_auth = conv.pop("tokenAuthEnabled", False)
    if token_auth is True:
        conv.setdefault("authType", "iam")
    elif token_auth is not False:
        problems.append(("conversation.tokenAuthEnabled", f"must be true or false (got {token_auth!r})"))
    version = conv.pop("convApiVersion", None)
    kind = engine_kind(None if version is None else str(version), conv.get("workspaceID"), conv.get("url"))
    if kind is None:
        problems.append(("conversation.convApiVersion", f"must be v1 or v2 (got {version!r})"))
    conv["type"] = kind or "watson_v1"
    return conv, problems


def _coerce(obj: dict[str, Any]) -> dict[str, Any]:
    """IBM string values -> typed values; empty strings (IBM's unfilled placeholders) count as absent."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if value == "":
            continue
        if isinstance(value, dict):
            value = _coerce(value)
        elif isinstance(value, str) and key in BOOL_KEYS | INT_KEYS | provider_integer_keys():
            parsed = parse_bool(value) if key in BOOL_KEYS else parse_int(value)
            value = value if parsed is None else parsed
        out[key] = value
    return out
