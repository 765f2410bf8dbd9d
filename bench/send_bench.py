"""Benchmark: distinct contacts through enroll -> advance -> deliver, into Postfix's smtp-sink.

Each message is personalised (the example's welcome template, four languages, an A/B subject),
has tracked links and an open pixel, and is DKIM-signed with RSA-2048. The same run measures
Postfix's `smtp-source` pushing a message of the same size into a fresh smtp-sink over the same
number of sessions, and prints the ratio (issue 6's budget: at least 0.1; DESIGN.md's: 0.5).

Setup (import, then the engine's tick that enrolls everyone and queues the first step) runs in
a child process, so the peak memory printed for delivery is delivery's own: the delivering
process and each render process. Run it at two sizes to see that memory does not grow with
the number of contacts. Afterwards a sample of what was sent is delivered again into
`mailer sink`, whose stored messages are verified by dkimpy (an independent implementation).

    make bench-tools   # installs Postfix's smtp-sink and smtp-source (never the daemon)
    .venv/bin/python bench/send_bench.py [--contacts 50000] [--database sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim as dkimpy  # type: ignore[import-untyped]
from databases import database
from postfix import SmtpSink, free_port, process_cpu_seconds, require_postfix, smtp_source_run
from sqlalchemy import func, select

from mailer.campaigns.engine import tick
from mailer.clock import FrozenClock
from mailer.config import Settings, load_settings
from mailer.contacts.importer import ImportOptions, import_contacts
from mailer.contacts.model import load_contacts
from mailer.delivery.sink import start_sink
from mailer.delivery.worker import Deliverer, DeliveryReport
from mailer.render.dkim import Algorithm
from mailer.store.tables import outbox
from mailer.workspace import Workspace, create_dkim_key

ROOT = Path(__file__).resolve().parent.parent
SECRET = "mailer-bench-send-secret-0123456789abcdef"
# A Tuesday, outside quiet hours, and in the past: receivers refuse a DKIM t= in the future.
START = datetime(2026, 11, 17, 11, 0, tzinfo=UTC)
NAMES = [("Sarah", "Mitchell", "en"), ("Giulia", "Rossi", "it"), ("Jürgen", "Weiß", "de"),
         ("Amélie", "Lefèvre", "fr"), ("Priya", "Nair", "en"),
         ("Kenji", "Watanabe", "en")]  # fmt: skip


def project(workdir: Path, url: str, port: int, sessions: int, render_processes: int,
            algorithm: Algorithm = "rsa-sha256") -> tuple[Settings, bytes]:  # fmt: skip
    """The example project (settings.toml and templates), copied, pointed at this run's
    database and sink, with a new DKIM key (RSA-2048 unless `algorithm` says ed25519); and
    the key's DNS record."""
    shutil.copy(ROOT / "settings.toml", workdir / "settings.toml")
    shutil.copytree(ROOT / "templates", workdir / "templates", dirs_exist_ok=True)
    environ = {"MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": url,
               "MAILER_SMTP__PORT": str(port), "MAILER_SMTP__POOL_SIZE": str(sessions),
               "MAILER_DKIM__KEY_FILE": str(workdir / "dkim.key"),
               "MAILER_DKIM__ALGORITHM": algorithm,
               "MAILER_DELIVERY__RENDER_PROCESSES": str(render_processes)}  # fmt: skip
    settings = load_settings(workdir / "settings.toml", environ=environ)
    created = create_dkim_key(settings)
    assert created is not None
    return settings, created[1].encode()


def write_contacts(path: Path, count: int) -> None:
    rng = random.Random(6)
    with path.open("w", encoding="utf-8") as file:
        file.write("email,first_name,last_name,locale,timezone,orders,consent_at,"
                   "consent_confirmed_at\n")  # fmt: skip
        for n in range(count):
            first, last, locale = rng.choice(NAMES)
            file.write(f"reader{n}@example.com,{first},{last},{locale},UTC,{rng.randint(0, 9)},"
                       "2026-01-05T10:00:00Z,2026-01-05T10:03:00Z\n")  # fmt: skip


