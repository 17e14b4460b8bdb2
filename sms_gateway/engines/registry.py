"""One engine client per distinct engine configuration, shared by every session that uses it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import aiohttp

from sms_gateway.config.model import EngineConfig
from sms_gateway.engines.base import Engine

EngineFactory = Callable[[EngineConfig, aiohttp.ClientSession], Engine]


class EngineRegistry:
    def __init__(self, http: aiohttp.ClientSession, factory: EngineFactory, max_engines: int = 256) -> None:
        self._http = http
        self._factory = factory
        self._max = max_engines
        self._engines: OrderedDict[EngineConfig, Engine] = OrderedDict()
        self._retired: list[Engine] = []

    def get(self, config: EngineConfig) -> Engine:
        engine = self._engines.get(config)
        if engine is None:
            engine = self._factory(config, self._http)
            self._engines[config] = engine
            if len(self._engines) > self._max:
                # Per-session overrides could otherwise grow this without bound; closed at shutdown.
                _, oldest = self._engines.popitem(last=False)
                self._retired.append(oldest)
        else:
            self._engines.move_to_end(config)
        return engine

    async def close(self) -> None:
        for engine in [*self._engines.values(), *self._retired]:
            await engine.close()
        self._engines.clear()
        self._retired.clear()
