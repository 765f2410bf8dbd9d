"""Where returned mail is read from: one message file (.eml), an mbox file, or a Maildir (or
a plain folder of message files). One message in memory at a time, whatever the size."""

from __future__ import annotations

import mailbox
from collections.abc import Iterable, Iterator
from pathlib import Path

from mailer.errors import MailerError


def returned_messages(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of every message under `paths`, in order; the name says where it came
    from (`bounces.mbox#3`, `Maildir:1763892131.M1P2.host`)."""
    for path in paths:
        if path.is_dir():
            yield from _folder(path)
        elif path.is_file():
            yield from _mbox(path) if _is_mbox(path) else [(str(path), path.read_bytes())]
        else:
            raise MailerError(f"{path}: no such file or folder")


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(5) == b"From "  # the mbox separator line; a message starts with headers


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for number, key in enumerate(box.iterkeys(), start=1):
            yield f"{path}#{number}", box.get_bytes(key)
    finally:
        box.close()


def _folder(path: Path) -> Iterator[tuple[str, bytes]]:
    if all((path / name).is_dir() for name in ("cur", "new", "tmp")):
        box = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(box.iterkeys()):
            yield f"{path}:{key}", box.get_bytes(key)
        return
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        yield from returned_messages([file])
