"""Adaptive polling (polling.PollClock): pure arithmetic over observed durations."""

from __future__ import annotations

import itertools

from batchgen.polling import PollClock


def test_without_history_polls_at_the_base_and_backs_off_to_the_cap():
    clock = PollClock(base=2.0, cap=30.0)
    delays = [clock.next_delay(False, age=0, polls=n) for n in range(12)]
    assert delays[0] == 2.0
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[-1] == 30.0


def test_with_history_stays_quiet_until_tasks_are_due_then_polls_briskly():
    clock = PollClock(base=5.0)
    for d in (30.0, 31.0, 29.5, 30.5):
        clock.observe(False, d)
    first = clock.next_delay(False, age=0.0, polls=0)
    assert 25 <= first <= 27.5  # wait for ~90% of the typical duration
    near = clock.next_delay(False, age=27.5, polls=1)
    assert near <= 3.0  # then about a tenth of it
    audio = clock.next_delay(True, age=0.0, polls=0)
    assert audio == 5.0  # add-audio tasks are learned separately


def test_short_tasks_get_short_polls():
    clock = PollClock(base=5.0)
    for d in (1.0, 0.98):
        clock.observe(False, d)
    assert clock.next_delay(False, age=0.95, polls=3) <= 0.1
