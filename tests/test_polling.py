"""The poll schedule (polling.PollClock), pure: answers in, the next poll time out.

No server and no sleeping: each test feeds a sequence of answers, with and without the
API's timestamps, at chosen instants of a fake clock, and checks when the next results
request would leave.
"""

from __future__ import annotations

import itertools

import pytest

from batchgen.polling import PollClock, api_duration

VIDEO = ("video", "720p", 5, None)
VIDEO_4K = ("video", "4k", 5, None)
AUDIO = ("add_audio", "720p", 5)
T0 = 1_000.0  # any origin: the clock is the runner's monotonic time
STAMP = 1_754_377_191_100  # ms on the API's clock, unrelated to ours


def stamps(seconds: float) -> tuple[int, int]:
    """(create_time, update_time) of a record that took `seconds` at the API."""
    return STAMP, STAMP + round(seconds * 1000)


def learn(clock: PollClock, kind: tuple, seconds: float, *, seen_at: float,
          timestamps: bool = True, task_id: str = "old") -> None:
    """One task of `kind` that took `seconds`, first answered (done) at age `seen_at`."""
    clock.track(task_id, kind, T0 - 1000)
    clock.finished(task_id, T0 - 1000 + seen_at, *(stamps(seconds) if timestamps else ()))


def wait(clock: PollClock, now: float) -> float:
    when = clock.next_round(now)
    assert when is not None
    return when - now


def test_nothing_known_probes_early_then_the_age_grows_by_half_up_to_poll_interval():
    clock = PollClock(5.0)
    clock.track("a", VIDEO, T0)
    waits = []
    now = T0
    for _ in range(16):
        w = wait(clock, now)
        waits.append(round(w, 4))
        now += w
        clock.not_yet("a", now)
    assert waits[:5] == [0.25, 0.25, 0.25, 0.375, 0.5625]  # probe, then half the age
    assert all(b >= a for a, b in itertools.pairwise(waits))
    assert waits[-1] == 5.0 and max(waits) == 5.0  # poll_interval bounds the wait


def test_probe_stays_well_below_a_short_poll_interval():
    clock = PollClock(0.4)
    clock.track("a", VIDEO, T0)
    assert wait(clock, T0) == pytest.approx(0.1)


def test_api_timestamps_time_the_next_task_not_our_late_poll():
    # the first answer came 5 s after submission, but the API says the task took 1 s
    clock = PollClock(5.0)
    learn(clock, VIDEO, 1.0, seen_at=5.0)
    clock.track("b", VIDEO, T0)
    w = wait(clock, T0)
    assert 1.0 < w <= 1.07  # just after the task's expected end (6 % of it)


def test_a_late_poll_without_timestamps_is_an_upper_bound_not_a_duration():
    # same late answer, no timestamps: the task took at most 5 s; the next one is asked
    # well before 5 s, and its "not yet" answers narrow the figure down
    clock = PollClock(5.0)
    learn(clock, VIDEO, 1.0, seen_at=5.0, timestamps=False)
    clock.track("b", VIDEO, T0)
    first = wait(clock, T0)
    assert first < 2.0
    clock.finished("b", T0 + first)  # done by then: a far tighter upper bound
    clock.track("c", VIDEO, T0 + 10)
    assert wait(clock, T0 + 10) < first


def test_not_yet_is_a_lower_bound_that_is_kept_when_the_task_is_done():
    # asked at 28 s ("not yet") and at 40 s (done), no timestamps: it took 28 to 40 s
    clock = PollClock(5.0)
    clock.track("a", VIDEO, T0)
    clock.not_yet("a", T0 + 28)
    assert clock.finished("a", T0 + 40) == (28, 40)
    clock.track("b", VIDEO, T0 + 100)
    w = wait(clock, T0 + 100)
    assert 28 < w < 40  # the next one is asked inside the interval, not at its end


def test_timestamps_contradicting_our_own_answers_are_not_trusted():
    clock = PollClock(5.0)
    clock.track("a", VIDEO, T0)
    clock.not_yet("a", T0 + 20)
    # the API claims 10 s, but it told us "not yet" at 20 s: the interval is used
    assert clock.finished("a", T0 + 25, *stamps(10.0)) == (20, 25)
    clock.track("b", VIDEO, T0)
    # claims 100 s for a task we saw done at 25 s: an hour-long figure would stall polls
    assert clock.finished("b", T0 + 25, *stamps(100.0)) == (0, 25)
    clock.track("c", VIDEO, T0)
    # create latency: the API's clock started a little before ours
    assert clock.finished("c", T0 + 25, *stamps(25.3)) == (25.3, 25.3)


@pytest.mark.parametrize("created, updated", [
    ("1754377191100", "1754377192100"), (True, 2), (None, 5), (5000, 4000), (5000, 5000),
    (float("nan"), 1.0), (0, float("inf")),
])
def test_unusable_timestamps_give_no_duration(created, updated):
    assert api_duration(created, updated) is None


def test_a_resumed_task_learns_only_from_timestamps():
    clock = PollClock(5.0)
    clock.track("a", VIDEO, T0, timed=False)  # found in flight: its age is unknown
    assert wait(clock, T0) == 0.25
    assert clock.finished("a", T0 + 3) is None  # no stamps: "done within 3 s" means nothing
    assert clock.typical(VIDEO) is None
    clock.track("b", VIDEO, T0, timed=False)
    assert clock.finished("b", T0 + 3, *stamps(12.0)) == (12, 12)
    assert clock.typical(VIDEO) == 12


