"""`mailer new DIR`: a minimal project that runs as written (settings.toml with comments, a
layout and two message templates, a small list, one sequence and one broadcast).

The files are package data under `project/`; settings.toml and the list carry a few `$names`
(the broadcast's send time, when each contact agreed) filled from the clock, so that the
project plans and delivers at once whatever the date.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from mailer.contacts.addresses import InvalidAddress, normalise_address
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


@dataclass(frozen=True)
class Sender:
    """Who the starter's mail is from ([sender]; the DKIM domain and the reply address are the
    email's domain). The defaults are placeholders to replace before sending for real."""

    name: str = "Example Shop"
    email: str = "news@example.com"
    postal_address: str = "Example Shop Ltd, 1 Example Street, Springfield 12345, Country"

    def checked(self) -> Sender:
        """The sender with its address normalised; MailerError naming the option at fault."""
        for option, value in (("--name", self.name), ("--address", self.postal_address)):
            if not value.strip() or any(c in value for c in "\r\n\x00"):
                raise MailerError(f"{option}: one line of text, please (got {value!r})")
        try:
            email = normalise_address(self.email)
        except InvalidAddress as error:
            raise MailerError(f"--email: {error}") from None
        return Sender(self.name.strip(), email, self.postal_address.strip())


def fill(text: str, root: Path, now: datetime, sender: Sender = Sender()) -> str:
    """A starter file's `$names` filled from the project's name, the sender and the clock."""
    moment = now.astimezone(UTC).replace(second=0, microsecond=0)
    values = {"name": root.resolve().name, "today": f"{moment:%Y-%m-%d}",
              "send_at": f"{moment:%Y-%m-%dT%H:%MZ}",
              "sender_name": _toml(sender.name), "sender_email": _toml(sender.email),
              "postal_address": _toml(sender.postal_address),
              "domain": _toml(sender.email.rpartition("@")[2])}  # fmt: skip
    for number, days in enumerate(_SIGNED_UP_DAYS_AGO, start=1):
        values[f"signed_up_{number}"] = f"{moment - timedelta(days=days):%Y-%m-%dT%H:%M:%SZ}"
    return Template(text).substitute(values)


def _toml(text: str) -> str:
    """`text` inside a TOML basic string ("..."): its escapes are JSON's."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def write_starter(root: Path, now: datetime, *, force: bool = False,
                  sender: Sender = Sender()) -> Starter:  # fmt: skip
    """Write the starter project into `root` (created when missing). MailerError, and nothing
    written, when any of its files exists already, unless `force` replaces them."""
    sender = sender.checked()
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
        path.write_text(fill(text, root, now, sender) if name in _FILLED else text,
                        encoding="utf-8")  # fmt: skip
    return Starter(root, list(texts))
