"""How many SQLite store operations a turn costs: turns through the real webhook (the tests' in-process gateway
with its fake Watson and Twilio), one sender, each turn waited for, every `SQLiteStore._run` counted by the
method that called it.

    python -m benchmarks.store_ops [--turns 20]

Each operation is a round trip to the store thread and, when it writes, a commit of its own at low load.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

from sms_gateway.logs import configure_logging
from sms_gateway.store.sqlite import SQLiteStore


async def count(turns: int) -> collections.Counter[str]:
    from tests.harness import running_gateway  # the repository's test harness: run from the checkout

    counts: collections.Counter[str] = collections.Counter()
    original = SQLiteStore._run

    async def counting(self: SQLiteStore, fn: Any, **kw: Any) -> Any:
        counts[sys._getframe(1).f_code.co_name] += 1
        return await original(self, fn, **kw)

    SQLiteStore._run = counting  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with running_gateway(Path(tmp), sweep_interval=3600) as gw:
                await gw.sms("warm up")
                await gw.wait_sent(1)
                await gw.settle()
                counts.clear()
                for n in range(turns):
                    await gw.sms(f"turn {n}")
                    await gw.wait_sent(n + 2)
                await gw.settle()
    finally:
        SQLiteStore._run = original  # type: ignore[method-assign]
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=_positive, default=20, help="turns to count over (default 20)")
    turns = parser.parse_args().turns
    configure_logging("error", stream=sys.stderr)
    counts = asyncio.run(count(turns))
    for name, calls in counts.most_common():
        print(f"{calls / turns:6.2f}  {name}")
    print(f"{sum(counts.values()) / turns:6.2f}  per turn in all")


if __name__ == "__main__":
    main()
