"""Build the engine a tenant's configuration names."""

from __future__ import annotations

import aiohttp

from sms_gateway.config.model import EngineConfig
from sms_gateway.engines.base import Engine
from sms_gateway.engines.echo import EchoEngine
from sms_gateway.engines.http import Sleep
from sms_gateway.engines.watson_v1 import WatsonV1Engine
from sms_gateway.engines.watson_v2 import WatsonV2Engine


def create_engine(config: EngineConfig, http: aiohttp.ClientSession, *, sleep: Sleep | None = None) -> Engine:
    """Raises ValueError when the configuration lacks what its engine kind needs."""
    if config.kind in ("watson_v1", "soe"):
        return WatsonV1Engine(config, http, sleep=sleep)
    if config.kind == "watson_v2":
        return WatsonV2Engine(config, http, sleep=sleep)
    if config.kind == "echo":
        return EchoEngine()
    raise ValueError(f"unknown engine kind {config.kind!r}")
