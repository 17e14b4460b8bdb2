"""One validated `Config` from our YAML, IBM's environment variables and IBM's tenant JSON.

Precedence: the YAML file, then environment variables over the global settings they name. Tenants come from
`MULTI_TENANT_CONFIG_FILE`, else the single-tenant variables (when `TENANT_PHONE_NUMBER` is set), else the
YAML. `CTRL_TENANT_USERNAME`/`PASSWORD` protect every tenant without its own `controlCredentials`, whichever
the source. Every problem found is collected and raised together, each naming the key as the user wrote it: a
native key path (`tenants[0].conversation.url`), an environment variable, or `<file>:<IBM key path>`. What is
valid but ignored or suspicious (a misspelt IBM variable, a source that replaces another) is returned beside the
Config as warnings named the same way (`read_config`).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator, ValidationError

from sms_gateway.config import env
from sms_gateway.config.build import build_config, normalise, semantic_problems, semantic_warnings
from sms_gateway.config.ibm_json import read_tenant_json
from sms_gateway.config.mask import SECRET_KEYS, mask_url
from sms_gateway.config.model import Config, ConfigWarning, KeyPath
from sms_gateway.config.yaml_file import read_yaml

TenantNamer = Callable[[int, KeyPath], str]  # (tenant index, key path inside it) -> name


class ConfigError(Exception):
    """Every configuration problem found, as (key path, reason) pairs, and the warnings found before them (a
    misspelt variable may be why a required one is missing)."""

    def __init__(self, errors: Sequence[tuple[str, str]], warnings: Sequence[ConfigWarning] = ()) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings)
        super().__init__("\n".join(f"{key}: {reason}" for key, reason in self.errors))


class LoadedConfig(NamedTuple):
    config: Config
    warnings: list[ConfigWarning]  # valid settings that are ignored, overridden or suspicious


def load_config(config_file: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    return read_config(config_file, environ).config


def read_config(config_file: str | None = None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """The configuration and what looks wrong in it; ConfigError with every problem when it is invalid."""
    environ = os.environ if environ is None else environ
    native, problems = read_yaml(config_file) if config_file else ({}, [])
    file_tenants = native.get("tenants")
    overrides, env_problems = env.read_globals(environ)
    problems += env_problems
    _merge(native, overrides)
    name_tenant_key, tenant_problems, source, file_warnings = _select_tenants(native, environ)
    problems += tenant_problems
    warnings = env.unknown_variables(environ) + env.ignored_tenant_variables(environ)
    warnings += [ConfigWarning(key, reason) for key, reason in file_warnings]
    if source is not None and isinstance(file_tenants, list) and file_tenants:
        warnings.append(
            ConfigWarning(
                f"{config_file}:tenants", f"its {len(file_tenants)} tenant(s) are replaced by those of {source}"
            )
        )

    def name(path: KeyPath) -> str:
        if path[:1] == ("tenants",) and len(path) > 1 and isinstance(path[1], int):
            return name_tenant_key(path[1], path[2:])
        variable = env.GLOBAL_NAMES.get(tuple(map(str, path)))
        return variable if variable and env.get(environ, variable) else format_path(path)

    path_problems = normalise(native)
    path_problems += _schema_problems(native) + semantic_problems(native)
    problems += [(name(path), reason) for path, reason in path_problems]
    if problems:
        raise ConfigError(problems, warnings)
    warnings += [ConfigWarning(name(path), reason) for path, reason in semantic_warnings(native)]
    config = build_config(native)
    if not config.tenants:
        warnings.append(ConfigWarning("tenants", "none is configured, so every webhook is answered 403"))
    return LoadedConfig(config, warnings)


def _select_tenants(
    native: dict[str, Any], environ: Mapping[str, str]
) -> tuple[TenantNamer, list[tuple[str, str]], str | None, list[tuple[str, str]]]:
    """Put the tenants from the winning source in `native`; return how to name their keys in errors, the
    problems, the environment's source of them if it replaced the YAML's, and the tenant file's warnings."""
    proxies, problems = env.read_proxies(environ)
    tenant_file = env.get(environ, env.TENANT_FILE_VAR)
    source: str | None = None
    file_warnings: list[tuple[str, str]] = []
    shared_control: dict[str, str] | None = None  # CTRL_TENANT_*, for the file's tenants without their own
    if tenant_file is not None:
        source = env.TENANT_FILE_VAR
        loaded = read_tenant_json(tenant_file)
        native["tenants"] = loaded.tenants
        problems += loaded.problems
        file_warnings += loaded.warnings
        shared_control, control_problems = env.read_control_credentials(environ)
        problems += control_problems

        def name(i: int, path: KeyPath) -> str:
            moved = loaded.moved[i].get(tuple(map(str, path)))
            return f"{tenant_file}:{format_path(('tenants', i, moved) if moved else ('tenants', i, *path))}"

    elif env.get(environ, "TENANT_PHONE_NUMBER") is not None:
        source = "TENANT_PHONE_NUMBER and the single tenant's variables"
        tenant, tenant_problems = env.read_tenant(environ)  # CTRL_TENANT_* among its variables
        native["tenants"] = [tenant]
        problems += tenant_problems

        def name(i: int, path: KeyPath) -> str:
            return env.TENANT_NAMES.get(tuple(map(str, path))) or format_path(("tenants", i, *path))

    else:
        shared_control, control_problems = env.read_control_credentials(environ)
        problems += control_problems

        def name(i: int, path: KeyPath) -> str:
            return format_path(("tenants", i, *path))

    tenants = native.get("tenants")
    for tenant in tenants if isinstance(tenants, list) else []:
        if not isinstance(tenant, dict):
            continue
        for section, proxy in proxies.items():
            if isinstance(tenant.get(section), dict):
                tenant[section].setdefault("proxy", proxy)
        # Silently ignoring them would leave a tenant the operator meant to protect without credentials; an
        # empty section is IBM's unfilled placeholder, so it counts as none.
        if shared_control is not None and not tenant.get("controlCredentials"):
            tenant["controlCredentials"] = dict(shared_control)
    return name, problems, source, file_warnings


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Deep-merge in place; a section the file got wrong (not a mapping) is kept for the schema to report."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif key not in base or not isinstance(value, Mapping):
            base[key] = value


