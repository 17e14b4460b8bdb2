"""Fixtures every test module may use."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session for the test's own requests."""
    async with aiohttp.ClientSession() as session:
        yield session
