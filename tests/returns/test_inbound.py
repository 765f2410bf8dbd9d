"""`mailer inbound` over real SMTP: what it refuses at RCPT, each message on disk before its 250,
then processed as ingest does (a bounce suppresses, a mailto: unsubscribe leaves the list once,
an ARF report is a complaint), junk kept and counted, and new/ processed at the next start.
Real databases; the fixtures' tokens name outbox row 1, Ada's welcome message."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailer.config import load_settings
from mailer.consent.records import lock_ledger
from mailer.delivery.sink import trace_headers
from mailer.metrics import REGISTRY
from mailer.returns.inbound import Listening, start_inbound
from mailer.store.tables import consent_entries, suppressions
from mailer.tokens import sign
from mailer.workspace import Workspace
from tests.conftest import NOW, SECRET
from tests.delivery.smtp_server import LOOPBACK, free_port
from tests.helpers import count
from tests.returns.test_effects import history, sent, standing

FIXTURES = Path(__file__).parent / "fixtures"
BOUNCES = "bounces+1.bTE.sMn-QizeqpNRJUU2L32w4w@acme.example"  # the postfix fixture's, outbox 1
FBL = "fbl@acme.example"


@pytest.fixture
def project(project: Path) -> Path:
    with (project / "settings.toml").open("a") as settings:
        settings.write(f'\n[inbound]\nfbl_address = "{FBL}"\n')
    return project


@pytest.fixture
def ada(workspace: Workspace, project: Path) -> int:
    """Ada, on the newsletter and the leads list, was sent the welcome message (outbox 1)."""
    sent(workspace, project, "leads", ["ada@example.com"])
    message = sent(workspace, project, "newsletter", ["ada@example.com"])["ada@example.com"]
    assert message == 1  # the fixtures' tokens name this row
    return message


@pytest.fixture
def listener(workspace: Workspace) -> Iterator[Listening]:
    listening = start_inbound(workspace, LOOPBACK, free_port())
    yield listening
    listening.stop()


def spool(workspace: Workspace, folder: str) -> list[Path]:
    return sorted((workspace.settings.path(".mailer/inbound") / folder).iterdir())


def deliver(listening: Listening, recipient: str, content: bytes, sender: str = "") -> str:
    """One SMTP transaction (MAIL FROM:<> as a bounce has): the reply to DATA."""
    with smtplib.SMTP(LOOPBACK, listening.controller.port) as client:
        client.ehlo()
        client.mail(sender)
        code, reply = client.rcpt(recipient)
        assert code == 250, reply
        code, reply = client.data(on_the_wire(content))
        return f"{code} {reply.decode()}"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def on_the_wire(content: bytes) -> bytes:
    """`content` with CRLF line ends, as SMTP carries it (smtplib sends bytes as they are)."""
    wire = re.sub(rb"\r?\n", b"\r\n", content)
    return wire if wire.endswith(b"\r\n") else wire + b"\r\n"  # DATA ends a line


def test_a_dsn_to_the_verp_address_suppresses_the_recipient(
    workspace: Workspace, ada: int, listener: Listening
) -> None:
    reply = deliver(listener, BOUNCES, fixture("postfix_user_unknown.eml"))
    assert reply.startswith("250 OK: stored as ")
    listener.handler.settle()
    assert standing(workspace, "ada@example.com")[1] == "hard_bounce"
    [processed] = spool(workspace, "cur")
    assert reply.endswith(processed.name) and spool(workspace, "new") == []
    assert listener.handler.counts == {"processed": 1, "unparseable": 0, "failed": 0}
    assert history(workspace, "ada@example.com")[-1]["evidence"]["source"] == "inbound"


def test_a_mailto_unsubscribe_leaves_that_messages_list_once(
    workspace: Workspace, ada: int, listener: Listening
) -> None:
    address = f"unsubscribe+{sign(workspace.renderer.keys, 'unsubscribe', f'm{ada}')}@acme.example"
    request = b"From: ada@example.com\r\nSubject: unsubscribe\r\n\r\nplease\r\n"
    deliver(listener, address, request, sender="ada@example.com")
    listener.handler.settle()
    assert standing(workspace, "ada@example.com") == (
        {"newsletter": "withdrawn", "leads": "granted"}, None)  # fmt: skip
    entries = count(workspace, consent_entries)
    last = history(workspace, "ada@example.com")[-1]
    assert (last["list"], last["source"]) == ("newsletter", "unsubscribe")
    assert last["evidence"]["from"] == "ada@example.com"

    deliver(listener, address, request.replace(b"please", b"please, again"), "ada@example.com")
    deliver(listener, address, request, sender="ada@example.com")  # the very same mail
    listener.handler.settle()
    assert count(workspace, consent_entries) == entries  # one withdrawal, however many mails
    assert listener.handler.counts["processed"] == 3


def test_an_arf_report_to_the_feedback_address_is_a_complaint(
    workspace: Workspace, ada: int, listener: Listening
) -> None:
    deliver(listener, FBL, fixture("arf_microsoft_jmrp.eml"), sender="staff@hotmail.example")
    listener.handler.settle()
    assert standing(workspace, "ada@example.com") == (
        {"newsletter": "withdrawn", "leads": "withdrawn"}, "complained")  # fmt: skip


def test_what_is_not_ours_is_refused_at_rcpt(workspace: Workspace, listener: Listening) -> None:
    unsubscribe_token = BOUNCES.replace("bounces+", "unsubscribe+")  # a bounce token elsewhere
    refused = {
        "postmaster@acme.example": 550, "news@acme.example": 550,
        "bounces+1.bTE.sMn-QizeqpNRJUU2L32w4x@acme.example": 550,  # forged: does not verify
        unsubscribe_token: 550,
        BOUNCES.replace("acme.example", "elsewhere.example"): 550,
    }  # fmt: skip
    with smtplib.SMTP(LOOPBACK, listener.controller.port) as client:
        client.ehlo()
        client.mail("")
        replies = {address: client.rcpt(address) for address in refused}
        assert client.rcpt(BOUNCES)[0] == 250 and client.rcpt(FBL.upper())[0] == 250
    assert {address: code for address, (code, _) in replies.items()} == refused
    assert replies["news@acme.example"][1].startswith(b"5.1.1")
    assert replies[unsubscribe_token][1].startswith(b"5.1.1")
    relay = replies[BOUNCES.replace("acme.example", "elsewhere.example")][1]
    assert relay.startswith(b"5.7.1 Relaying denied")
    assert spool(workspace, "new") == [] and spool(workspace, "cur") == []


def unparseable_total() -> float:
    value = REGISTRY.get_sample_value("mailer_inbound_messages_total", {"result": "unparseable"})
    return value or 0.0


def test_junk_is_kept_in_unparseable_and_counted(
    workspace: Workspace, ada: int, listener: Listening
) -> None:
    before = unparseable_total()
    deliver(listener, BOUNCES, fixture("junk.eml"))
    deliver(listener, FBL, fixture("truncated_mime.eml"))
    listener.handler.settle()
    kept = spool(workspace, "unparseable")
    assert [path.read_bytes().split(b"\r\n", 2)[2] for path in kept] == [
        on_the_wire(fixture("junk.eml")), on_the_wire(fixture("truncated_mime.eml")),
    ]  # fmt: skip
    assert listener.handler.counts == {"processed": 0, "unparseable": 2, "failed": 0}
    assert unparseable_total() == before + 2
    assert count(workspace, suppressions) == 0


def test_the_message_is_on_disk_before_the_250(
    workspace: Workspace, ada: int, listener: Listening
) -> None:
    """Processing waits on the ledger's lock, held here; the 250 comes all the same."""
    with workspace.engine.begin() as connection:
        lock_ledger(connection)
        reply = deliver(listener, BOUNCES, fixture("postfix_user_unknown.eml"))
        assert reply.startswith("250 ")
        [waiting] = spool(workspace, "new")
        assert reply.endswith(waiting.name) and spool(workspace, "cur") == []
        assert waiting.read_bytes().endswith(on_the_wire(fixture("postfix_user_unknown.eml")))
    listener.handler.settle()
    assert [path.name for path in spool(workspace, "cur")] == [waiting.name]
    assert standing(workspace, "ada@example.com")[1] == "hard_bounce"


