"""A `Config` back in the native format, for `check-config` and start-up logs, with every secret masked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from sms_gateway.config.build import (
    CREDENTIAL_FIELDS,
    ENGINE_FIELDS,
    GLOBAL_FIELDS,
    MEDIA_FIELDS,
    PROVIDER_FIELDS,
    PROXY_FIELDS,
    RATE_KINDS,
    TENANT_FIELDS,
)
from sms_gateway.config.model import Config, ProxyConfig, TenantConfig
from sms_gateway.providers import provider_secrets

MASK = "****"
SECRET_KEYS = frozenset({"password", "apikey", "bearerToken"}) | provider_secrets()
_URL_USERINFO = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@]*)@")
_URL_START = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# A URL inside free text (an error message quoting it, often with repr's quotes around it).
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
# Query (or fragment) parameters whose values are credentials: apikey, api_key, access_token, secret,
# password, sig, signature, X-Amz-Credential, ... Matched within the name, so a harmless name is sometimes
# masked too: better than a key in clear.
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|sig|auth|credential|session", re.IGNORECASE)


def effective_config_dict(config: Config) -> dict[str, Any]:
    """The native-format dict of `config`, JSON-serialisable, with passwords, keys and tokens as "****"."""
    masked: dict[str, Any] = mask_secrets(native_dict(config))
    return masked


def native_dict(config: Config) -> dict[str, Any]:
    """The native-format dict of `config`, secrets in clear; `build_config` of it gives `config` back."""
    out: dict[str, Any] = {}
    for (*parents, key), field in GLOBAL_FIELDS.items():
        section = out
        for parent in parents:
            section = section.setdefault(parent, {})
        value = getattr(config, field)
        section[key] = list(value) if isinstance(value, tuple) else value
    out["media"] = _unpick(config.media, MEDIA_FIELDS)
    if config.media.mms_country_prefixes is not None:
        out["media"]["mmsCountryPrefixes"] = list(config.media.mms_country_prefixes)
    out["rateLimits"] = _rate_limits(config.rate_limits)
    out["tenants"] = [_tenant(t) for t in config.tenants]
    cleaned: dict[str, Any] = _without_none(out)
    return cleaned


def mask_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: MASK if k in SECRET_KEYS and v else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return mask_url(value)
    return value


def mask_url(text: str) -> str:
    """Hide the password in a URL's user-info (`redis://:pw@host`, `http://user:pw@proxy`) and the values of its
    query and fragment parameters that look like credentials (`?apikey=…`, `&token=…`, `#access_token=…`)."""
    if _URL_START.match(text) is None:
        return text
    match = _URL_USERINFO.match(text)
    if match is not None:
        user, colon, _ = match["userinfo"].partition(":")
        userinfo = f"{user}:{MASK}" if colon else MASK
        text = f"{match['scheme']}{userinfo}@{text[match.end() :]}"
    text, hash_sign, fragment = text.partition("#")
    base, question_mark, query = text.partition("?")
    return base + question_mark + _mask_parameters(query) + hash_sign + _mask_parameters(fragment)


def mask_urls_in_text(text: str) -> str:
    """`mask_url` applied to every URL inside `text` (an error message that quotes a URL)."""
    return _URL_IN_TEXT.sub(lambda match: mask_url(match[0]), text)


def _mask_parameters(query: str) -> str:
    if "=" not in query:
        return query
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        parts.append(f"{name}={MASK}" if equals and value and _SECRET_PARAM.search(unquote_plus(name)) else part)
    return "&".join(parts)


def _tenant(tenant: TenantConfig) -> dict[str, Any]:
    out = _unpick(tenant, TENANT_FIELDS)
    out["conversation"] = _unpick(tenant.engine, ENGINE_FIELDS) | _proxy(tenant.engine.proxy)
    provider = tenant.provider
    out["smsProvider"] = {
        "type": provider.kind,
        **_unpick(provider, PROVIDER_FIELDS),
        **_unpick(provider, provider.KEYS),
        **_proxy(provider.proxy),
    }
    for key, credentials in (
        ("webHookCredentials", tenant.webhook_credentials),
        ("controlCredentials", tenant.control_credentials),
    ):
        if credentials is not None:
            out[key] = _unpick(credentials, CREDENTIAL_FIELDS)
    return out


def _proxy(proxy: ProxyConfig | None) -> dict[str, Any]:
    return {} if proxy is None else {"proxy": _unpick(proxy, PROXY_FIELDS)}


def _unpick(obj: object, fields: Mapping[str, str]) -> dict[str, Any]:
    return {key: getattr(obj, field) for key, field in fields.items()}


def _without_none(value: Any) -> Any:
    """Unset optional fields are left out, as the native format has no null for them."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None or k == "conversationFailedReplyMessage"}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _rate_limits(rates: Mapping[str, float]) -> dict[str, Any]:
    kinds = {kind: key for key, kind in RATE_KINDS.items()}
    out: dict[str, Any] = {kinds[k]: v for k, v in rates.items() if k in kinds}
    numbers = {"+" + k: v for k, v in rates.items() if k not in kinds}
    if numbers:
        out["numbers"] = numbers
    return out
