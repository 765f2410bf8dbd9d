"""`mailer new DIR`: a minimal project that runs as written (settings.toml with comments, a
layout and two message templates, a small list, one sequence and one broadcast).

The files are package data under `project/`; settings.toml and the list carry a few `$names`
(the broadcast's send time, when each contact agreed) filled from the clock, so that the
project plans and delivers at once whatever the date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from mailer.errors import MailerError

# Package data cannot hold a dotfile reliably (setuptools' globs skip them): renamed on writing.
_RENAMED = {"gitignore": ".gitignore"}
_FILLED = ("settings.toml", "lists/newsletter.csv")
# How long ago each sample contact signed up.
_SIGNED_UP_DAYS_AGO = (3, 12, 40, 95)


@dataclass(frozen=True)
class Starter:
    """What `mailer new` wrote: the folder and its files, relative to it, in writing order."""

    root: Path
    files: list[str]


def starter_files() -> dict[str, str]:
    """The starter project as written to disk, before filling: relative path -> text."""
    found: dict[str, str] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
            if entry.is_dir():
                if entry.name != "__pycache__":
                    walk(entry, f"{prefix}{entry.name}/")
            else:
                found[prefix + _RENAMED.get(entry.name, entry.name)] = entry.read_text("utf-8")

    walk(files("mailer.starter") / "project", "")
    return found


def fill(text: str, root: Path, now: datetime) -> str:
    """A starter file's `$names` filled from the project's name and the clock."""
    moment = now.astimezone(UTC).replace(second=0, microsecond=0)
    values = {"name": root.resolve().name, "today": f"{moment:%Y-%m-%d}",
              "send_at": f"{moment:%Y-%m-%dT%H:%MZ}"}  # fmt: skip
    for number, days in enumerate(_SIGNED_UP_DAYS_AGO, start=1):
        values[f"signed_up_{number}"] = f"{moment - timedelta(days=days):%Y-%m-%dT%H:%M:%SZ}"
    return Template(text).substitute(values)


def write_starter(root: Path, now: datetime, *, force: bool = False) -> Starter:
    """Write the starter project into `root` (created when missing). MailerError, and nothing
    written, when any of its files exists already, unless `force` replaces them."""
    if root.exists() and not root.is_dir():
        raise MailerError(f"{root}: is a file, not a folder")
    texts = starter_files()
    existing = [name for name in texts if (root / name).exists()]
    if existing and not force:
        shown = " and ".join([", ".join(existing[:-1]), existing[-1]] if len(existing) > 1
                             else existing)  # fmt: skip
        raise MailerError(f"{root}: {shown} exist{'s' if len(existing) == 1 else ''} already; "
                          f"nothing was written (`mailer new {root} --force` replaces "
                          f"{'it' if len(existing) == 1 else 'them'})")  # fmt: skip
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fill(text, root, now) if name in _FILLED else text, encoding="utf-8")
    return Starter(root, list(texts))
