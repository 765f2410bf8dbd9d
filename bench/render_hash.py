"""One hash over the wire bytes of every message of the example project, to show that a change
to rendering leaves every byte as it was: run it on a checkout before the change and on one
after, with the same DKIM key file, and compare the two lines.

Each step and variant of every campaign in settings.toml goes to nine contacts (non-ASCII
names, CR/LF, tabs and encoded words in names, long names, international addresses, four
languages, time zones), four times over, through the render processes' own function
(delivery/rendering.render_chunk): the wire bytes, the envelope and the links are hashed.

    .venv/bin/python bench/render_hash.py --key /tmp/dkim.key   # the key is written if missing
    PYTHONPATH=/tmp/before .venv/bin/python /tmp/before/bench/render_hash.py --key /tmp/dkim.key
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from render_pool_bench import project

from mailer.config import Settings
from mailer.contacts.model import Contact
from mailer.delivery import rendering
from mailer.render.dkim import generate_key

NOW = datetime(2026, 11, 17, 11, 2, tzinfo=UTC)
ROUNDS = 4
PEOPLE = [
    ("Sarah", "Mitchell", "en"), ("Giulia", "Rossi", "it"), ("Jürgen", "Weiß", "de"),
    ("Amélie", "Lefèvre", "fr"), (None, None, None),
    ("Ana\r\nBcc: x@example.com", "O'Brien & <Sons>", "en"), ("Tab\tbed", "  spaced  ", "it"),
    ("=?utf-8?q?E=0D=0AX?=", "Zoë 🎉", "fr"), ("Jürgen " * 20, "Weiß" * 10, "de"),
]  # fmt: skip


def every_job(settings: Settings) -> list[rendering.RenderJob]:
    jobs: list[rendering.RenderJob] = []
    for _ in range(ROUNDS):
        for name, campaign in settings.campaigns.items():
            for step in campaign.messages():
                for variant in [None, *step.variants]:
                    for index, (first, last, locale) in enumerate(PEOPLE):
                        jobs.append(job(len(jobs) + 1, index, name, step.name, variant,
                                        first, last, locale))  # fmt: skip
    return jobs


def job(number: int, index: int, campaign: str, step: str, variant: str | None,
        first: str | None, last: str | None,
        locale: str | None) -> rendering.RenderJob:  # fmt: skip
    email = [f"reader{number}@example.com", f"josé{number}@example.es",
             f"x{number}@müller-post.de"][index % 3]  # fmt: skip
    contact = Contact(email, first, last, "Europe/Rome" if index % 2 else None, locale,
                      {"orders": index, "favourite_roast": "dark", "signed_up_at": "2025-01-02"},
                      ("newsletter", "vip")[: index % 3], number)  # fmt: skip
    return rendering.RenderJob(number, f"k{number}", campaign, step, contact, variant)


def run(key: Path) -> str:
    if not key.exists():
        key.write_bytes(generate_key("rsa-sha256")[0])
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(key, Path(directory) / "dkim.key")
        settings = project(Path(directory))
        rendering._start(settings, os.getpid())
        digest, sent, failed = hashlib.sha256(), 0, 0
        jobs = every_job(settings)
        for start in range(0, len(jobs), rendering.CHUNK):
            for result in rendering.render_chunk(jobs[start : start + rendering.CHUNK], NOW):
                if result.message is None:
                    failed += 1
                    digest.update(b"failed " + str(result.outbox_id).encode())
                    continue
                sent += 1
                message = result.message
                envelope = (message.message_id, message.envelope_from, message.recipient,
                            message.smtputf8, message.links)  # fmt: skip
                digest.update(message.wire + repr(envelope).encode())
    return f"{sent} messages, {failed} failed: {digest.hexdigest()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--key", type=Path, required=True, help="RSA DKIM key file, kept")
    print(run(parser.parse_args(argv).key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
