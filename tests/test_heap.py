"""After a burst has been worked off, the memory it took goes back to the system (glibc's malloc_trim)."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path

import pytest

from sms_gateway import heap


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_freed_in_the_middle_of_the_heap_is_given_back() -> None:
    trim = heap.malloc_trim()
    if trim is None or not Path("/proc/self/status").exists():
        pytest.skip("no malloc_trim in this C library, or no /proc")
    # Objects of over 512 bytes live in the C heap. One block in a hundred stays (as the long-lived records a
    # store keeps while a backlog drains): free() alone cannot shrink a heap whose top is still in use.
    kept: list[bytes] = []
    burst: list[bytes] = []
    for i in range(20_000):
        (kept if i % 100 == 99 else burst).append(b"m" * 2048 + i.to_bytes(4, "big"))
    burst_bytes = sum(len(block) for block in burst)
    before = rss_bytes()
    del burst
    gc.collect()
    untrimmed = rss_bytes()
    trim()
    after = rss_bytes()
    assert len(kept) == 200
    assert untrimmed - after > burst_bytes // 2, (before, untrimmed, after, burst_bytes)


async def test_trim_forever_trims_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread_calls: list[bool] = []
    main = threading.get_ident()
    monkeypatch.setattr(heap, "malloc_trim", lambda: lambda: loop_thread_calls.append(threading.get_ident() == main))
    task = asyncio.create_task(heap.trim_forever(interval=0.01))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(loop_thread_calls) >= 3 and not any(loop_thread_calls), "trimmed again and again, in a worker thread"


async def test_trim_forever_does_nothing_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "malloc_trim", lambda: None)
    await asyncio.wait_for(heap.trim_forever(interval=0.01), timeout=1)  # returns at once instead of looping
