"""The REST API's JSON Schemas (`schemas/api/*.json`) and the OpenAPI 3.1 document built from them.

The same schemas validate request bodies (`web/rest.py`) and describe them here: one source of truth.
References to `common.json#/$defs/...` are inlined when a schema is loaded, so each schema stands alone.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sms_gateway.model import JSON

API_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "api"
COMMON = "common.json"
BASE = "/sms.gateway"
# Answers every route can give besides its own.
_AUTH_ERRORS = {
    "401": "No credentials (the answer carries `WWW-Authenticate: Basic`).",
    "403": "Wrong credentials, or credentials of another tenant.",
}
_BODY_ERRORS = {
    "400": "Malformed JSON, a body that is not an object, or a field that is missing, unknown or invalid "
    "(the message and `field` name it). Nothing is stored.",
    "413": "The body is larger than the gateway accepts.",
    "415": "The body is not `application/json`.",
}
_STORE_ERROR = {"503": "The store is unavailable; try again."}


@cache
def api_schemas() -> dict[str, JSON]:
    """Every schema of the API by file stem (`session_create`, ...), references inlined."""
    raw = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(API_SCHEMA_DIR.glob("*.json"))}
    defs: JSON = raw[COMMON]["$defs"]
    return {name.removesuffix(".json"): _inline(schema, defs) for name, schema in raw.items() if name != COMMON}


def _inline(node: Any, defs: JSON) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(f"{COMMON}#/$defs/"):
        target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
        return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def schema(name: str) -> JSON:
    return api_schemas()[name]


def _component(name: str) -> JSON:
    return {k: v for k, v in schema(name).items() if k not in ("$schema", "$id")}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{schema(name)['title']}"}


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    request: str | None  # schema name of the body
    ok_status: str
    ok: str | None  # schema name of the success body (None: no body)
    ok_description: str
    errors: dict[str, str]  # status -> description (error bodies)
    path_param: str | None = None
    special: dict[str, tuple[str, str]] | None = None  # status -> (schema name, description) for non-error bodies


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/sessions",
        "createSession",
        "Create an SMS session and run its first turn",
        "session_create",
        "201",
        "session_created",
        "Session created; the first turn's reply is being sent.",
        {**_BODY_ERRORS, **_AUTH_ERRORS, "404": "`tenantPhoneNumber` is not a tenant of this gateway.", **_STORE_ERROR},
        special={"409": ("session_conflict", "The pair already has a session; its id is in `smsSessionID`.")},
    ),
    Operation(
        "delete",
        "/sessions/{smsSessionID}",
        "deleteSession",
        "End a session",
        None,
        "204",
        None,
        "Session ended.",
        {**_AUTH_ERRORS, "404": "No such session.", **_STORE_ERROR},
        path_param="smsSessionID",
    ),
    Operation(
        "post",
        "/smsPipe",
        "createPipe",
        "Open a Voice Gateway SMS pipe",
        "pipe_create",
        "201",
        "pipe_created",
        "Pipe created.",
        {**_BODY_ERRORS, **_AUTH_ERRORS, "404": "`tenantPhoneNumber` is not a tenant of this gateway.", **_STORE_ERROR},
    ),
    Operation(
        "post",
        "/smsPipe/{smsPipeID}/messages",
        "sendThroughPipe",
        "Send SMS/MMS to the pipe's user",
        "pipe_message",
        "202",
        "message_accepted",
        "Queued for sending.",
        {**_BODY_ERRORS, **_AUTH_ERRORS, "404": "No such pipe, or it has expired.", **_STORE_ERROR},
        path_param="smsPipeID",
    ),
    Operation(
        "delete",
        "/smsPipe/{smsPipeID}",
        "deletePipe",
        "Close a pipe (the user's messages go to the engine again)",
        None,
        "204",
        None,
        "Pipe deleted.",
        {**_AUTH_ERRORS, "404": "No such pipe.", **_STORE_ERROR},
        path_param="smsPipeID",
    ),
    Operation(
        "post",
        "/messages",
        "sendMessage",
        "Send a one-off SMS/MMS (no session)",
        "message_send",
        "202",
        "message_accepted",
        "Queued for sending.",
        {**_BODY_ERRORS, **_AUTH_ERRORS, "404": "`tenantPhoneNumber` is not a tenant of this gateway.", **_STORE_ERROR},
    ),
    Operation(
        "post",
        "/test/provider",
        "testProvider",
        "Test the SMS provider configuration (sends 'Test Connection message from SMS Gateway')",
        "test_request",
        "200",
        "test_provider_result",
        "The provider accepted the message.",
        {
            **_BODY_ERRORS,
            **_AUTH_ERRORS,
            "404": "`tenantPhoneNumber` is not a tenant of this gateway.",
            "502": "The provider refused the message; `message` says why.",
        },
    ),
    Operation(
        "post",
        "/test/conversation",
        "testConversation",
        "Test the conversation engine configuration (one turn with empty text)",
        "test_request",
        "200",
        "test_conversation_result",
        "The engine answered.",
        {
            **_BODY_ERRORS,
            **_AUTH_ERRORS,
            "404": "`tenantPhoneNumber` is not a tenant of this gateway.",
            "502": "The engine did not answer; `message` says why.",
        },
    ),
)


def _link(operation_id: str, parameter: str) -> JSON:
    return {"operationId": operation_id, "parameters": {parameter: f"$response.body#/{parameter}"}}


# What a client can do next with the id an answer gives it.
_LINKS: dict[str, dict[str, JSON]] = {
    "createSession": {
        "201": {"DeleteSession": _link("deleteSession", "smsSessionID")},
        "409": {"DeleteExistingSession": _link("deleteSession", "smsSessionID")},
    },
    "createPipe": {
        "201": {
            "SendThroughPipe": _link("sendThroughPipe", "smsPipeID"),
            "DeletePipe": _link("deletePipe", "smsPipeID"),
        },
    },
}

_PATH_PARAM_DESCRIPTIONS = {
    "smsSessionID": "The id answered by `POST /sms.gateway/sessions`.",
    "smsPipeID": "The id answered by `POST /sms.gateway/smsPipe`.",
}


def _json_content(ref: JSON) -> JSON:
    return {"application/json": {"schema": ref}}


def _operation(op: Operation) -> JSON:
    responses: JSON = {}
    ok: JSON = {"description": op.ok_description}
    if op.ok is not None:
        ok["content"] = _json_content(_ref(op.ok))
    responses[op.ok_status] = ok
    for status, (name, description) in (op.special or {}).items():
        responses[status] = {"description": description, "content": _json_content(_ref(name))}
    for status, links in _LINKS.get(op.operation_id, {}).items():
        responses[status]["links"] = links
    for status, description in op.errors.items():
        response: JSON = {"description": description, "content": _json_content(_ref("error"))}
        if status == "401":
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Basic`"}}
        responses[status] = response
    body: JSON = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": ["pipes" if "Pipe" in op.path else "test" if op.path.startswith("/test") else "sessions"],
        "responses": dict(sorted(responses.items())),
    }
    if op.request is not None:
        body["requestBody"] = {"required": True, "content": _json_content(_ref(op.request))}
    if op.path_param is not None:
        body["parameters"] = [
            {
                "name": op.path_param,
                "in": "path",
                "required": True,
                "description": _PATH_PARAM_DESCRIPTIONS[op.path_param],
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
            }
        ]
    if op.operation_id == "createPipe":
        body["callbacks"] = _pipe_callbacks()
    return body


def _pipe_callbacks() -> JSON:
    def post(name: str, summary: str) -> JSON:
        return {
            "post": {
                "summary": summary,
                "requestBody": {"required": True, "content": _json_content(_ref(name))},
                "responses": {
                    "2XX": {"description": "Received; anything else (or no answer) is retried with backoff."}
                },
            }
        }

    return {
        "inboundMessage": {
            "{$request.body#/callbackURL}": post("pipe_relay", "The user's SMS/MMS, relayed while the pipe is open")
        },
        "sendFailed": {
            "{$request.body#/callbackURL}": post("pipe_event", "A message sent through the pipe could not be delivered")
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("sms-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


@cache
def openapi_document() -> JSON:
    paths: JSON = {}
    for op in OPERATIONS:
        paths.setdefault(BASE + op.path, {})[op.method] = _operation(op)
    paths[BASE + "/openapi.json"] = {
        "get": {
            "operationId": "getOpenAPI",
            "summary": "This document",
            "security": [],
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "The OpenAPI document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sms-gateway session-control and pipe REST API",
            "version": _version(),
            "description": (
                "IBM SMS Gateway's REST API: sessions started from outside, Voice Gateway SMS pipes, one-off "
                'sends and configuration tests. JSON in and out; errors are `{"error": {"code", "message"}}`. '
                "HTTP Basic auth with the tenant's `controlCredentials`, else `CTRL_TENANT_USERNAME`/"
                "`CTRL_TENANT_PASSWORD`; a tenant's credentials reach only that tenant's numbers. A tenant without "
                "credentials refuses every call unless the operator set `controlAPI.allowAnonymous`."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "schemas": {schema(name)["title"]: _component(name) for name in sorted(api_schemas())},
        },
    }
