"""The recipient's side of the tracking endpoint over real HTTP: a message is delivered through a
real SMTP server, then its pixel, links and unsubscribe URLs are requested from uvicorn."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path

import httpx
from sqlalchemy import select, text

from mailer.store.tables import consent_entries, consent_status, events, suppressions
from mailer.tokens import TokenKeys, sign
from mailer.tracking.app import create_app
from mailer.workspace import Workspace
from tests.conftest import SECRET
from tests.delivery.smtp_server import ScriptedSmtpServer
from tests.helpers import opens_recorded
from tests.tracking.conftest import at, free_port

Serve = Callable[..., AbstractContextManager[str]]
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
          "Gecko) Chrome/126.0.0.0 Safari/537.36")  # fmt: skip


def recorded(workspace: Workspace) -> list[tuple[str, dict[str, object]]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(
            select(events.c.kind, events.c.properties)
            .where(events.c.kind != "website").order_by(events.c.id)
        )  # fmt: skip
        return [(row.kind, row.properties) for row in rows]


def test_the_open_pixel_is_a_43_byte_gif_that_records_a_human_open(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]  # not instant
    with serve(create_app(workspace)) as base:
        answer = httpx.get(at(base, urls["open"]), headers={"User-Agent": CHROME})
        head = httpx.head(at(base, urls["open"]), headers={"User-Agent": CHROME})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"
    assert len(answer.content) == 43 and answer.content.startswith(b"GIF89a")
    assert "no-store" in answer.headers["cache-control"] and head.status_code == 200
    kinds = [(kind, properties.get("machine")) for kind, properties in recorded(workspace)]
    assert kinds == [("open", None), ("machine_open", "HEAD request")]


def test_a_click_redirects_to_the_url_in_the_message_and_is_recorded(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]  # not instant
    with serve(create_app(workspace)) as base:
        answer = httpx.get(at(base, urls["cups"]), headers={"User-Agent": CHROME})
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://shop.example/cups"
    [(kind, properties)] = recorded(workspace)
    assert kind == "click" and properties["link"] == 1
    assert properties["url"] == "https://shop.example/cups"
    assert str(properties["ip"]).startswith("127.0.0.0/24#")  # never the whole address


def test_a_click_on_the_hidden_honeypot_link_marks_the_clicks_around_it_as_a_machines(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    workspace.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    with serve(create_app(workspace)) as base:
        shop = httpx.get(at(base, urls["shop"]), headers={"User-Agent": CHROME})
        trap = httpx.get(at(base, urls["honeypot"]), headers={"User-Agent": CHROME})
    assert shop.status_code == 302 and trap.status_code == 200 and "location" not in trap.headers
    assert [(kind, properties["machine"]) for kind, properties in recorded(workspace)] == [
        ("machine_click", "clicked 0 s before the honeypot link"),
        ("machine_click", "honeypot link clicked"),
    ]


def test_forged_malformed_and_foreign_tokens_get_a_404_page_never_a_redirect(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    token = urls["shop"].rsplit("/", 1)[1]
    version, payload, mac = token.split(".")
    keys = workspace.renderer.keys
    old_key = TokenKeys(SECRET.encode(), version=9, oldest=9)
    bad = [
        "nonsense", token[:-3], f"{version}.{payload}.{'A' * 22}",  # truncated, forged MAC
        f"{version}.{payload}x.{mac}", f"9.{payload}.{mac}",  # altered payload, unknown version
        sign(old_key, "click", "m1", 0),  # signed with a key this server does not hold
        urls["open"].rsplit("/", 1)[1].removesuffix(".gif"),  # an open token used as a click
        sign(keys, "click", "m999999", 0),  # genuine, but names no message
        sign(keys, "click", "m1", 7),  # genuine message, no such link
        sign(keys, "click", "preview-1", 0), "%00%0d%0a", "a" * 5000,
    ]
    with serve(create_app(workspace)) as base:
        answers = [httpx.get(f"{base}/c/{value}") for value in bad]
        pixel = httpx.get(f"{base}/o/forged.gif")
        unsubscribe = httpx.get(f"{base}/u/forged")
    assert [a.status_code for a in answers] == [404] * len(bad)
    assert all("location" not in a.headers for a in answers)
    assert "does not work" in answers[0].text
    assert pixel.status_code == 200 and unsubscribe.status_code == 404
    assert recorded(workspace) == []


def ledger(workspace: Workspace) -> list[tuple[str, str, str]]:
    with workspace.engine.connect() as connection:
        rows = connection.execute(select(consent_entries.c.purpose, consent_entries.c.action,
                                         consent_entries.c.source)
                                  .where(consent_entries.c.source == "unsubscribe"))  # fmt: skip
        return [tuple(row) for row in rows]  # type: ignore[misc]


def newsletter_status(workspace: Workspace) -> str:
    with workspace.engine.connect() as connection:
        return str(connection.scalar(select(consent_status.c.status)
                                     .where(consent_status.c.purpose == "newsletter")))  # fmt: skip


def test_one_click_unsubscribe_is_committed_before_the_answer_and_repeatable(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        page = httpx.get(at(base, urls["unsubscribe"]))
        assert page.status_code == 200 and newsletter_status(workspace) == "confirmed"
        assert 'value="unsubscribe"' in page.text and "Unsubscribe from Newsletter" in page.text
        empty = httpx.post(at(base, urls["unsubscribe"]))
        assert empty.status_code == 400 and newsletter_status(workspace) == "confirmed"
        body = {"List-Unsubscribe": "One-Click"}
        first = httpx.post(at(base, urls["unsubscribe"]), data=body)
        assert first.status_code == 200
        assert newsletter_status(workspace) == "withdrawn"  # before any other request
        again = httpx.post(at(base, urls["unsubscribe"]), data=body)
    assert again.status_code == 200
    assert ledger(workspace) == [("newsletter", "withdrawn", "unsubscribe")]  # once


def test_the_page_button_can_unsubscribe_from_everything(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        done = httpx.post(at(base, urls["unsubscribe"]), data={"action": "all"})
        shown = httpx.get(at(base, urls["unsubscribe"]))
    assert done.status_code == 200 and 'role="status"' in done.text
    assert "unsubscribed from everything" in shown.text
    with workspace.engine.connect() as connection:
        reason = connection.scalar(select(suppressions.c.reason))
    assert reason == "unsubscribed"


def test_health_and_metrics(sent: tuple[Workspace, dict[str, str]], serve: Serve) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        httpx.get(at(base, urls["open"]), headers={"User-Agent": CHROME})
        deadline = time.monotonic() + 20  # flush_size = 1: written at once, by a new process
        while "mailer_events_recorded_total 1" not in (
                metrics := httpx.get(f"{base}/metrics").text):  # fmt: skip
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        # Written: none is answered and unwritten (while it was, flush_size 1 was reached).
        health = httpx.get(f"{base}/healthz").json()
    assert health["status"] == "ok"
    assert 'mailer_requests_total{code="2xx",route="/o/{token}.gif"}' in metrics
    assert "mailer_events_recorded_total 1.0" in metrics
    assert 'mailer_messages_total{campaign="welcome",result="sent"}' in metrics


def pixel_count(base: str) -> float:
    """mailer_requests_total of the pixel route (2xx), as /metrics says it."""
    series = 'mailer_requests_total{code="2xx",route="/o/{token}.gif"} '
    lines = httpx.get(f"{base}/metrics").text.splitlines()
    return sum(float(line.removeprefix(series)) for line in lines if line.startswith(series))


def test_each_pixel_request_is_counted_once_by_its_route_whatever_its_token(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    """The pixel is answered before Starlette's middleware (app.TrackingApp) and counts
    itself: once per request, genuine, forged or HEAD, under the route template."""
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        before = pixel_count(base)
        answers = [httpx.get(at(base, urls["open"])), httpx.get(f"{base}/o/forged.gif"),
                   httpx.head(at(base, urls["open"]))]  # fmt: skip
        after = pixel_count(base)
    assert [a.status_code for a in answers] == [200] * 3
    assert [len(a.content) for a in answers] == [43, 43, 0]
    assert all(a.headers["pragma"] == "no-cache" for a in answers)
    assert after - before == 3


def test_sigterm_during_load_loses_no_recorded_open(
    sent: tuple[Workspace, dict[str, str]], project: Path, environ: dict[str, str]
) -> None:
    workspace, urls = sent
    port = free_port()
    environment = {**os.environ, **environ, "MAILER_TRACKING__PORT": str(port),
                   "MAILER_TRACKING__FLUSH_EVERY": '"10s"'}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "mailer", "serve"], cwd=project,
                              env=environment, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"{base}/healthz")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
            time.sleep(0.05)
    answered = 0
    lock = threading.Lock()

    def load() -> None:
        nonlocal answered
        with httpx.Client() as client:
            for _ in range(400):
                try:
                    reply = client.get(at(base, urls["open"]), headers={"User-Agent": CHROME})
                except httpx.TransportError:
                    return  # the server has stopped listening
                if reply.status_code == 200:
                    with lock:
                        answered += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30  # under load, the first answers can take a while
    while not answered and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # SIGTERM while requests are in flight
    server.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    server.wait(timeout=30)
    assert server.returncode == 0
    assert answered > 0 and opens_recorded(workspace) == answered  # stored, or refetches


def test_the_preference_page_rejoins_a_double_opt_in_list_only_through_confirmation(
    sent: tuple[Workspace, dict[str, str]], serve: Serve, smtp_server: ScriptedSmtpServer
) -> None:
    workspace, urls = sent
    with serve(create_app(workspace)) as base:
        httpx.post(at(base, urls["unsubscribe"]), data={"action": "leave:newsletter"})
        assert newsletter_status(workspace) == "withdrawn"
        page = httpx.post(at(base, urls["unsubscribe"]), data={"action": "join:newsletter"})
        assert "We emailed you a link: click it to confirm Newsletter." in page.text
        assert newsletter_status(workspace) == "withdrawn"  # until the emailed link is clicked
        joined = httpx.post(at(base, urls["unsubscribe"]), data={"action": "join:leads"})
        assert "You are subscribed to Leads." in joined.text  # single opt-in
        deadline = time.monotonic() + 5
        while len(smtp_server.received) < 2:  # the welcome message, then the confirmation
            assert time.monotonic() < deadline, "no confirmation email"
            time.sleep(0.02)
    confirmation = email.message_from_bytes(smtp_server.received[1].data, policy=default_policy)
    assert confirmation["Subject"] == "Please confirm your subscription to Newsletter"
    with workspace.engine.connect() as connection:
        leads = select(consent_status.c.status).where(consent_status.c.purpose == "leads")
        assert connection.scalar(leads) == "granted"


def test_look_alike_spellings_of_a_genuine_token_get_the_same_404(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    workspace, urls = sent
    click, unsubscribe = (urls[kind].rsplit("/", 1)[1] for kind in ("shop", "unsubscribe"))
    spellings = [
        lambda token: "0" + token,  # 01.
        lambda token: "\u0661" + token[1:],  # Arabic-Indic one
        lambda token: "\u0967" + token[1:],  # Devanagari one
        lambda token: token + "%0A",  # a trailing newline
    ]
    with serve(create_app(workspace)) as base:
        answers = [httpx.get(f"{base}/{path}/{spell(token)}")
                   for path, token in (("c", click), ("u", unsubscribe))
                   for spell in spellings]  # fmt: skip
        genuine = httpx.get(f"{base}/c/{click}")
    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert all("location" not in answer.headers for answer in answers)
    assert genuine.status_code in (302, 303, 307)


def test_a_click_waits_for_room_like_a_pixel_while_the_database_refuses_writes(
    sent: tuple[Workspace, dict[str, str]], serve: Serve
) -> None:
    """Answered-but-unwritten hits stay under flush_size (1 here), clicks included: a click
    flood cannot grow what a SIGKILL would lose. The click is answered once there is room."""
    workspace, urls = sent
    answers: list[httpx.Response] = []

    def click() -> None:  # it waits for room on purpose: more than httpx's 5 s on a busy machine
        answers.append(httpx.get(at(base, urls["shop"]), timeout=60))

    with serve(create_app(workspace)) as base:
        with workspace.engine.begin() as connection:  # the events table is gone for a while
            connection.execute(text("ALTER TABLE events RENAME TO events_away"))
        assert httpx.get(at(base, urls["open"])).status_code == 200  # fills flush_size
        clicking = threading.Thread(target=click)
        clicking.start()
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            assert answers == [], "a click was answered with no room to keep it"
            time.sleep(0.05)
        with workspace.engine.begin() as connection:
            connection.execute(text("ALTER TABLE events_away RENAME TO events"))
        clicking.join()
        assert [answer.status_code for answer in answers] == [302]
        deadline = time.monotonic() + 20  # the event writer is another process
        while (stored := kinds_stored(workspace)) != {"open", "click"}:
            assert time.monotonic() < deadline, stored
            time.sleep(0.05)


def kinds_stored(workspace: Workspace) -> set[str]:
    """open and click, whether judged a person's or a machine's (machine_open, ...)."""
    with workspace.engine.connect() as connection:
        kinds = connection.scalars(select(events.c.kind).distinct())
        return {kind.removeprefix("machine_") for kind in kinds}
