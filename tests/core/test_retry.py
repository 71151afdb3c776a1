"""The one back-off every retry loop uses: doubling, capped, jittered, resettable."""

from __future__ import annotations

import threading

import pytest

from tunewire.core.base import retry


def test_delays_double_up_to_the_cap_within_the_upper_half_of_each_step() -> None:
    low = retry.Backoff(0.2, 1.0, draw=lambda: 0.0)
    high = retry.Backoff(0.2, 1.0, draw=lambda: 1.0)
    assert [round(low.next_s(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert [round(high.next_s(), 3) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_replicas_that_fail_together_wait_different_times() -> None:
    delays = {retry.Backoff(1.0, 8.0).next_s() for _ in range(20)}
    assert len(delays) > 1
    assert all(0.5 <= d <= 1.0 for d in delays)


def test_reset_starts_from_the_first_delay_again() -> None:
    backoff = retry.Backoff(0.1, 10.0, draw=lambda: 1.0)
    for _ in range(4):
        backoff.next_s()
    assert backoff.ceiling_s == pytest.approx(1.6)
    backoff.reset()
    assert backoff.next_s() == pytest.approx(0.1)


def test_sleep_ends_early_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    assert retry.Backoff(30.0, 60.0).sleep(stop) is True
    assert retry.Backoff(0.0, 0.0).sleep(threading.Event()) is False
    assert retry.Backoff(0.0, 0.0).sleep() is False


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="first_s <= cap_s"):
        retry.Backoff(2.0, 1.0)
