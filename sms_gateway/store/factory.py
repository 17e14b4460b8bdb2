from __future__ import annotations

import os

from sms_gateway.config.mask import mask_urls_in_text
from sms_gateway.store.base import Store

_SUPPORTED = "use memory://, sqlite:///file.db, redis://host:port/db"


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
    raise ValueError(f"unsupported store URL {url!r} ({_SUPPORTED})")


def store_url_problem(url: str) -> str | None:
    """Why `STORE_URL` cannot work (an unknown scheme, an option with a bad value, an option Redis does not know),
    without opening anything; None when it can. The URL in the reason has its password and secrets masked."""
    try:
        if url.startswith("sqlite:"):
            from sms_gateway.store.sqlite import sqlite_path

            sqlite_path(url)
        elif url.startswith(("redis:", "rediss:")):
            _check_redis_url(url)
        elif not url.startswith("memory:"):
            raise ValueError(f"unsupported store URL {url!r} ({_SUPPORTED})")
    except (ValueError, TypeError) as exc:
        return mask_urls_in_text(str(exc))
    return None


def existing_store_problem(url: str) -> str | None:
    """Why an operator's command (`dead-letters`) cannot read the store at `url` that a gateway wrote: a SQLite
    file that does not exist (opening it would create an empty one), or a memory store (no other process can
    see it); None when it may be opened. Checks `store_url_problem` first."""
    problem = store_url_problem(url)
    if problem is not None or url.startswith(("redis:", "rediss:")):
        return problem
    if url.startswith("memory:"):
        return "memory:// keeps nothing beyond its own process: point STORE_URL at the gateway's store"
    from sms_gateway.store.sqlite import sqlite_path

    path = sqlite_path(url)[0]
    if not os.path.isfile(path):
        return f"no SQLite database at {os.path.abspath(path)} (STORE_URL {mask_urls_in_text(url)})"
    return None


def _check_redis_url(url: str) -> None:
    """Our options (`prefix`, `socket_timeout`), then redis-py's reading of the rest: its pool parses the query
    options and building a connection object (no I/O) refuses an option it does not know."""
    from redis.asyncio import ConnectionPool

    from sms_gateway.store.redis import redis_options

    client_url = redis_options(url).url
    try:
        ConnectionPool.from_url(client_url).make_connection()  # type: ignore[no-untyped-call]
    except TypeError as exc:  # "__init__() got an unexpected keyword argument 'foo'"
        name = str(exc).rpartition("keyword argument ")[2] or str(exc)
        raise ValueError(f"unknown Redis URL option {name} in {url!r}") from exc
    except ValueError as exc:  # "Invalid value for 'max_connections' in connection URL."
        raise ValueError(f"{exc} ({url!r})") from exc
