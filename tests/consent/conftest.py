"""Fixtures borrowed from the tracking tests: a delivered message and a running endpoint."""

from tests.tracking.conftest import sent, serve  # noqa: F401
