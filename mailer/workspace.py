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
from mailer.consent.ledger_key import bind as bind_ledger_key
from mailer.contacts.lists import sync_lists
from mailer.render.dkim import generate_key, load_key
from mailer.render.message import MessageRenderer
from mailer.store.engine import open_database


class Workspace:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.list_ids: dict[str, int] = {}

    @cached_property
    def engine(self) -> Engine:
        """The database, migrated to the newest schema, with the lists of settings in it."""
        pool = self.settings.database
        engine = open_database(self.settings.resolved_database_url(), pool_size=pool.pool_size,
                               max_overflow=pool.max_overflow,
                               pool_timeout=pool.pool_timeout.total_seconds())  # fmt: skip
        bind_ledger_key(engine, lambda: self.key)
        with engine.begin() as connection:
            self.list_ids = sync_lists(
                connection,
                {
                    name: (spec.title, spec.double_opt_in)
                    for name, spec in self.settings.lists.items()
                },
                self.clock.now(),
            )
        return engine

    @cached_property
    def key(self) -> bytes:
        return self.settings.secret()

    @property
    def double_opt_in(self) -> dict[str, bool]:
        return {name: spec.double_opt_in for name, spec in self.settings.lists.items()}

    @cached_property
    def renderer(self) -> MessageRenderer:
        """The message renderer, made once: templates compiled, DKIM key parsed, here."""
        dkim = self.settings.dkim
        key = None
        if dkim is not None:
            key = load_key(self.settings.path(dkim.key_file), dkim.domain, dkim.selector,
                           dkim.algorithm)  # fmt: skip
        return MessageRenderer(self.settings, self.key, self.clock, key)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def create_dkim_key(settings: Settings) -> tuple[Path, str] | None:
    """Write a new DKIM private key when settings name one that does not exist yet; return
    its path and the DNS TXT record to publish (at `<selector>._domainkey.<domain>`)."""
    dkim = settings.dkim
    if dkim is None or settings.path(dkim.key_file).exists():
        return None
    private, record = generate_key(dkim.algorithm)
    path = settings.path(dkim.key_file)
    _write_private(path, private)
    return path, record


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)


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
    _write_private(path, (secrets.token_urlsafe(48) + "\n").encode())
    return path
