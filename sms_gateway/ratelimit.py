"""Per-sender throughput, as North American numbers are allowed to send (long code 1 segment/s, toll-free 3/s,
short code 100/s): bursts wait for their slot instead of being rejected by the provider."""

from __future__ import annotations

from dataclasses import dataclass

from sms_gateway.config.model import normalise_number

# North American toll-free area codes.
_TOLL_FREE = ("800", "833", "844", "855", "866", "877", "888")


@dataclass(frozen=True, slots=True)
class SenderRate:
    per_second: float
    burst: int


DEFAULT_RATES = {
    "long_code": SenderRate(1.0, 1),
    "toll_free": SenderRate(3.0, 3),
    "short_code": SenderRate(100.0, 100),
}


def sender_kind(number: str) -> str:
    digits = normalise_number(number)
    if len(digits) <= 8:
        return "short_code"
    if len(digits) == 11 and digits.startswith("1") and digits[1:4] in _TOLL_FREE:
        return "toll_free"
    return "long_code"


def sender_rate(number: str, overrides: dict[str, SenderRate] | None = None) -> SenderRate:
    """The rate of a sending number: its own override, else its kind's override, else the kind's default."""
    overrides = overrides or {}
    digits = normalise_number(number)
    kind = sender_kind(number)
    return overrides.get(digits) or overrides.get(kind) or DEFAULT_RATES[kind]


def rates_from_config(rates: dict[str, float]) -> dict[str, SenderRate]:
    """Config rates (per second) -> buckets; a sender may burst as many messages as it sends per second."""
    return {key: SenderRate(rate, max(1, int(rate))) for key, rate in rates.items()}
