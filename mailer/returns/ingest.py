"""`mailer bounces ingest`: returned mail read from files, mbox files and Maildirs, each
message classified, matched to the message we sent and acted on in its own transaction."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.returns.classify import classify
from mailer.returns.matching import match
from mailer.returns.report import Returned
from mailer.returns.sources import returned_messages
from mailer.workspace import Workspace

DRY_RUN = "none (dry run)"


@dataclass(frozen=True)
class Ingested:
    """One message read: where from, what it says, which of our messages, what was done."""

    file: str
    returned: Returned
    outbox_id: int | None
    action_taken: str

    def as_json(self) -> dict[str, Any]:
        """The issue's keys, in its order."""
        r = self.returned
        return {
            "file": self.file,
            "classification": r.classification,
            "recipient": r.recipient,
            "status_code": r.status_code,
            "verp_token": r.verp_token,
            "original_message_id": r.original_message_id,
            "feedback_type": r.feedback_type,
            "action_taken": self.action_taken,
        }


def ingest(
    workspace: Workspace, paths: Iterable[Path], dry_run: bool = False
) -> Iterator[Ingested]:
    """Each message under `paths`, as it is processed (a crash half way keeps what was done:
    one transaction per message, and reading the same report again changes nothing)."""
    keys = workspace.renderer.keys
    for name, raw in returned_messages(paths):
        returned = classify(raw)
        now = workspace.clock.now()
        if dry_run:
            with workspace.engine.connect() as connection:
                yield Ingested(name, returned, match(connection, keys, returned, now), DRY_RUN)
            continue
        yield process(workspace, raw, name, now, returned=returned)


def process(
    workspace: Workspace,
    raw: bytes,
    name: str,
    now: datetime,
    source: str = "bounces ingest",
    returned: Returned | None = None,
) -> Ingested:
    """One returned message classified (unless `returned` already is), matched and acted on in
    one transaction; `name` (its file) and `source` go into the evidence."""
    returned = returned if returned is not None else classify(raw)
    with workspace.engine.begin() as connection:
        message = match(connection, workspace.renderer.keys, returned, now)
        evidence = {"digest": hashlib.sha256(raw).hexdigest(), "file": name, "source": source}
        action = _apply_returned(connection, workspace, returned, message, evidence, now)
    return Ingested(name, returned, message, action)


def _apply_returned(*arguments: Any) -> str:
    """mailer.returns.effects.apply_returned, looked up when called: reading and classifying
    work (and are tested) without the effects module."""
    try:
        effects = importlib.import_module("mailer.returns.effects")
    except ImportError:
        return "none (effects not installed)"
    return str(effects.apply_returned(*arguments))
