"""The machine rules against the corpus of request patterns (tests/tracking/corpus.py): each
pattern's fetches through the real recording path (one message each, delivered through a
local SMTP sink into a temporary SQLite database), then the confusion matrix: rows are the true
label, columns the label the event was stored with; overall and per pattern family, and the
events that landed in the wrong column, with the reason stored.

    .venv/bin/python bench/bot_confusion.py [--batch 1,4,9]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from mailer.clock import FrozenClock  # noqa: E402
from mailer.config import load_settings  # noqa: E402
from mailer.store.tables import outbox  # noqa: E402
from mailer.tracking.recording import Memory  # noqa: E402
from mailer.workspace import Workspace  # noqa: E402
from tests.conftest import NOW, SECRET, SETTINGS  # noqa: E402
from tests.delivery.helpers import deliver, queue_welcome  # noqa: E402
from tests.delivery.smtp_server import ScriptedSmtpServer  # noqa: E402
from tests.tracking.corpus import KNOWN_LOST, PATTERNS, Outcome, confusion, run  # noqa: E402
from tests.tracking.test_corpus import TEMPLATE  # noqa: E402


def matrix(title: str, outcomes: Sequence[Outcome]) -> str:
    counts = confusion(outcomes)
    lines = [f"{title:<40} stored person  stored machine"]
    for true in ("person", "machine"):
        lines.append(f"  {'true ' + true:<38} {counts.get((true, 'person'), 0):>13}  "
                     f"{counts.get((true, 'machine'), 0):>14}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", default="1,4,9",
                        help="write batch sizes, cycled (default 1,4,9)")  # fmt: skip
    sizes = [int(size) for size in parser.parse_args().batch.split(",")]
    with tempfile.TemporaryDirectory() as folder, ScriptedSmtpServer() as sink:
        project = Path(folder)
        (project / "templates" / "welcome").mkdir(parents=True)
        (project / "settings.toml").write_text(textwrap.dedent(SETTINGS))
        (project / "templates" / "welcome" / "1.html").write_text(TEMPLATE)
        (project / "templates" / "welcome" / "2.html").write_text("<p>Tips</p>" + TEMPLATE)
        settings = load_settings(project / "settings.toml", environ={
            "MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": f"sqlite:///{project}/m.db",
            "MAILER_SMTP__PORT": str(sink.port),
            "MAILER_DELIVERY__RENDER_PROCESSES": "0"})  # fmt: skip
        workspace = Workspace(settings, FrozenClock(NOW))
        try:
            queue_welcome(workspace, project, *(f"reader{n}@example.com,Reader"
                                                for n in range(len(PATTERNS))))  # fmt: skip
            assert deliver(workspace).sent == len(PATTERNS), "the sink refused messages"
            with workspace.engine.connect() as connection:
                ids = list(connection.scalars(select(outbox.c.id).order_by(outbox.c.id)))
            outcomes = run(workspace, settings, ids, sizes, Memory())  # as the writer does
        finally:
            workspace.close()
    print(f"{sum(len(p.fetches) for p in PATTERNS)} events in {len(PATTERNS)} patterns, "
          f"batches of {','.join(map(str, sizes))}\n")  # fmt: skip
    print(matrix("all patterns", outcomes))
    for family in dict.fromkeys(pattern.family for pattern in PATTERNS):
        print(matrix(family, [o for o in outcomes if o.pattern.family == family]))
    wrong = [o for o in outcomes if o.fetch.label != o.stored]
    print("\nstored in the wrong column:" if wrong else "\nevery event in its column")
    for o in wrong:
        known = KNOWN_LOST.get((o.pattern.name, o.index))
        print(f"  {o.pattern.name} #{o.index} ({o.fetch.kind}): true {o.fetch.label}, stored "
              f"{o.stored} ({o.reason}){' — known: ' + known if known else ''}")  # fmt: skip


if __name__ == "__main__":
    main()
