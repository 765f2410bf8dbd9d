"""Benchmark: importing a large contact CSV with consent evidence into SQLite.

DESIGN.md budgets "import a 1,000,000-row CSV with consent evidence into SQLite" at under 60 s
on a 2-core machine, with memory flat. This script checks that budget and puts the number in
context by comparing two imports of the same generated file:

* raw: the stdlib `csv` module feeding one `sqlite3` `executemany` into a table of the same
  columns (UNIQUE email, WAL, synchronous=NORMAL, one transaction), with no validation at all.
  It is the floor: what SQLite itself costs, so the gap to it is what mailer adds.
* mailer: `mailer.contacts.importer.import_contacts`, which validates and normalises every
  address, writes contacts, list memberships and tags, and appends a hash-chained consent
  ledger entry per row with its evidence, in batches of one transaction each.

Peak RSS is printed after generating the file, before the import and after it: the import
streams, so the last two should be close however many rows there are.

    .venv/bin/python bench/import_bench.py [--rows 1000000] [--workdir DIR] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import pstats
import random
import resource
import sqlite3
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from mailer.clock import FrozenClock
from mailer.contacts.importer import (
    ImportOptions,
    ImportSummary,
    import_contacts,
    rejects_path_for,
)
from mailer.contacts.lists import sync_lists
from mailer.store.engine import open_database

HEADER = [
    "email", "first_name", "last_name", "locale", "timezone", "tags", "orders",
    "consent_at", "consent_source", "consent_ip", "consent_text_version",
]  # fmt: skip
BUDGET_SECONDS_PER_MILLION = 60.0
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
KEY = b"mailer-bench-address-hash-key-0123456789"  # 40 bytes, like a real MAILER_SECRET_KEY
LIST_NAME = "bench"

FIRST_NAMES = [
    "Anna", "Luca", "Sofia", "Marco", "Emma", "Noah", "Olivia", "Liam", "Mia", "Lucas",
    "Chloé", "José", "Zoë", "Mateo", "Hannah", "Jonas", "Léa", "Giulia", "Pedro", "Aisha",
]  # fmt: skip
LAST_NAMES = [
    "Rossi", "Smith", "Müller", "García", "Dubois", "Johnson", "Bianchi", "Silva", "Novak",
    "Kowalski", "O'Brien", "Nguyen", "Schmidt", "Martin", "Fernández", "Jensen", "Ricci",
]  # fmt: skip
DOMAINS = [
    "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "gmx.de", "libero.it",
    "orange.fr", "web.de", "proton.me", "acme-corp.com", "northwind.io", "contoso.co.uk",
]  # fmt: skip
LOCALES_AND_ZONES = [
    ("en", "America/New_York"), ("en_GB", "Europe/London"), ("it", "Europe/Rome"),
    ("de", "Europe/Berlin"), ("fr", "Europe/Paris"), ("es", "Europe/Madrid"),
    ("pt_BR", "America/Sao_Paulo"), ("en_US", "America/Los_Angeles"), ("nl", "Europe/Amsterdam"),
]  # fmt: skip
TAG_SETS = ["newsletter", "newsletter;vip", "customer", "customer;newsletter", "lead", ""]
SOURCES = ["landing-page:spring-sale", "checkout", "webinar-signup", "footer-form"]


# -- the input file ---------------------------------------------------------------------------


def ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def fake_rows(count: int, seed: int = 42) -> Iterator[list[str]]:
    """`count` plausible contacts with distinct addresses, each with consent evidence."""
    pick = random.Random(seed)
    for number in range(count):
        first, last = pick.choice(FIRST_NAMES), pick.choice(LAST_NAMES)
        # Addresses fold accents as real ones do (few mailbox providers accept UTF-8 local
        # parts); one in a hundred keeps them, to exercise the full validation path too.
        local = f"{first}.{last}".lower().replace("'", "")
        if number % 100:
            local = ascii_fold(local)
        locale, zone = pick.choice(LOCALES_AND_ZONES)
        consented = NOW - timedelta(days=pick.randint(1, 1500), seconds=pick.randint(0, 86399))
        yield [
            f"{local}.{number}@{pick.choice(DOMAINS)}",  # the number keeps addresses distinct
            first,
            last,
            locale,
            zone,
            pick.choice(TAG_SETS),
            str(pick.randint(0, 40)),
            consented.isoformat(timespec="seconds").replace("+00:00", "Z"),
            pick.choice(SOURCES),
            f"203.0.{pick.randint(0, 255)}.{pick.randint(1, 254)}",
            f"v{pick.randint(1, 4)}",
        ]


def write_csv(path: Path, count: int) -> None:
    """Stream the rows to `path`, one at a time: the file is never held in memory."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        writer.writerows(fake_rows(count))


