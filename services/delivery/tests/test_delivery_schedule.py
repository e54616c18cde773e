from __future__ import annotations

import pytest

from postmesh.delivery.queue import next_delay
from postmesh.delivery.settings import DeliverySettings, parse_duration, parse_schedule


def test_durations_use_postfix_units() -> None:
    assert [parse_duration(d) for d in ("90", "90s", "5m", "4h", "5d", "1w")] == [
        90, 90, 300, 14400, 432000, 604800,
    ]  # fmt: skip
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_schedule_steps_and_the_last_one_repeats() -> None:
    steps = parse_schedule("1m,5m,15m,1h,4h")
    assert [next_delay(steps, n) for n in range(1, 9)] == [
        60, 300, 900, 3600, 14400, 14400, 14400, 14400,
    ]  # fmt: skip
    assert next_delay([1.0], 0) == 1.0


def test_defaults_and_bad_values() -> None:
    s = DeliverySettings()
    assert s.queue_lifetime_seconds == 5 * 86400
    assert s.retry_steps == [60, 300, 900, 3600, 14400]
    with pytest.raises(ValueError):
        DeliverySettings(retry_schedule="0s")
    with pytest.raises(ValueError):
        DeliverySettings(retry_schedule="")
    with pytest.raises(ValueError):
        DeliverySettings(queue_lifetime="forever")
