"""The watch's debounce: a pure state machine, driven with explicit times."""

from __future__ import annotations

import pytest

from setup_dnat_to_ns.debounce import Debounce

D = Debounce(quiet=0.15, max_delay=0.6, retry=5.0)


def test_idle_waits_for_ever() -> None:
    assert D.timeout(0.0) is None and not D.due(1000.0)


def test_one_event_is_due_after_the_quiet_time() -> None:
    state = D.event(10.0)
    assert state.timeout(10.0) == pytest.approx(0.15)
    assert not state.due(10.149)
    assert state.due(10.151)


def test_a_burst_is_coalesced_into_one_pass() -> None:
    state = D.event(10.0).event(10.1).event(10.2)
    assert state.due_at() == pytest.approx(10.35)
    state = state.done(10.35, ok=True)
    assert state.timeout(10.35) is None and not state.due(99.0)


def test_a_steady_stream_cannot_postpone_the_pass_beyond_max_delay() -> None:
    state = D
    now = 10.0
    while now < 11.0:  # an event every 0.1 s, each within the quiet time
        state = state.event(now)
        if state.due(now):
            break
        now = round(now + 0.1, 3)
    assert state.due_at() == pytest.approx(10.6)
    assert state.due(10.61)


def test_timeout_never_negative() -> None:
    assert D.event(10.0).timeout(50.0) == 0.0


def test_a_failed_pass_is_retried() -> None:
    state = D.event(10.0).done(10.15, ok=False)
    assert state.due_at() == pytest.approx(15.15)
    assert not state.due(15.0) and state.due(15.16)
    assert state.done(15.15, ok=True).due_at() is None


def test_an_event_replaces_a_pending_retry_with_the_quiet_time() -> None:
    state = D.event(10.0).done(10.15, ok=False).event(11.0)
    assert state.due_at() == pytest.approx(11.15)


def test_events_after_a_pass_start_a_new_burst() -> None:
    state = D.event(10.0).done(10.15, ok=True).event(20.0)
    assert state.first == 20.0 and state.due_at() == pytest.approx(20.15)