def set_up(settings: Settings, csv: Path, seconds: dict[str, float]) -> None:
    """Import the contacts and tick: everyone is enrolled and their first message queued."""
    workspace = Workspace(settings, FrozenClock(START))
    tick(workspace.engine, settings, START - timedelta(minutes=1))  # the engine starts first
    started = time.perf_counter()
    spec = settings.lists["newsletter"]
    import_contacts(workspace.engine, csv, ImportOptions(
        list_name="newsletter", double_opt_in=workspace.double_opt_in, columns=spec.columns,
        tags=tuple(spec.tags), attribute_types=settings.attributes,
    ), workspace.key, workspace.clock)  # fmt: skip
    seconds["import"] = time.perf_counter() - started
    started = time.perf_counter()
    report = tick(workspace.engine, settings, START + timedelta(minutes=1))
    seconds["tick"] = time.perf_counter() - started
    seconds["queued"] = report.queued
    workspace.close()


def high_water_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Delivery:
    report: DeliveryReport
    seconds: float
    cpu: float  # CPU seconds of the delivering process
    render_cpu: float  # CPU seconds of the render processes
    render_peaks: list[float]  # peak memory of each render process, MiB


def deliver(settings: Settings, profile: bool) -> Delivery:
    """Deliver everything queued, and measure it."""
    workspace = Workspace(settings, FrozenClock(START + timedelta(minutes=2)))
    deliverer = Deliverer(workspace)
    cpu = time.process_time()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    report = deliverer.deliver()
    seconds = time.perf_counter() - started
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    cpu = time.process_time() - cpu
    assert deliverer.pool is not None
    processes = getattr(deliverer.pool.executor, "_processes", None) or {}
    render_peaks = [high_water_mib(pid) for pid in processes]
    render_cpu = sum(process_cpu_seconds(pid) for pid in processes)
    deliverer.close()
    workspace.close()
    return Delivery(report, seconds, cpu, render_cpu, render_peaks)


def verify_sample(settings: Settings, record: bytes, workdir: Path,
                  count: int) -> tuple[int, int]:  # fmt: skip
    """Send `count` more messages into `mailer sink` and verify each stored one with dkimpy."""
    folder = workdir / "sent"
    port = free_port()
    controller = start_sink("127.0.0.1", port, folder, lambda line: None)
    try:
        smtp = settings.smtp.model_copy(update={"port": port})
        sample = settings.model_copy(update={"smtp": smtp})
        workspace = Workspace(sample, FrozenClock(START + timedelta(hours=1)))
        with workspace.engine.begin() as connection:  # send a few again: mark them queued
            ids = connection.scalars(
                select(outbox.c.id).order_by(func.random()).limit(count)
            ).all()
            connection.execute(outbox.update().where(outbox.c.id.in_(ids))
                               .values(status="queued", send_after=START))  # fmt: skip
        deliverer = Deliverer(workspace)
        deliverer.deliver()
        deliverer.close()
        workspace.close()
    finally:
        controller.stop()
    files = sorted(folder.glob("*.eml"))
    good = sum(dkimpy.verify(_without_delivery_headers(f.read_bytes()),
                             dnsfunc=lambda name, timeout=5: record) for f in files)  # fmt: skip
    return good, len(files)


def _without_delivery_headers(data: bytes) -> bytes:
    """The message as sent: without the Return-Path and Delivered-To lines the sink added."""
    lines = data.split(b"\r\n") if b"\r\n" in data else data.split(b"\n")
    while lines and lines[0].startswith((b"Return-Path:", b"Delivered-To:")):
        lines.pop(0)
    return (b"\r\n" if b"\r\n" in data else b"\n").join(lines)


def sample_message(settings: Settings) -> bytes:
    """One message exactly as delivery renders it, for smtp-source to send."""
    workspace = Workspace(settings, FrozenClock(START))
    with workspace.engine.connect() as connection:
        row = connection.execute(select(outbox).limit(1)).one()
    with workspace.engine.connect() as connection:
        contact = load_contacts(connection, [row.contact_id])[row.contact_id]
    campaign = settings.campaigns[row.campaign]
    message = workspace.renderer.render(row.campaign, campaign.step(row.step), contact,
                                        f"m{row.id}", row.variant)  # fmt: skip
    workspace.close()
    return message.data


