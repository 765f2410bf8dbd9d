"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mailer.contacts.importer import ImportOptions, ImportSummary, import_contacts
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
