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
    raise ValueError(f"unsupported store URL {url!r} (use memory://, sqlite:///file.db)")
