"""The injected clock: frozen in tests, started at MAILER_NOW or --now for commands and daemons."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from mailer.clock import StartedClock, SystemClock, clock_from_environment
from mailer.errors import MailerError


def test_a_started_clock_begins_at_its_moment_and_runs_on() -> None:
    start = datetime(2031, 2, 28, 23, 59, 59, tzinfo=UTC)
    clock = StartedClock(start)
    first = clock.now()
    assert start <= first < start + timedelta(seconds=1)
    time.sleep(0.01)  # the one wait here: this clock is meant to follow real time
    assert clock.now() > first


def test_mailer_now_starts_the_clock_there_and_an_unset_one_means_the_system_clock() -> None:
    clock = clock_from_environment({"MAILER_NOW": "2031-05-04T10:00Z"})
    assert isinstance(clock, StartedClock)
    assert clock.now() - datetime(2031, 5, 4, 10, tzinfo=UTC) < timedelta(seconds=5)
    naive = clock_from_environment({"MAILER_NOW": "2031-05-04 10:00"})
    assert naive.now().tzinfo is not None  # no offset given: UTC
    assert isinstance(clock_from_environment({"MAILER_NOW": " "}), SystemClock)
    assert isinstance(clock_from_environment({}), SystemClock)


def test_a_mailer_now_that_is_not_a_time_is_one_clear_error() -> None:
    with pytest.raises(MailerError, match="MAILER_NOW='tomorrow' is not an ISO time"):
        clock_from_environment({"MAILER_NOW": "tomorrow"})
