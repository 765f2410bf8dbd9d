"""Refreshing PostgreSQL's planner statistics after big writes: autovacuum may be off or late,
and queries planned for a table as it was before 50,000 new rows can scan it whole."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import Engine, text

from mailer.logs import logger

# A write of this many rows ends with ANALYZE of the tables it wrote (imports and ticks).
ANALYZE_FROM_ROWS = 10_000


def analyze(engine: Engine, tables: Sequence[str], written: int, after: str) -> None:
    """ANALYZE `tables` (`after` the work that wrote `written` rows), and log it."""
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text(f"ANALYZE {', '.join(tables)}"))
    logger.info(f"statistics refreshed after {after} (ANALYZE)",
                extra={"rows": written, "tables": ", ".join(tables),
                       "seconds": round(time.perf_counter() - started, 2)})  # fmt: skip


def analyze_after_big_write(engine: Engine, tables: Sequence[str], written: int,
                            after: str) -> None:  # fmt: skip
    """`analyze` when `written` reaches ANALYZE_FROM_ROWS on PostgreSQL (the tick, retention):
    SQLite gets no statistics from mailer (a first ANALYZE would change every plan)."""
    if engine.dialect.name == "postgresql" and written >= ANALYZE_FROM_ROWS:
        analyze(engine, tables, written, after)
