"""The Dockerfile and docker-compose.yml: what they promise, checked without a Docker daemon.

docker-compose.yml is validated against the Compose Specification's JSON Schema (tests/fixtures/compose/, source in
tests/fixtures/README.md) and then read for what running it needs: Redis that writes every change to disk, two
gateway replicas on it behind one published port, and a stop grace longer than the gateway's shutdown. The
Dockerfile's HEALTHCHECK command is run against a real gateway on a port of the test's choosing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sms_gateway.app import SHUTDOWN_GRACE_SECONDS
from tests.harness import free_port
from tests.procs import inherited_env

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DEFAULT_DRAIN_SECONDS = 2.0  # serve's default for SHUTDOWN_DRAIN_SECONDS


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")
    ]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def seconds(duration: str) -> float:
    """A Compose duration ("45s", "1m30s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert parts is not None and duration, f"not a duration: {duration!r}"
    hours, minutes, secs = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def shutdown_seconds(environment: dict[str, str]) -> float:
    """The longest a gateway takes to stop after SIGTERM: its drain, then turns' and sends' grace in turn."""
    drain = float(environment.get("SHUTDOWN_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
    return drain + 2 * SHUTDOWN_GRACE_SECONDS


# ------------------------------------------------------------------------------------------- Dockerfile


def test_the_image_keeps_its_sqlite_store_in_a_volume_as_a_non_root_user() -> None:
    [volume] = instructions("VOLUME")
    data_dir = volume.strip('[]" ')
    assert image_env()["STORE_URL"] == f"sqlite:///{data_dir}/sms-gateway.db"
    [user] = instructions("USER")
    assert user not in ("root", "0")
    assert instructions("WORKDIR")[-1] == data_dir


def test_the_image_serves_on_the_exposed_port_and_every_file_it_copies_exists() -> None:
    assert instructions("EXPOSE") == [image_env()["HTTP_PORT"]]
    assert image_env()["HTTP_HOST"] == "0.0.0.0"
    assert json.loads(instructions("CMD")[0]) == ["sms-gateway", "serve"]
    for args in instructions("COPY"):
        for source in shlex.split(args)[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"


def test_the_healthcheck_follows_http_port_at_run_time(tmp_path: Path) -> None:
    [healthcheck] = instructions("HEALTHCHECK")
    command = healthcheck.split(" CMD ", 1)[1]
    assert "HTTP_PORT" in command and "/health" in command
    port = free_port()
    env = {
        **inherited_env(),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "STORE_URL": "memory://",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def check() -> int:
        # Shell form, as Docker runs it: `/bin/sh -c` with the container's environment.
        return subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, timeout=30).returncode

    assert check() != 0, "unhealthy while nothing listens on HTTP_PORT"
    script = Path(sys.executable).parent / "sms-gateway"
    with subprocess.Popen(
        [str(script), "serve"],
        env={**env, "SHUTDOWN_DRAIN_SECONDS": "0"},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as gateway:
        try:
            deadline = time.monotonic() + 60
            while check() != 0:
                assert gateway.poll() is None and time.monotonic() < deadline, "the gateway never became healthy"
                time.sleep(0.2)
        finally:
            gateway.terminate()
            gateway.wait(60)


def test_the_documented_stop_grace_covers_the_gateways_shutdown() -> None:
    for name in ("README.md", "Dockerfile"):
        documented = [int(n) for n in re.findall(r"docker stop -t (\d+)", (ROOT / name).read_text())]
        assert documented, f"{name} says how long to let the gateway stop"
        assert all(n > shutdown_seconds(image_env()) for n in documented)


# ------------------------------------------------------------------------------------------- docker-compose.yml


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((FIXTURES / "compose" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())


def test_redis_writes_every_change_to_its_volume() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "redis-server" and options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert [volume.split(":")[1] for volume in redis["volumes"]] == ["/data"]
    assert redis["volumes"][0].split(":")[0] in compose()["volumes"]


def test_two_gateway_replicas_share_redis_behind_one_published_port() -> None:
    services = compose()["services"]
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["environment"]["STORE_URL"].startswith("redis://redis:")
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gateway["env_file"] == ".env" and (ROOT / ".env.example").is_file()
    assert "ports" not in gateway, "replicas publish nothing themselves"
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert list(published) == ["proxy"] and len(published["proxy"]) == 1
    container_port = published["proxy"][0].rsplit(":", 1)[1]

    proxy = services["proxy"]
    [mount] = [volume for volume in proxy["volumes"] if volume.endswith(":ro")]
    nginx = (ROOT / mount.split(":")[0]).read_text()
    assert re.search(rf"^\s*listen {container_port};", nginx, re.M)
    assert re.search(rf"^\s*server gateway:{gateway['environment']['HTTP_PORT']} resolve;", nginx, re.M)
    assert "proxy_pass http://gateways;" in nginx
    assert proxy["depends_on"]["gateway"]["condition"] == "service_healthy"


def test_compose_gives_the_gateway_time_to_finish_its_work_when_stopped() -> None:
    gateway = compose()["services"]["gateway"]
    assert seconds(gateway["stop_grace_period"]) > shutdown_seconds(gateway["environment"]) + 5
