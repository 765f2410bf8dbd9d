"""Rendered messages scored by SpamAssassin's local rules (Debian's `spamassassin`).

`-L`: local tests only, no DNS blocklists or other network tests, so a score is the same on
every machine with the same rules. One `spamassassin --mbox` run scores every message: loading
the rules takes most of its time (about 3 s), each message then a fraction of a second, so one
process for all beats one per message and needs no spamd daemon. The run is sandboxed in a
temporary HOME with empty user preferences and Bayes off: it reads nothing of the user's and
learns nothing from our messages.
"""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailer.errors import MailerError

DEFAULT_THRESHOLD = 1.0
PROGRAM = "spamassassin"
TIMEOUT = 300  # seconds for the whole run: a few seconds is usual
# Our own headers (X-Spam-Mailer-*) on each scored copy: the score, and every rule that fired
# with its points.
_SETTINGS = [
    "use_bayes 0",
    "bayes_auto_learn 0",
    "add_header all Mailer-Score _SCORE_",
    "add_header all Mailer-Rules _TESTSSCORES(,)_",
]
_INDEX = "X-Mailer-Spam-Index"
_RULE = re.compile(r"([A-Z0-9_]+)=(-?[0-9.]+)")


class SpamCheckError(MailerError):
    """SpamAssassin could not score the messages."""


@dataclass(frozen=True)
class SpamScore:
    score: float
    rules: dict[str, float]  # every rule that fired, with its points

    def worst_rules(self) -> str:
        """`HTML_IMAGE_ONLY_32 (2.2), ...`: the rules that count (not the ±0.001 markers
        SpamAssassin adds for information), most points first."""
        counted = {name: points for name, points in self.rules.items() if abs(points) >= 0.01}
        ranked = sorted(counted.items(), key=lambda rule: -rule[1])
        return ", ".join(f"{name} ({points:g})" for name, points in ranked) or "none"


def spamassassin() -> str | None:
    """The path of the spamassassin program, or None when it is not installed."""
    return shutil.which(PROGRAM)


def score_messages(messages: Sequence[bytes], program: str) -> list[SpamScore]:
    """The score of each message (as SMTP DATA carries it), in order."""
    if not messages:
        return []
    with tempfile.TemporaryDirectory(prefix="mailer-spam-") as folder:
        home = Path(folder)
        prefs = home / "user_prefs"
        prefs.write_text("")
        source = mailbox.mbox(home / "in.mbox")
        for index, data in enumerate(messages):  # mailbox escapes `From ` lines in bodies
            # Each copy is numbered: the output's order is not the input's.
            numbered = f"{_INDEX}: {index}\n".encode() + data.replace(b"\r\n", b"\n")
            source.add(mailbox.mboxMessage(numbered))
        source.flush()
        command = [program, "-L", "--mbox", "-p", str(prefs)]
        command += [f"--cf={line}" for line in _SETTINGS]
        try:
            with open(home / "in.mbox", "rb") as stdin, open(home / "out.mbox", "wb") as stdout:
                done = subprocess.run(command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                      env={**os.environ, "HOME": folder}, timeout=TIMEOUT,
                                      check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SpamCheckError(f"{program} could not run: {error}") from None
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise SpamCheckError(f"{program} failed (exit {done.returncode}): {' '.join(said)}")
        scores = {int(message[_INDEX]): _score(message)
                  for message in mailbox.mbox(home / "out.mbox") if message[_INDEX]}  # fmt: skip
    if sorted(scores) != list(range(len(messages))):
        raise SpamCheckError(f"{program} scored {len(scores)} of {len(messages)} messages")
    return [scores[index] for index in range(len(messages))]


def _score(message: mailbox.mboxMessage) -> SpamScore:
    score, rules = message["X-Spam-Mailer-Score"], message["X-Spam-Mailer-Rules"]
    if score is None or rules is None:
        raise SpamCheckError("a message came back from spamassassin without its score")
    found = {name: float(points) for name, points in _RULE.findall(" ".join(rules.split()))}
    return SpamScore(float(score), found)