# -- measurements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def peak_rss_mib() -> float:
    """The process's high-water resident set size, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def raw_sqlite_import(csv_path: Path, db_path: Path) -> Timing:
    """The floor: csv module + one sqlite3 executemany, no validation, one transaction."""
    connection = sqlite3.connect(db_path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        columns = ", ".join(f"{name} TEXT" for name in HEADER[1:])
        connection.execute(f"CREATE TABLE contacts (email TEXT NOT NULL UNIQUE, {columns})")
        insert = f"INSERT INTO contacts VALUES ({', '.join('?' * len(HEADER))})"
        started = time.perf_counter()
        with csv_path.open(encoding="utf-8", newline="") as file:
            rows = csv.reader(file)
            next(rows)  # the header
            connection.execute("BEGIN")
            connection.executemany(insert, rows)  # consumes the reader lazily
            connection.execute("COMMIT")
        seconds = time.perf_counter() - started
        (count,) = connection.execute("SELECT count(*) FROM contacts").fetchone()
    finally:
        connection.close()
    return Timing(count, seconds)


def fresh_mailer_database(db_path: Path) -> Engine:
    """A new, migrated mailer database holding the one list the import targets."""
    engine = open_database("sqlite:///" + str(db_path))
    with engine.begin() as connection:
        sync_lists(connection, {LIST_NAME: ("Benchmark list", False)})
    return engine


def mailer_import(
    engine: Engine, csv_path: Path, rows: int, profiler: cProfile.Profile | None
) -> tuple[Timing, ImportSummary]:
    options = ImportOptions(list_name=LIST_NAME, double_opt_in={LIST_NAME: False})
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    try:
        summary = import_contacts(engine, csv_path, options, KEY, FrozenClock(NOW))
    finally:
        if profiler:
            profiler.disable()
    return Timing(rows, time.perf_counter() - started), summary


# -- the run ---------------------------------------------------------------------------------


def remove_database(db_path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)


def generate(csv_path: Path, rows: int) -> None:
    started = time.perf_counter()
    write_csv(csv_path, rows)
    size_mb = csv_path.stat().st_size / 1e6
    print(f"generated {rows:,} rows: {size_mb:.1f} MB in {time.perf_counter() - started:.1f} s")
    print(f"peak RSS after generating the file: {peak_rss_mib():.1f} MiB")


def run(rows: int, workdir: Path, profile: bool) -> bool:
    """Generate, measure both imports, print the results; return whether the budget was met."""
    csv_path, raw_db, mailer_db = workdir / "contacts.csv", workdir / "raw.db", workdir / "m.db"
    for path in (raw_db, mailer_db):
        remove_database(path)
    rejects_path_for(csv_path).unlink(missing_ok=True)
    generate(csv_path, rows)

    raw = raw_sqlite_import(csv_path, raw_db)
    print(f"raw sqlite3 executemany: {raw.rows:,} rows in {raw.seconds:.2f} s", end="")
    print(f" = {raw.rate:,.0f} rows/s")

    engine = fresh_mailer_database(mailer_db)
    rss_before = peak_rss_mib()
    print(f"peak RSS before the mailer import: {rss_before:.1f} MiB")
    profiler = cProfile.Profile() if profile else None
    timing, summary = mailer_import(engine, csv_path, rows, profiler)
    rss_after = peak_rss_mib()
    engine.dispose()
    report_mailer(timing, raw, summary, rss_before, rss_after, profiled=profile)
    if profiler:
        print("\ntop 25 functions by cumulative time (mailer import, under cProfile):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    return budget_met(timing, rows)


def report_mailer(
    timing: Timing,
    raw: Timing,
    summary: ImportSummary,
    rss_before: float,
    rss_after: float,
    profiled: bool,
) -> None:
    note = " (under cProfile: slower than a plain run)" if profiled else ""
    print(
        f"mailer import_contacts: {timing.rows:,} rows in {timing.seconds:.2f} s "
        f"= {timing.rate:,.0f} rows/s{note}"
    )
    print(f"ratio mailer/raw (time): {timing.seconds / raw.seconds:.1f}x")
    print(
        f"summary: imported={summary.imported:,} updated={summary.updated:,} "
        f"rejected={summary.rejected:,} suppressed={summary.suppressed:,} "
        f"consent_recorded={summary.consent_recorded:,}"
    )
    if summary.rejects_file:
        print(f"rejects: {summary.rejects_file}")
    print(
        f"peak RSS after the mailer import: {rss_after:.1f} MiB "
        f"(+{rss_after - rss_before:.1f} MiB over before the import)"
    )


def budget_met(timing: Timing, rows: int) -> bool:
    budget = BUDGET_SECONDS_PER_MILLION * rows / 1_000_000
    met = timing.seconds < budget
    print(
        f"budget ({BUDGET_SECONDS_PER_MILLION:.0f} s per 1,000,000 rows -> {budget:.1f} s "
        f"for {rows:,}): {'MET' if met else 'MISSED'} ({timing.seconds:.2f} s)"
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument(
        "--workdir", type=Path, help="where to put the CSV and databases (kept); default: temp"
    )
    parser.add_argument("--profile", action="store_true", help="run the import under cProfile")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return 0 if run(args.rows, args.workdir, args.profile) else 1
    with tempfile.TemporaryDirectory(prefix="mailer-import-bench-") as temporary:
        return 0 if run(args.rows, Path(temporary), args.profile) else 1


if __name__ == "__main__":
    sys.exit(main())