def run(contacts: int, kind: str, sessions: int, render_processes: int, profile: bool) -> None:
    require_postfix()
    with tempfile.TemporaryDirectory(prefix="send-bench-") as folder, \
            database(kind, Path(folder), "send") as url:  # fmt: skip
        workdir = Path(folder)
        with SmtpSink() as sink:
            settings, record = project(workdir, url, sink.port, sessions, render_processes)
            csv = workdir / "contacts.csv"
            write_contacts(csv, contacts)
            manager = multiprocessing.get_context("fork").Manager()
            seconds = manager.dict()
            child = multiprocessing.get_context("fork").Process(
                target=set_up, args=(settings, csv, seconds))
            child.start()
            child.join()
            if child.exitcode != 0:
                sys.exit("set-up failed")
            seconds = dict(seconds)
            manager.shutdown()
            print(f"{contacts:,} contacts on {kind}: import {seconds['import']:.1f} s, "
                  f"tick (enroll + queue {int(seconds['queued']):,}) {seconds['tick']:.1f} s")
            sink_cpu = sink.cpu_seconds()
            delivery = deliver(settings, profile)
            sink_cpu = sink.cpu_seconds() - sink_cpu
            delivered = sink.delivered()
        message = sample_message(settings)
        with SmtpSink() as reference_sink:
            reference = smtp_source_run(reference_sink.port, message, min(contacts, 50_000),
                                        sessions)  # fmt: skip
            reference_sink_cpu = reference_sink.cpu_seconds()
        good, checked = verify_sample(settings, record, workdir, 50)
    report, wall = delivery.report, delivery.seconds
    rate = report.sent / wall
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"mailer:       {report.sent:,} sent in {wall:.1f} s = {rate:,.0f} msgs/s "
          f"({report.failed} failed, {report.deferred} deferred, {report.skipped} skipped; "
          f"smtp-sink counted {delivered:,}); message {len(message):,} bytes, {sessions} sessions")
    print(f"smtp-source:  {reference.messages:,} in {reference.seconds:.1f} s = "
          f"{reference.rate:,.0f} msgs/s, same size, same sessions, same machine")
    print(f"ratio:        {rate / reference.rate:.3f} (budget: at least 0.1)")
    print(f"memory:       delivering process peak {peak:.0f} MiB; render processes "
          + ", ".join(f"{p:.0f}" for p in delivery.render_peaks) + " MiB")
    per_message = 1e6 / max(report.sent, 1)
    print(f"CPU per message: render + DKIM {delivery.render_cpu * per_message:.0f} µs "
          f"(in {len(delivery.render_peaks)} processes), delivering process "
          f"{delivery.cpu * per_message:.0f} µs (SMTP, database, gate), smtp-sink "
          f"{sink_cpu * per_message:.0f} µs")
    print(f"where the time goes (CPU seconds): render + DKIM {delivery.render_cpu:.1f} "
          f"(in {len(delivery.render_peaks)} processes), delivering process {delivery.cpu:.1f} "
          f"(SMTP, database, gate), smtp-sink {sink_cpu:.1f} (smtp-source's run: sink "
          f"{reference_sink_cpu:.1f}, source {reference.cpu_seconds:.1f}); "
          f"wall {wall:.1f} s on {os.cpu_count()} cores")
    print(f"DKIM:         {good} of {checked} messages stored by `mailer sink` verify with dkimpy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sessions", type=int, default=10, help="SMTP connections (pool_size)")
    parser.add_argument("--render-processes", type=int, default=2,
                        help="delivery.render_processes (2: one per core here)")
    parser.add_argument("--profile", action="store_true",
                        help="Profile the delivering process (not the render processes).")
    arguments = parser.parse_args(argv)
    run(arguments.contacts, arguments.database, arguments.sessions, arguments.render_processes,
        arguments.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
