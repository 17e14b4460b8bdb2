"""Typed keys of the application's dependency registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sms_gateway.config.model import Config
from sms_gateway.conversation import Conversations
from sms_gateway.engines.registry import EngineRegistry
from sms_gateway.jobs import JobWorker
from sms_gateway.metrics import Metrics
from sms_gateway.outbox import Outbox
from sms_gateway.pipes import PipeRelay
from sms_gateway.providers.base import Provider
from sms_gateway.store.base import Store
from sms_gateway.worker import InboundWorker


@dataclass(slots=True)
class RuntimeState:
    """Facts learned while running."""

    shutting_down: bool = False


CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
STATE = web.AppKey("state", RuntimeState)
ENGINES = web.AppKey("engines", EngineRegistry)
CONVERSATIONS = web.AppKey("conversations", Conversations)
WORKER = web.AppKey("worker", InboundWorker)
JOBS = web.AppKey("jobs", JobWorker)
OUTBOX = web.AppKey("outbox", Outbox)
PIPES = web.AppKey("pipes", PipeRelay)
PROVIDERS = web.AppKey("providers", dict[str, Provider[Any, Any]])
