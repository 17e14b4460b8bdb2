"""How fast a sending number sends: as fast as the provider takes it.

Twilio, Sinch and TeleSign queue a sender's messages at its real throughput themselves, so by default the gateway
sets no per-number limit. When the provider says a number is sending too fast (its answer is `throttled`), the
number slows down: its allowed rate is cut (multiplicatively), nothing goes out before the provider's
`Retry-After`, and the rate then doubles every `DOUBLING_SECONDS` until it no longer limits anything. This `Pace`
is kept in the store, so every process sending from the number shares it.

`rateLimits` in the configuration is an optional hard cap per number type or number (a `SenderRate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sms_gateway.config.model import normalise_number

# North American toll-free area codes.
_TOLL_FREE = ("800", "833", "844", "855", "866", "877", "888")

# The adaptive pace (AIMD-like: a cut on throttling, a steady rise after it).
DECREASE = 0.5  # the rate is cut to this share of what it was when the provider throttled
FLOOR = 1.0  # messages per second: never cut below
DOUBLING_SECONDS = 2.0  # after the cut (and the provider's Retry-After), the allowed rate doubles this often
CEILING = 1000.0  # messages per second: a pace this fast limits nothing and is forgotten
MAX_HOLD_SECONDS = 60.0  # a longer Retry-After is taken as this


@dataclass(frozen=True, slots=True)
class SenderRate:
    """A configured hard cap: `per_second` on average, `burst` at once."""

    per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class Pace:
    """A sending number's allowed rate since the provider last throttled it: `rate` messages per second from
    `since` on (nothing before `hold_until`), doubling every DOUBLING_SECONDS after it."""

    rate: float
    cut_at: float  # when the rate was cut: a send that began before it was made at the old rate
    hold_until: float  # the provider's Retry-After

    @property
    def since(self) -> float:
        return max(self.cut_at, self.hold_until)

    def rate_at(self, now: float) -> float:
        if now <= self.since:
            return self.rate
        growth: float = 2.0 ** min((now - self.since) / DOUBLING_SECONDS, 64.0)  # 2**64: far past CEILING
        return self.rate * growth

    def live(self, now: float) -> bool:
        """Whether it still limits anything: during the hold, or while the rate is below CEILING."""
        return now < self.since or self.rate_at(now) < CEILING


def slowed(pace: Pace | None, now: float, paced_at: float, retry_after: float | None, start_rate: float) -> Pace:
    """The pace after the provider throttled a send whose slot was taken at `paced_at`.

    A live pace is cut from its current rate, unless the send's slot was taken before its last cut (the sends
    of a burst that were already out or waiting for their slot when the first was throttled went at the old
    rate: that cut answers them too); a number without one is cut from `start_rate`, what it was seen to
    achieve. `retry_after` holds back every send until it has passed.
    """
    if pace is not None and pace.live(now):
        if paced_at < pace.cut_at:
            return pace
        start_rate = pace.rate_at(now)
    hold = now + min(max(retry_after or 0.0, 0.0), MAX_HOLD_SECONDS)
    return Pace(max(FLOOR, start_rate * DECREASE), now, hold)


def reserve(
    tat: float | None, pace: Pace | None, cap: SenderRate | None, now: float, max_wait: float = math.inf
) -> tuple[float, float | None]:
    """One reservation of the generic cell rate algorithm at the slower of the cap and the live pace:
    (seconds to wait, the number's new theoretical arrival time, or None when nothing is to be stored).

    Without either there is nothing to wait for or store. A wait longer than `max_wait` reserves nothing: the
    caller comes back later and takes a slot then, at the rate then. Every back end stores the arrival time and
    the pace per number and runs this under its own atomicity (Redis: the same arithmetic in Lua).
    """
    per_second, burst = (cap.per_second, cap.burst) if cap is not None else (math.inf, 1)
    start = now
    if pace is not None and pace.live(now):
        rate = pace.rate_at(now)
        if rate < per_second:
            per_second, burst = rate, 1
        start = max(now, pace.hold_until)
    if per_second == math.inf:
        return 0.0, None
    interval = 1.0 / per_second
    base = max(tat if tat is not None else start, start)
    wait = max(base - interval * max(burst - 1, 0), start) - now
    if wait > max_wait:
        return wait, None
    return wait, base + interval


class AcceptedRate:
    """Messages a process saw the provider accept per second, per sending number, over about the last second:
    where a number that was never throttled is cut from when it is. Local and approximate by design (two
    one-second buckets): it only seeds the shared pace, which then adapts."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[int, int, int]] = {}  # key -> (second, count in it, count in the one before)

    def accepted(self, key: str) -> None:
        second = int(self._clock())
        last, count, before = self._buckets.get(key, (second, 0, 0))
        if second == last:
            self._buckets[key] = (second, count + 1, before)
        else:
            self._buckets[key] = (second, 1, count if second == last + 1 else 0)

    def per_second(self, key: str) -> float:
        now = self._clock()
        second = int(now)
        last, count, before = self._buckets.get(key, (second, 0, 0))
        if second == last:
            return count + before * (1.0 - (now - second))
        if second == last + 1:
            return count * (1.0 - (now - second))
        return 0.0


def sender_kind(number: str) -> str:
    digits = normalise_number(number)
    if len(digits) <= 8:
        return "short_code"
    if len(digits) == 11 and digits.startswith("1") and digits[1:4] in _TOLL_FREE:
        return "toll_free"
    return "long_code"


def sender_cap(number: str, caps: dict[str, SenderRate] | None = None) -> SenderRate | None:
    """The configured cap of a sending number: its own, else its kind's, else none."""
    if not caps:
        return None
    return caps.get(normalise_number(number)) or caps.get(sender_kind(number))


def rates_from_config(rates: dict[str, float]) -> dict[str, SenderRate]:
    """Config rates (per second) -> caps; a sender may burst as many messages as it sends per second."""
    return {key: SenderRate(rate, max(1, int(rate))) for key, rate in rates.items()}
