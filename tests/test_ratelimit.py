"""The pace's arithmetic that the stores do not show: what a process saw accepted, which seeds a first cut."""

from __future__ import annotations

from sms_gateway.ratelimit import FLOOR, AcceptedRate, Pace, slowed


def test_accepted_rate_is_about_the_last_second_per_number() -> None:
    now = [100.2]
    rate = AcceptedRate(clock=lambda: now[0])
    for _ in range(10):
        rate.accepted("+1500")
    assert (rate.per_second("+1500"), rate.per_second("+1666")) == (10, 0.0)
    now[0] = 101.5  # the second before, half gone
    assert rate.per_second("+1500") == 5.0
    rate.accepted("+1500")
    assert rate.per_second("+1500") == 6.0
    now[0] = 103.0
    assert rate.per_second("+1500") == 0.0


def test_a_first_cut_halves_what_was_achieved_but_not_below_the_floor() -> None:
    assert slowed(None, now=10.0, paced_at=9.0, retry_after=2.0, start_rate=30.0) == Pace(15.0, 10.0, 12.0)
    assert slowed(None, now=10.0, paced_at=9.0, retry_after=None, start_rate=0.0) == Pace(FLOOR, 10.0, 10.0)
    assert slowed(None, now=10.0, paced_at=9.0, retry_after=3600.0, start_rate=4.0).hold_until == 70.0, (
        "a Retry-After of an hour holds for a minute"
    )
