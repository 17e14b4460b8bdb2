from __future__ import annotations

from sms_gateway.store.base import Store


def create_store(url: str) -> Store:
    """Choose the back end from `STORE_URL` alone."""
    if url.startswith("memory:"):
        from sms_gateway.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:"):
        from sms_gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("redis:", "rediss:")):
        from sms_gateway.store.redis import RedisStore

        return RedisStore(url)
    raise ValueError(f"unsupported store URL {url!r} (use memory://, sqlite:///file.db, redis://host:port/db)")
