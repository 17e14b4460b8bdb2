"""What the README, `.env.example` and LICENSE tell a user is what the gateway does: their examples are run
through the gateway's own code, so they cannot drift from it."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sms_gateway.actions import interpret
from sms_gateway.config import env
from sms_gateway.config.load import ConfigError, load_config
from sms_gateway.model import Session
from sms_gateway.providers.twilio import TwilioProvider
from sms_gateway.replies import parse_v1_answer, parse_v2_answer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SNIPPET = re.compile(r"<!-- watson-snippet: (v1|v2) -->\n```json\n(.*?)\n```", re.S)
# Variables the gateway reads outside the configuration tables: the tenant file, and serve's drain.
OTHER_VARIABLES = {"MULTI_TENANT_CONFIG_FILE", "SHUTDOWN_DRAIN_SECONDS"}


def section(title: str) -> str:
    """The README's text under a `##`/`###` heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ )", README, re.S | re.M)
    assert match is not None, f"README has no section {title!r}"
    return match.group(1)


# ------------------------------------------------------------------------------------------- Watson snippets


def snippets() -> list[tuple[str, dict[str, Any]]]:
    found = [
        (version, json.loads(body)) for version, body in SNIPPET.findall(section("Sending media from a Watson dialog"))
    ]
    assert found
    return found


@pytest.mark.parametrize(("version", "answer"), snippets())
def test_each_watson_snippet_sends_its_text_and_media_as_one_mms(version: str, answer: dict[str, Any]) -> None:
    parsers = [parse_v1_answer] if version == "v1" else [parse_v2_answer]
    if "generic" in answer["output"] and "context" not in answer:
        parsers.append(parse_v1_answer)  # "v1 dialogs can use the same generic item"
    for parse in parsers:
        reply = parse(answer)
        plan = interpret(reply, Session.new("+15005550006", "+15551230001", 3600))
        assert [command.name for command in reply.commands] == ["smsActSendMedia"]
        assert plan.media_urls == ["https://www.example.com/forms/claim.pdf"]
        assert plan.text == "Here is the claim form to sign." and plan.ignored == []


def test_the_snippets_cover_every_place_a_dialog_can_put_the_command() -> None:
    places = set()
    for version, answer in snippets():
        output, context = answer.get("output", {}), answer.get("context", {})
        if "smsAction" in output:
            places.add(f"{version} output.smsAction")
        if "smsAction" in context:
            places.add(f"{version} context.smsAction")
        if context.get("skills", {}).get("main skill", {}).get("user_defined", {}).get("smsAction"):
            places.add(f"{version} context main skill user_defined")
        if any(item.get("response_type") == "user_defined" for item in output.get("generic", [])):
            places.add(f"{version} generic user_defined")
    assert places == {
        "v1 output.smsAction",
        "v1 context.smsAction",
        "v2 generic user_defined",
        "v2 context main skill user_defined",
    }


def test_a_v1_snippet_leaves_no_command_in_the_context_kept_for_the_next_turn() -> None:
    [in_context] = [answer for version, answer in snippets() if version == "v1" and "context" in answer]
    assert "smsAction" not in parse_v1_answer(in_context).engine_state["context"]


# ------------------------------------------------------------------------------------------- Try it with your phone


def test_the_phone_yaml_is_a_valid_configuration_with_the_echo_engine(tmp_path: Path) -> None:
    text = section("Try it with your phone")
    [block] = re.findall(r"```yaml\n(.*?)```", text, re.S)
    path = tmp_path / "phone.yaml"
    path.write_text("\n".join(line[3:] for line in block.splitlines()))  # the list item's indent
    config = load_config(str(path), {})
    [tenant] = config.tenants
    assert tenant.engine.kind == "echo" and tenant.provider.kind == "twilio"
    assert tenant.allow_session_create_via_sms and config.public_url == "https://your-subdomain.ngrok-free.app"


def test_the_webhook_url_shown_is_the_one_the_gateway_prints() -> None:
    text = section("Try it with your phone")
    assert f"ngrok-free.app{TwilioProvider.routes[0].path}" in text and '"event": "webhook_urls"' in text


# ------------------------------------------------------------------------------------------- .env.example


def env_example() -> tuple[dict[str, str], set[str]]:
    """(the variables set, the names of those left commented out as `# NAME=…`)."""
    values: dict[str, str] = {}
    commented: set[str] = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            values[match[1]] = match[2]
        elif match := re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=.*", line):
            commented.add(match[1])
    return values, commented


def variables_the_gateway_reads() -> set[str]:
    proxies = {
        f"{prefix}_{key}" for prefix in env.PROXY_PREFIXES for key in ("HOST", "PORT", "TYPE", "USERNAME", "PASSWORD")
    }
    return {*env.GLOBAL_VARS, *env.TENANT_VARS, env.API_VERSION_VAR, *proxies, *OTHER_VARIABLES}


def test_every_variable_in_env_example_is_one_the_gateway_reads() -> None:
    values, commented = env_example()
    assert values and commented
    assert set(values) | commented <= variables_the_gateway_reads()


def test_env_example_as_given_is_a_valid_configuration_and_each_variable_set_matters() -> None:
    values, _ = env_example()
    base = load_config(None, values)
    assert [tenant.phone_number for tenant in base.tenants] == [values["TENANT_PHONE_NUMBER"]]
    for name, value in values.items():
        changed = {"true": "false", "false": "true"}.get(value) or (
            str(int(value) + 1) if value.isdigit() else value + "x"
        )
        try:
            assert load_config(None, {**values, name: changed}) != base, f"{name} changes nothing"
        except ConfigError:
            pass  # refused: read all the same


# ------------------------------------------------------------------------------------------- licence, links


def test_license_is_the_apache_2_text_that_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    # The canonical text, as https://www.apache.org/licenses/LICENSE-2.0.txt serves it.
    digest = hashlib.md5((ROOT / "LICENSE").read_bytes(), usedforsecurity=False).hexdigest()
    assert digest == "3b83ef96387f14655fc854ddc3c6bd57"


def test_every_file_the_readme_links_to_exists() -> None:
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert {"LICENSE", "CHANGELOG.md", ".env.example", "docker-compose.yml"} <= set(links)
    for link in links:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_the_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert "## [Unreleased]" in changelog and f"## [{version}]" in changelog