def test_a_message_left_in_new_is_processed_at_start(workspace: Workspace, ada: int) -> None:
    """Accepted, then the process died before processing it: the next start does it."""
    root = workspace.settings.path(".mailer/inbound")
    (root / "new").mkdir(parents=True)
    (root / "tmp").mkdir()
    left = root / "new" / "20261123T095959000000Z.1_1.0a0b.eml"
    left.write_bytes(trace_headers("", BOUNCES) + fixture("postfix_user_unknown.eml"))
    (root / "tmp" / "half.eml").write_bytes(b"Return-Path: <>\r\nDeliv")  # never answered 250
    listening = start_inbound(workspace, LOOPBACK, free_port())
    try:
        listening.handler.settle()
    finally:
        listening.stop()
    assert spool(workspace, "new") == [] and spool(workspace, "tmp") == []
    assert [path.name for path in spool(workspace, "cur")] == [left.name]
    with workspace.engine.connect() as connection:
        assert connection.scalar(select(suppressions.c.reason)) == "hard_bounce"


def process_environment(database_url: str, port: int) -> dict[str, str]:
    return {**os.environ, "MAILER_SECRET_KEY": SECRET, "MAILER_DATABASE_URL": database_url,
            "MAILER_NOW": NOW.isoformat(), "MAILER_INBOUND__PORT": str(port)}  # fmt: skip