def format_path(path: KeyPath) -> str:
    """("tenants", 0, "conversation", "url") -> "tenants[0].conversation.url"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


@cache
def _validator() -> Draft202012Validator:
    text = resources.files("sms_gateway").joinpath("schemas/config.schema.json").read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _schema_problems(native: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    problems = [p for error in _validator().iter_errors(native) for p in _explain(error)]
    return sorted(problems, key=lambda p: [(isinstance(part, str), part) for part in p[0]])


def _explain(error: ValidationError) -> Iterator[tuple[KeyPath, str]]:
    path: KeyPath = tuple(error.absolute_path)
    schema: Any = error.schema
    instance: Any = error.instance
    if error.validator == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        for key in sorted(set(instance) - set(allowed), key=str):
            close = difflib.get_close_matches(str(key), allowed, n=1)
            yield (*path, str(key)), "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif error.validator == "required":
        required: Any = error.validator_value
        missing = next((k for k in required if error.message.startswith(repr(k))), None)
        yield ((*path, missing) if missing else path), "is required"
    else:
        yield path, _reason(error, secret=bool(path) and path[-1] in SECRET_KEYS)


_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping of keys to values",
    "array": "a list",
    "null": "null",
}


def _reason(error: ValidationError, secret: bool) -> str:
    value, rule = error.instance, error.validator
    limit: Any = error.validator_value
    schema: Any = error.schema
    shown = f"a {type(value).__name__}" if secret else _show(value)
    if rule == "type":
        expected = [limit] if isinstance(limit, str) else limit
        reason = f"must be {' or '.join(_TYPE_NAMES[t] for t in expected)} (got {shown})"
        if "string" in expected and isinstance(value, int | float):
            reason += "; put it in quotes"
        return reason
    if rule == "enum":
        return f"must be one of {', '.join(map(str, limit))} (got {shown})"
    if rule == "minimum":
        return f"must be at least {limit} (got {shown})"
    if rule == "maximum":
        return f"must be at most {limit} (got {shown})"
    if rule == "minLength":
        return "must not be empty"
    if rule == "pattern":
        return f"must be {schema.get('description') or f'of the form {limit}'} (got {shown})"
    if rule == "uniqueItems":
        return "must not repeat an item"
    return error.message


def _show(value: Any) -> str:
    text = repr(mask_url(value) if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."
