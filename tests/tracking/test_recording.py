"""Writing opens and clicks (tracking/recording.py) on real SQLite and PostgreSQL, batch after
batch: the machine rules hold whatever the batching, a refetched pixel is one open, and a
message's open and each link's click score once."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy import event, select

from mailer.config import Settings
from mailer.consent.person import erase_person
from mailer.contacts.scoring import score_at
from mailer.errors import MailerError
from mailer.render.links import HONEYPOT
from mailer.store.tables import contacts, events, outbox
from mailer.tracking.app import create_app
from mailer.tracking.hits import Hit
from mailer.tracking.recording import Memory, record_hits
from mailer.workspace import Workspace
from tests.helpers import refetches
from tests.tracking.conftest import at

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0.0.0 Safari/537.36")  # fmt: skip
IPHONE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Mobile/15E148")  # fmt: skip
Sent = tuple[Workspace, dict[str, str]]


def message(workspace: Workspace) -> tuple[str, datetime, dict[str, int]]:
    """The sent message's key, send time and link indexes by URL ("honeypot" for the hidden)."""
    with workspace.engine.connect() as connection:
        row = connection.execute(select(outbox.c.id, outbox.c.sent_at, outbox.c.links)).one()
    links = json.loads(row.links)
    named = {("honeypot" if url == HONEYPOT else url): n for n, url in enumerate(links)}
    return f"m{row.id}", row.sent_at, named


def write(workspace: Workspace, settings: Settings, *hits: Hit, memory: Memory | None = None
          ) -> None:  # fmt: skip
    """`hits` in one transaction, as the writer process writes a batch (with its memory)."""
    try:
        with workspace.engine.begin() as connection:
            record_hits(connection, settings, workspace.key, hits, memory)
    except BaseException:
        if memory is not None:
            memory.drop()
        raise
    if memory is not None:
        memory.keep()


def stored(workspace: Workspace) -> list[tuple[str, str | None]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(events.c.kind, events.c.properties)
                                  .order_by(events.c.occurred_at, events.c.id))  # fmt: skip
        return [(row.kind, row.properties.get("machine")) for row in rows]


def score(workspace: Workspace, at: datetime) -> float:
    with workspace.engine.connect() as connection:
        epoch = connection.scalar(select(contacts.c.score_epoch))
    return round(score_at(float(epoch or 0), at, workspace.settings.scoring.half_life), 6)


def scoring(workspace: Workspace) -> Settings:
    points = {"opened": 1.0, "clicked": 5.0}
    return workspace.settings.model_copy(update={
        "scoring": workspace.settings.scoring.model_copy(update={"points": points})})  # fmt: skip


def hit(kind: Literal["open", "click"], key: str, at: datetime, link: int | None = None,
        agent: str = CHROME, ip: str = "198.51.100.7") -> Hit:  # fmt: skip
    return Hit(kind, key, link, at, agent, ip, "GET")


def test_a_honeypot_burst_split_over_three_batches_is_all_a_machines(sent: Sent) -> None:
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    shop, cups = links["https://shop.example/beans?a=1"], links["https://shop.example/cups"]
    at = sent_at + timedelta(minutes=5)
    settings = scoring(workspace)
    write(workspace, settings, hit("click", key, at, shop))
    assert stored(workspace) == [("click", None)]
    assert score(workspace, at) == 5.0
    write(workspace, settings, hit("click", key, at + timedelta(seconds=2), links["honeypot"]))
    write(workspace, settings, hit("click", key, at + timedelta(seconds=4), cups))
    assert stored(workspace) == [
        ("machine_click", "clicked 2 s before the honeypot link"),
        ("machine_click", "honeypot link clicked"),
        ("machine_click", "clicked 2 s after the honeypot link"),
    ]
    with workspace.engine.connect() as connection:
        first = connection.execute(select(events.c.properties).order_by(events.c.id)).first()
    assert first is not None and first.properties["was_person"] is True
    assert score(workspace, at) == 5.0  # given before the honeypot was clicked: it stays


def test_three_links_in_one_second_over_three_batches_are_all_a_machines(sent: Sent) -> None:
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    at = sent_at + timedelta(minutes=5)
    targets = [n for url, n in links.items() if url != "honeypot"][:3]
    assert len(targets) == 3
    for n, link in enumerate(targets):
        write(workspace, workspace.settings, hit("click", key, at + n * timedelta(seconds=0.3),
                                                 link))  # fmt: skip
    assert stored(workspace) == [("machine_click", "3 links clicked in the same second")] * 3


