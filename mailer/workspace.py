"""A workspace: the settings, the database they name, the secret key and the clock, opened
together. The CLI makes one per command; tests make one over a temporary folder."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from mailer.clock import Clock, SystemClock
from mailer.config import Settings
from mailer.contacts.lists import sync_lists
from mailer.store.engine import open_database


class Workspace:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.list_ids: dict[str, int] = {}

    @cached_property
    def engine(self) -> Engine:
        """The database, migrated to the newest schema, with the lists of settings in it."""
        engine = open_database(self.settings.resolved_database_url())
        with engine.begin() as connection:
            self.list_ids = sync_lists(
                connection,
                {
                    name: (spec.title, spec.double_opt_in)
                    for name, spec in self.settings.lists.items()
                },
            )
        return engine

    @cached_property
    def key(self) -> bytes:
        return self.settings.secret()

    @property
    def double_opt_in(self) -> dict[str, bool]:
        return {name: spec.double_opt_in for name, spec in self.settings.lists.items()}

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def create_secret_key(settings: Settings) -> Path | None:
    """Write a new random key to `secret_key_file` when no key is set anywhere; return its path.

    The key must never change for the life of the database (it hashes suppressed addresses),
    so an existing file is never overwritten.
    """
    if settings.secret_key is not None or settings.secret_key_file is None:
        return None
    path = settings.path(settings.secret_key_file)
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(48) + "\n")
    return path