def test_the_command_listens_until_sigterm_and_says_what_it_did(
    workspace: Workspace, ada: int, project: Path, database_url: str
) -> None:
    port = free_port()
    inbound = subprocess.Popen([sys.executable, "-m", "mailer", "inbound"], cwd=project,
                               env=process_environment(database_url, port),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        assert inbound.stdout is not None
        first = inbound.stdout.readline()
        assert first.startswith(f"mailer inbound: listening on 127.0.0.1:{port} for ")
        assert "unsubscribe+…@acme.example, fbl@acme.example" in first
        with smtplib.SMTP(LOOPBACK, port) as client:
            client.sendmail("", [BOUNCES], on_the_wire(fixture("postfix_user_unknown.eml")))
        inbound.send_signal(signal.SIGTERM)
        rest, errors = inbound.communicate(timeout=60)
    finally:
        inbound.kill()
    assert inbound.returncode == 0, errors
    assert rest == "mailer inbound: stopped; 1 processed, 0 unparseable, 0 failed\n"
    assert standing(workspace, "ada@example.com")[1] == "hard_bounce"


def test_run_listens_when_inbound_is_enabled(
    workspace: Workspace, ada: int, project: Path, database_url: str
) -> None:
    port = free_port()
    environment = process_environment(database_url, port) | {
        "MAILER_INBOUND__ENABLED": "true", "MAILER_SMTP__PORT": str(free_port()),
    }  # fmt: skip
    daemon = subprocess.Popen([sys.executable, "-m", "mailer", "run", "--no-serve", "--log-json"],
                              cwd=project, env=environment, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert daemon.stderr is not None
        events = [json.loads(daemon.stderr.readline())]
        while events[-1]["event"] != "started":  # the listener is up before this line
            events.append(json.loads(daemon.stderr.readline()))
        with smtplib.SMTP(LOOPBACK, port) as client:
            client.sendmail("", [FBL], on_the_wire(fixture("arf_microsoft_jmrp.eml")))
        while events[-1]["event"] != "inbound":
            events.append(json.loads(daemon.stderr.readline()))
        daemon.send_signal(signal.SIGTERM)
        _, rest = daemon.communicate(timeout=60)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, rest
    assert events[-1]["result"] == "complaint: complaint: withdrawn from every list and suppressed"
    assert standing(workspace, "ada@example.com")[1] == "complained"


def test_a_message_over_max_size_is_refused_and_not_stored(
    workspace: Workspace, project: Path, environ: dict[str, str]
) -> None:
    small = load_settings(project / "settings.toml",
                          environ=environ | {"MAILER_INBOUND__MAX_SIZE": "2048"})  # fmt: skip
    limited = Workspace(small, workspace.clock)
    listening = start_inbound(limited, LOOPBACK, free_port())
    try:
        with smtplib.SMTP(LOOPBACK, listening.controller.port) as client:
            client.ehlo()
            client.mail("")
            client.rcpt(FBL)
            code, reply = client.data(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40)
            assert code == 552, reply
    finally:
        listening.stop()
        limited.close()
        limited.close()
    assert spool(workspace, "new") == [] and spool(workspace, "tmp") == []


def test_the_command_serves_its_metrics_when_asked(
    workspace: Workspace, ada: int, project: Path, database_url: str
) -> None:
    """[inbound] metrics_port: `mailer inbound` alone has /metrics, counting what it did."""
    port, metrics_port = free_port(), free_port()
    environment = process_environment(database_url, port) | {
        "MAILER_INBOUND__METRICS_PORT": str(metrics_port)}  # fmt: skip
    inbound = subprocess.Popen([sys.executable, "-m", "mailer", "inbound"], cwd=project,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        assert inbound.stdout is not None
        assert inbound.stdout.readline().startswith("mailer inbound: listening on ")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert inbound.stdout.readline() == f"mailer inbound: metrics on {url}\n"
        with smtplib.SMTP(LOOPBACK, port) as client:
            client.sendmail("", [BOUNCES], on_the_wire(fixture("postfix_user_unknown.eml")))
        processed = 'mailer_inbound_messages_total{result="processed"} 1.0'
        deadline = time.monotonic() + 30
        while processed not in (text := httpx.get(url).text):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        inbound.send_signal(signal.SIGTERM)
        _, errors = inbound.communicate(timeout=60)
    finally:
        inbound.kill()
    assert inbound.returncode == 0, errors
    with pytest.raises(httpx.ConnectError):  # stopped with the listener
        httpx.get(url)


def test_a_metrics_port_in_use_is_one_line_saying_what_to_do(
    project: Path, database_url: str
) -> None:
    with socket.create_server((LOOPBACK, 0)) as taken:
        environment = process_environment(database_url, free_port()) | {
            "MAILER_INBOUND__METRICS_PORT": str(taken.getsockname()[1])}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "mailer", "inbound"], cwd=project,
                              env=environment, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "the port is in use" in done.stderr and "[inbound] metrics_port" in done.stderr
    assert "Traceback" not in done.stderr
