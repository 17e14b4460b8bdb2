"""`smsActSetConversationConfig`: a session's engine configuration, switched by the dialog itself."""

from __future__ import annotations

import dataclasses
from typing import Any

from sms_gateway.config.model import EngineConfig
from sms_gateway.model import JSON


class InvalidOverride(ValueError):
    pass


_STRING_KEYS = {
    "url": "url",
    "workspaceID": "workspace_id",
    "assistantID": "assistant_id",
    "environmentID": "environment_id",
    "username": "username",
    "password": "password",
    "apikey": "apikey",
    "bearerToken": "bearer_token",
    "tokenServiceProviderURL": "token_url",
    "tokenServiceProviderUrl": "token_url",  # the spelling of IBM's own example
}
_TIMEOUT_KEYS = {"convConnectTimeout": "connect_timeout_ms", "convReadTimeout": "read_timeout_ms"}
_OTHER_KEYS = {"convApiVersion", "tokenAuthEnabled", "conversationFailedReplyMessage"}


def apply_override(base: EngineConfig, params: JSON) -> EngineConfig:
    """The engine configuration after the command; attributes not given keep the tenant's values."""
    unknown = set(params) - set(_STRING_KEYS) - set(_TIMEOUT_KEYS) - _OTHER_KEYS
    if unknown:
        raise InvalidOverride(f"unknown parameters: {', '.join(sorted(unknown))}")
    changes: dict[str, Any] = {}
    for key, attr in _STRING_KEYS.items():
        if key in params:
            value = params[key]
            if not isinstance(value, str):
                raise InvalidOverride(f"{key} must be a string")
            changes[attr] = value
    for key, attr in _TIMEOUT_KEYS.items():
        if key in params:
            changes[attr] = _milliseconds(key, params[key])

    version = str(params.get("convApiVersion", "")).lower()
    if version not in ("", "v1", "v2"):
        raise InvalidOverride("convApiVersion must be v1 or v2")
    if version == "v2":
        changes["kind"] = "watson_v2"
    elif "workspaceID" in params or version == "v1":
        changes["kind"] = "watson_v1"
    elif "url" in params and base.kind != "watson_v2":
        # A new URL without a workspace is an SOE, as in IBM's engine selection.
        changes["kind"] = "soe" if base.kind == "soe" or not base.workspace_id else "watson_v1"

    token_auth = str(params.get("tokenAuthEnabled", "")).lower() == "true"
    if "apikey" in params or token_auth:
        changes["auth"] = "iam"
    elif "username" in params and "password" in params:
        if params["username"] == "apikey":
            changes.update(auth="iam", apikey=params["password"], username=None, password=None)
        else:
            changes["auth"] = "basic"
    elif "bearerToken" in params:
        changes["auth"] = "bearer"

    config = dataclasses.replace(base, **changes)
    _check(config)
    return config


def _milliseconds(key: str, value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidOverride(f"{key} must be a number of milliseconds") from None
    if not 1 <= number <= 600_000:
        raise InvalidOverride(f"{key} must be between 1 and 600000 ms")
    return number


def _check(config: EngineConfig) -> None:
    if not config.url:
        raise InvalidOverride("url is required")
    if config.kind == "watson_v1" and not config.workspace_id:
        raise InvalidOverride("workspaceID is required for a Watson Assistant v1 workspace")
    if config.kind == "watson_v2" and not config.assistant_id:
        raise InvalidOverride("assistantID is required for Watson Assistant v2")
    if config.auth == "iam" and not config.apikey:
        raise InvalidOverride("apikey is required for token authentication")
    if config.auth == "basic" and not (config.username and config.password):
        raise InvalidOverride("username and password are required")