def test_a_pixel_fetched_25_times_is_one_open_and_scores_once(sent: Sent) -> None:
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    at = sent_at + timedelta(minutes=5)
    settings = scoring(workspace)
    fetches = [hit("open", key, at + timedelta(seconds=2 * n)) for n in range(25)]
    for size, start in ((1, 0), (3, 1), (1, 4), (20, 5)):  # batches of varying size
        write(workspace, settings, *fetches[start : start + size])
    assert stored(workspace) == [("open", None)]
    assert refetches(workspace) == 24  # counted, not stored: reports count 24 machine opens
    assert score(workspace, at) == 1.0
    reopen = at + timedelta(days=2)
    write(workspace, settings, hit("open", key, reopen, agent=IPHONE_MAIL))
    assert stored(workspace)[-1] == ("open", None)  # a person's reopen: total opens count it
    assert score(workspace, at) == 1.0  # a message's open scores once


def test_opens_beside_a_persons_click_batch_after_batch_keep_the_refetch_chain(sent: Sent) -> None:
    """Only the last open that counts is read for a message no machine clicked; all of them
    again once a machine's click is stored."""
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    shop = links["https://shop.example/beans?a=1"]
    at = sent_at + timedelta(hours=1)
    settings = workspace.settings
    write(workspace, settings, hit("click", key, at, shop))
    write(workspace, settings, hit("open", key, at + timedelta(seconds=70)))
    write(workspace, settings, hit("open", key, at + timedelta(seconds=90)))
    write(workspace, settings, hit("open", key, at + timedelta(seconds=160)),
          hit("open", key, at + timedelta(seconds=140)))  # fmt: skip
    write(workspace, settings, hit("click", key, at + timedelta(seconds=300), shop,
                                   agent="Barracuda Sentinel (EE)"))  # fmt: skip
    write(workspace, settings, hit("open", key, at + timedelta(seconds=330)))
    assert stored(workspace) == [
        ("click", None),
        ("open", None),
        ("machine_click", "link scanner (Barracuda)"),
        ("machine_open", "pixel fetched 30 s after a machine's click"),
    ]
    assert refetches(workspace) == 3  # at 90 s, 140 s (50 s after the one at 90 s), 160 s


def test_a_sandbox_pixel_and_an_open_beside_a_machines_click_are_a_machines(sent: Sent) -> None:
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    shop = links["https://shop.example/beans?a=1"]
    write(workspace, workspace.settings, hit("open", key, sent_at + timedelta(seconds=0.2)))
    later = sent_at + timedelta(hours=1)
    write(workspace, workspace.settings, hit("open", key, later))
    write(workspace, workspace.settings, hit("click", key, later + timedelta(seconds=5), shop,
                                             agent="Barracuda Sentinel (EE)"))  # fmt: skip
    assert stored(workspace) == [
        ("machine_open", "pixel fetched 0.2 s after delivery"),
        ("machine_open", "pixel fetched 5 s before a machine's click"),
        ("machine_click", "link scanner (Barracuda)"),
    ]


def test_apple_mail_from_apples_ranges_in_the_operators_file_is_privacy_protection(
    sent: Sent, tmp_path: Path
) -> None:
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    csv = tmp_path / "egress-ip-ranges.csv"
    csv.write_text("172.224.226.0/27,GB,GB-EN,London,\n2a02:26f7:b3c0:4000::/64,GB,GB-EN,London,\n")
    settings = workspace.settings.model_copy(update={
        "tracking": workspace.settings.tracking.model_copy(
            update={"apple_proxy_ranges_file": csv})})  # fmt: skip
    at = sent_at + timedelta(hours=1)
    write(workspace, settings, hit("open", key, at, agent=IPHONE_MAIL, ip="172.224.226.7"),
          hit("open", key, at + timedelta(days=1), agent=IPHONE_MAIL, ip="2a02:26f7:b3c0:4000::9"),
          hit("open", key, at + timedelta(days=2), agent=IPHONE_MAIL, ip="17.1.2.3"),
          hit("open", key, at + timedelta(days=3), agent=IPHONE_MAIL))  # fmt: skip
    mpp = ("machine_open", "Apple Mail Privacy Protection (Apple proxy address)")
    # The operator's file replaces the shipped one: 17.0.0.0/8 is no longer listed.
    assert stored(workspace) == [mpp, mpp, ("open", None), ("open", None)]
    csv.unlink()
    with pytest.raises(MailerError, match="apple_proxy_ranges_file: cannot read"):
        write(workspace, settings, hit("open", key, at + timedelta(days=4)))
    write(workspace, workspace.settings,  # the shipped ranges: Apple's 17.0.0.0/8
          hit("open", key, at + timedelta(days=5), agent=IPHONE_MAIL, ip="17.1.2.3"))  # fmt: skip
    assert stored(workspace)[-1] == mpp


