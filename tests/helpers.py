"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailer.contacts.importer import ImportOptions, ImportSummary, import_contacts
from mailer.store.rollups import REFETCHES
from mailer.store.tables import event_rollups, events
from mailer.workspace import Workspace


def run_import(workspace: Workspace, path: Path, list_name: str, **options: Any) -> ImportSummary:
    spec = workspace.settings.contact_list(list_name)
    engine = workspace.engine
    return import_contacts(
        engine,
        path,
        ImportOptions(
            list_name=list_name,
            double_opt_in=workspace.double_opt_in,
            columns=spec.columns | options.pop("columns", {}),
            tags=tuple(spec.tags),
            attribute_types=workspace.settings.attributes,
            **options,
        ),
        workspace.key,
        workspace.clock,
    )


def count(workspace: Workspace, table: Any, *where: Any) -> int:
    with workspace.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def refetches(workspace: Workspace) -> int:
    """Pixels fetched again within a minute of the message's last open: counted, not stored
    (event_rollups, store/rollups.py)."""
    with workspace.engine.connect() as connection:
        total = connection.scalar(select(func.sum(event_rollups.c.events))
                                  .where(event_rollups.c.kind == REFETCHES))  # fmt: skip
    return int(total or 0)


def opens_recorded(workspace: Workspace) -> int:
    """Every open recorded, a person's or a machine's: stored, or counted as a refetch."""
    kinds = events.c.kind.in_(("open", "machine_open"))
    return count(workspace, events, kinds) + refetches(workspace)
