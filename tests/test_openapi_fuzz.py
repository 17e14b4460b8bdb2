"""A schema-driven fuzz run of the REST API's OpenAPI document with schemathesis, against the real gateway on a
local port (fake Twilio and fake Watson behind it), with Basic credentials configured.

Every phase schemathesis has runs (examples, coverage, fuzzing, stateful via the document's links), with a
bounded number of examples. Checked: no server errors, every status code and content type documented, every
body matching its documented schema, invalid input rejected with a 4xx, auth enforced, deleted resources gone.
`positive_data_acceptance` is off on purpose: some valid-looking input is refused after schema checks (media
on private hosts, a URL whose port is out of range), with a documented 400.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.specs.openapi.definitions import OPENAPI_31

from sms_gateway.web.openapi import openapi_document
from tests.harness import running_gateway
from tests.test_rest_api import ALICE, all_closed

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
    "unsupported_method",
)
MAX_EXAMPLES = 25


def fuzz(base_url: str) -> tuple[list[str], dict[tuple[str, int], int], int]:
    """Run schemathesis (blocking): (failures, responses by (operation, status), seed)."""
    toml = "\n".join(
        [
            f"base-url = {json.dumps(base_url)}",
            "[generation]",
            f"max-examples = {MAX_EXAMPLES}",
            'database = "none"',
            "[auth.basic]",
            f"username = {json.dumps(ALICE[0])}",
            f"password = {json.dumps(ALICE[1])}",
            "[checks]",
            "enabled = false",
            *(f"{name}.enabled = true" for name in CHECKS),
        ]
    )
    config = SchemathesisConfig.from_str(toml)
    schema = schemathesis.openapi.from_dict(openapi_document(), config=config)
    failures: list[str] = []
    statuses: dict[tuple[str, int], int] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.NonFatalError):
            failures.append(f"error in {event.label}: {event.value!r}")
        elif isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, interaction in recorder.interactions.items():
                if interaction.response is not None and case_id in recorder.cases:
                    key = (recorder.cases[case_id].value.operation.label, interaction.response.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        failures.append(_describe(event, case_id, check))
    return failures, statuses, config.seed


def _describe(event: events.ScenarioFinished, case_id: str, check: Any) -> str:
    case = event.recorder.cases[case_id].value
    interaction = event.recorder.interactions.get(case_id)
    response = interaction.response if interaction is not None else None
    title = check.failure_info.failure.title if check.failure_info is not None else ""
    answer = f"{response.status_code} {response.content[:300]!r}" if response is not None else "no response"
    request = f"{case.method} {case.formatted_path} {case.body!r:.300}"
    return f"{check.name} ({title}) in {event.phase}: {request} -> {answer}"


@pytest.mark.slow
async def test_the_openapi_document_survives_a_schemathesis_run(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, configure=all_closed) as gw:
        failures, statuses, seed = await asyncio.to_thread(fuzz, gw.url)
        assert failures == [], f"schemathesis seed {seed}:\n" + "\n".join(failures[:20])
        assert not [key for key in statuses if key[1] >= 500]
        # Not vacuous: every operation was reached, and the happy paths were taken.
        operations = {label for label, _ in statuses}
        assert len(operations) == 9, operations
        ok = {label for label, status in statuses if status < 300}
        for label in (
            "POST /sms.gateway/sessions",
            "POST /sms.gateway/smsPipe",
            "POST /sms.gateway/messages",
            "POST /sms.gateway/test/provider",
            "POST /sms.gateway/test/conversation",
        ):
            assert label in ok, (label, sorted(statuses))
        await gw.settle(timeout=30)


def test_the_document_is_valid_openapi_3_1_and_its_schemas_valid_json_schema() -> None:
    document = json.loads(json.dumps(openapi_document()))
    errors = [error.message for error in jsonschema.Draft202012Validator(OPENAPI_31).iter_errors(document)]
    assert errors == []
    for component in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(component)