def test_over_http_clicks_after_the_honeypot_in_later_batches_are_a_machines(
    sent: Sent, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    workspace, urls = sent  # flush_size = 1: every request is a batch of its own
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]

    def get(base: str, url: str, then: int) -> None:
        httpx.get(at(base, url), headers={"User-Agent": CHROME})
        deadline = time.monotonic() + 20  # written by the writer process: wait for it
        while len(stored(workspace)) < then:
            assert time.monotonic() < deadline, stored(workspace)
            time.sleep(0.02)

    with serve(create_app(workspace)) as base:
        get(base, urls["open"], 1)
        get(base, urls["honeypot"], 2)
        workspace.clock.advance(timedelta(seconds=20))  # type: ignore[attr-defined]
        get(base, urls["shop"], 3)
        workspace.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
        get(base, urls["cups"], 4)
        get(base, urls["open"], 5)
    assert stored(workspace) == [
        ("machine_open", "pixel fetched in the same second as a machine's click"),
        ("machine_click", "honeypot link clicked"),
        ("machine_click", "clicked 20 s after the honeypot link"),
        ("machine_click", "clicked 50 s after the honeypot link"),
        ("machine_open", "pixel fetched in the same second as a machine's click"),
    ]


def test_a_messages_stored_hits_are_read_through_its_own_index(sent: Sent) -> None:
    """Every read of the batch's messages' stored hits walks ix_events_outbox_id_occurred_at
    (on SQLite even without statistics), not every open of every message by kind; which links
    they clicked is read from their clicks' own index, not from every open's or click's row."""
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    at = sent_at + timedelta(minutes=5)
    write(workspace, workspace.settings, hit("open", key, at))
    reads: list[tuple[str, Any]] = []

    def remember(connection: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "events.outbox_id IN" in statement.replace(
                "= ANY", "IN"):  # fmt: skip
            reads.append((statement, parameters))

    event.listen(workspace.engine, "before_cursor_execute", remember)
    try:  # a click (every open in reach is read) and an open (only the last that counts)
        write(workspace, workspace.settings, hit("click", key, at + timedelta(seconds=30),
                                                 links["https://shop.example/cups"]),
              hit("open", key, at + timedelta(seconds=40)))  # fmt: skip
        write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=50)))
    finally:
        event.remove(workspace.engine, "before_cursor_execute", remember)
    assert len(reads) >= 5
    with workspace.engine.begin() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if not sqlite:
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for statement, parameters in reads:
            plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(
                f"EXPLAIN {'QUERY PLAN ' if sqlite else ''}{statement}", parameters))  # fmt: skip
            if "events.link IS NOT NULL" in statement:  # which links were clicked
                assert ("USING INDEX ix_events_clicks (outbox_id=?" if sqlite
                        else "Index Only Scan using ix_events_clicks") in plan, plan  # fmt: skip
            elif sqlite:
                assert "USING INDEX ix_events_outbox_id_occurred_at (outbox_id=?" in plan, plan
            elif "occurred_at" in statement.split("WHERE")[1]:  # PostgreSQL's planner decides
                assert "ix_events_outbox_id_occurred_at" in plan, plan
    assert any("events.link IS NOT NULL" in statement for statement, _ in reads)


