"""Fixtures every test module may use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.redis_server import RedisServer, redis_available


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for the test's own requests."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def redis_server_for_module() -> Iterator[RedisServer]:
    """A throw-away redis-server shared by a module's tests (each flushes it first); skipped without one."""
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server