def test_kinds_are_learnt_apart_and_a_new_kind_falls_back_to_its_step_pool():
    clock = PollClock(5.0)
    for i in range(3):
        learn(clock, VIDEO, 30.0, seen_at=30.5, task_id=f"v{i}")
    clock.track("4k", VIDEO_4K, T0)
    clock.track("audio", AUDIO, T0)
    # the 4k task is timed by the pooled videos but keeps probing until 4k is known; the
    # add-audio step is another pool: nothing known, so it is probed from the start
    assert clock.typical(VIDEO_4K) == 30 and clock.typical(AUDIO) is None
    assert wait(clock, T0) == 0.25
    order, due = clock.order(T0 + 0.25)
    assert set(order) == {"4k", "audio"} and due == 2
    learn(clock, VIDEO_4K, 50.0, seen_at=50.2, task_id="k")
    assert clock.typical(VIDEO_4K) == 50 and clock.typical(VIDEO) == 30


def test_a_wave_of_equal_tasks_is_collected_by_one_request():
    clock = PollClock(30.0)
    for i in range(3):
        learn(clock, VIDEO, 30.0, seen_at=31, task_id=f"old{i}")
    for i in range(20):  # a wave sent over 50 ms
        clock.track(f"t{i}", VIDEO, T0 + i * 0.0025)
    w = wait(clock, T0)
    # not at the first one's end (one task is nothing to wake up for), not at 60 s (the
    # longest waits); a little after the last one's end
    assert 30.05 <= w <= 30.2
    order, due = clock.order(T0 + w)
    assert due == 20 and len(order) == 20


def test_overdue_task_is_asked_after_a_tenth_of_its_age_up_to_poll_interval():
    clock = PollClock(5.0)
    for i in range(3):
        learn(clock, VIDEO, 10.0, seen_at=10.1, task_id=f"old{i}")
    clock.track("slow", VIDEO, T0)
    clock.not_yet("slow", T0 + 12)  # longer than any task of its kind
    assert wait(clock, T0 + 12) == pytest.approx(1.2)
    clock.not_yet("slow", T0 + 80)
    assert wait(clock, T0 + 80) == 5.0


def test_varied_durations_are_polled_about_as_often_as_tasks_finish():
    # 20 tasks in flight, durations known to spread evenly over 4..12 s: a task finishes
    # about every 0.4 s, and a poll every ~0.5 s finds one or two (neither 20 ms, nor 4 s)
    clock = PollClock(5.0)
    for i in range(81):
        learn(clock, VIDEO, 4 + i * 0.1, seen_at=12.5, task_id=f"old{i}")
    for i in range(20):  # a steady state: ages spread over 0..8 s
        clock.track(f"t{i}", VIDEO, T0 - i * 0.4)
        clock.not_yet(f"t{i}", T0)
    assert 0.2 < wait(clock, T0) < 1.2


def test_a_task_without_an_answer_waits_before_being_asked_again():
    clock = PollClock(5.0)
    learn(clock, VIDEO, 1.0, seen_at=1.0)
    clock.track("a", VIDEO, T0)
    clock.unanswered("a", T0 + 2)  # not listed yet: no busy loop on it
    assert wait(clock, T0 + 2) == 1.0  # half its age
    clock.defer("a", T0 + 40)  # the API was unreachable
    assert wait(clock, T0 + 2) == 38.0
    assert clock.order(T0 + 39) == (["a"], 0)
    assert clock.order(T0 + 40) == (["a"], 1)


def test_forgotten_and_finished_tasks_leave_the_schedule():
    clock = PollClock(5.0)
    clock.track("a", VIDEO, T0)
    clock.track("b", VIDEO, T0)
    clock.forget("a")
    clock.finished("b", T0 + 1)
    assert len(clock) == 0 and clock.next_round(T0) is None


def test_with_nothing_left_to_send_the_last_tasks_are_watched_more_closely():
    # 2 of 20 slots still busy: a late answer now delays the end of the run itself
    clock = PollClock(5.0, slots=20)
    for i in range(81):
        learn(clock, VIDEO, 4 + i * 0.1, seen_at=12.5, task_id=f"old{i}")
    clock.track("a", VIDEO, T0)
    clock.track("b", VIDEO, T0 - 3)
    clock.not_yet("a", T0 + 6)
    clock.not_yet("b", T0 + 6)
    refilling = wait(clock, T0 + 6)
    draining = clock.next_round(T0 + 6, draining=True) - (T0 + 6)
    assert draining < refilling / 2
    # with every slot busy, draining changes nothing: each task weighs as before
    clock = PollClock(5.0, slots=2)
    for i in range(81):
        learn(clock, VIDEO, 4 + i * 0.1, seen_at=12.5, task_id=f"old{i}")
    clock.track("x", VIDEO, T0)
    clock.track("y", VIDEO, T0 - 3)
    clock.not_yet("x", T0 + 6)
    clock.not_yet("y", T0 + 6)
    assert clock.next_round(T0 + 6, draining=True) == clock.next_round(T0 + 6)