def events_read(workspace: Workspace) -> AbstractContextManager[list[str]]:
    """The SELECTs of stored events (and of pixels fetched again, counted) that the `with`
    block runs."""
    reads: list[str] = []

    def remember(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        read = "FROM events" in statement or "FROM event_rollups" in statement
        if statement.lstrip().startswith("SELECT") and read:
            reads.append(statement)

    @contextlib.contextmanager
    def listening() -> Iterator[list[str]]:
        event.listen(workspace.engine, "before_cursor_execute", remember)
        try:
            yield reads
        finally:
            event.remove(workspace.engine, "before_cursor_execute", remember)

    return listening()


def test_the_writers_memory_spares_the_reads_of_a_refetch_chain_and_changes_no_verdict(
    sent: Sent,
) -> None:
    """A pixel fetched every 2 s, batch after batch, through one writer's memory: the same
    events and score as without it (test_a_pixel_fetched_25_times_is_one_open_and_scores_once),
    and once the memory holds the last open, only the stored clicks are read."""
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    at = sent_at + timedelta(minutes=5)
    settings, memory = scoring(workspace), Memory()
    fetches = [hit("open", key, at + timedelta(seconds=2 * n)) for n in range(25)]
    write(workspace, settings, *fetches[:4], memory=memory)
    with events_read(workspace) as reads:
        for start in range(4, 25, 3):
            write(workspace, settings, *fetches[start : start + 3], memory=memory)
    assert stored(workspace) == [("open", None)]
    assert refetches(workspace) == 24
    assert score(workspace, at) == 1.0
    assert len(reads) == 7, "\n\n".join(reads)  # one a batch
    # Past the minute the memory cannot decide: the database is read, and says a new open.
    write(workspace, settings, hit("open", key, at + timedelta(minutes=3)), memory=memory)
    assert stored(workspace)[-1] == ("open", None)


def test_two_writers_memories_give_the_databases_verdicts(sent: Sent) -> None:
    """Two instances' writers on one database, each with its memory: what the other wrote
    (a refetch, a machine's click) is read from the database where the memory cannot know
    it, and a rolled-back batch is not remembered."""
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    at = sent_at + timedelta(hours=1)
    one, two = Memory(), Memory()
    write(workspace, workspace.settings, hit("open", key, at), memory=one)
    write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=30)), memory=two)
    # one remembers `at`, 70 s ago: the database knows the refetch at 30 s that two wrote.
    write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=70)), memory=one)
    # two's scanner clicks; one's next fetch is within a minute of what one remembers, but
    # beside a machine's click: rule 7, as the database says.
    scanner = hit("click", key, at + timedelta(seconds=100), links["https://shop.example/cups"],
                  agent="Barracuda Sentinel (EE)")  # fmt: skip
    write(workspace, workspace.settings, scanner, memory=two)
    write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=110)), memory=one)
    assert stored(workspace) == [
        ("open", None),
        ("machine_click", "link scanner (Barracuda)"),
        ("machine_open", "pixel fetched 10 s after a machine's click"),
    ]
    assert refetches(workspace) == 2  # at 30 s (two's) and 70 s (40 s after it)
    later = at + timedelta(days=1)
    with pytest.raises(RuntimeError, match="rolled back"), workspace.engine.begin() as connection:
        record_hits(connection, workspace.settings, workspace.key, [hit("open", key, later)], one)
        raise RuntimeError("rolled back")
    one.drop()
    write(workspace, workspace.settings, hit("open", key, later + timedelta(seconds=5)), memory=one)
    assert stored(workspace)[-1] == ("open", None)  # the rolled-back open was never stored


def test_a_message_the_writer_remembers_keeps_no_hit_once_its_person_is_erased(sent: Sent) -> None:
    """The memory keeps a sent message's fixed facts, but whether its person is still there
    is read for every batch."""
    workspace, _ = sent
    key, sent_at, _ = message(workspace)
    memory, at = Memory(), sent_at + timedelta(hours=1)
    write(workspace, workspace.settings, hit("open", key, at), memory=memory)
    assert memory.messages and stored(workspace) == [("open", None)]
    with workspace.engine.begin() as connection:
        email = connection.scalar(select(contacts.c.email))
        erase_person(connection, workspace.key, email, at + timedelta(minutes=1))
    with workspace.engine.begin() as connection:
        hits = [hit("open", key, at + timedelta(minutes=2))]
        assert record_hits(connection, workspace.settings, workspace.key, hits, memory) == 0
    assert stored(workspace) == []  # erasure removed their events; none came back


def test_a_persons_click_stored_beside_the_opens_leaves_the_memory_in_use(sent: Sent) -> None:
    """A person's click cannot make the opens a machine's (only a machine's click, a burst or
    the honeypot can): the writer keeps deciding refetches from its memory after it."""
    workspace, _ = sent
    key, sent_at, links = message(workspace)
    at, memory = sent_at + timedelta(hours=1), Memory()
    write(workspace, workspace.settings, hit("click", key, at, links["https://shop.example/cups"]),
          memory=memory)  # fmt: skip
    write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=5)), memory=memory)
    with events_read(workspace) as reads:
        for n in range(2, 6):
            write(workspace, workspace.settings, hit("open", key, at + timedelta(seconds=5 * n)),
                  memory=memory)  # fmt: skip
    assert stored(workspace) == [("click", None), ("open", None)]
    assert refetches(workspace) == 4
    assert len(reads) == 4, "\n\n".join(reads)  # the stored clicks only, one read a batch
