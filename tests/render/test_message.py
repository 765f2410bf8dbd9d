from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mailer.clock import FrozenClock
from mailer.config import load_settings
from mailer.contacts.model import Contact
from mailer.render.message import MessageRenderer, RenderError
from mailer.tokens import verify
from tests.conftest import SECRET
from tests.render.conftest import ADA


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def step(renderer: MessageRenderer, index: int = 0):  # type: ignore[no-untyped-def]
    return renderer.settings.campaigns["welcome"].steps[index]


def test_a_message_has_both_parts_inlined_css_and_the_footer(renderer: MessageRenderer) -> None:
    message = parsed(renderer.render("welcome", step(renderer), ADA, "42").data)
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert '<p style="color: #333;">Hello Ada</p>' in html
    assert "Hello Ada" in text and "Bristol BS1 4DJ" in text and "Unsubscribe" in text
    assert "Bristol BS1 4DJ" in html


def test_links_are_tracked_by_index_except_mailto_anchors_and_notrack(
    renderer: MessageRenderer,
) -> None:
    rendered = renderer.render("welcome", step(renderer), ADA, "42")
    assert rendered.links == ["https://shop.example/beans?a=1&b=2", "honeypot:"]  # once each
    base = renderer.settings.tracking.base_url
    # The hidden honeypot first, then the link twice (css-inline re-quotes the second).
    assert rendered.html.count(f'href="{base}/c/') == 3
    token = rendered.html.split(f'href="{base}/c/')[2].split('"')[0]
    assert verify(renderer.keys, "click", token) == ["42", "0"]
    for untouched in ('href="mailto:hello@acme.example"', 'href="#top"',
                      'data-notrack="" href="https://shop.example/private"'):  # fmt: skip
        assert untouched in rendered.html
    unsubscribe = rendered.html.split('href="')[-1].split('"')[0]
    assert urlsplit(unsubscribe).path.startswith("/u/")  # our own links are not re-tracked
    assert f'<img src="{base}/o/' in rendered.html


def test_the_text_template_is_used_and_its_links_tracked(renderer: MessageRenderer) -> None:
    rendered = renderer.render("welcome", step(renderer, 1), ADA, "43")
    base = renderer.settings.tracking.base_url
    assert rendered.text.startswith(f"Tips for ada@example.com: {base}/c/")
    assert rendered.links == ["https://shop.example/tips", "honeypot:"]
    assert f"{base}/c/" in rendered.html and rendered.text.count("/c/") == 1  # not the honeypot


def test_no_track_leaves_links_readable(renderer: MessageRenderer) -> None:
    rendered = renderer.render("welcome", step(renderer), ADA, "42", track=False)
    assert 'href="https://shop.example/beans?a=1&amp;b=2"' in rendered.html
    assert "/o/" not in rendered.html


def test_the_contacts_locale_picks_the_template_variant(renderer: MessageRenderer) -> None:
    giulia = Contact(email="giulia@example.it", first_name="Giulia", locale="it_IT")
    assert "Ciao Giulia" in renderer.render("welcome", step(renderer), giulia, "1").html
    zoe = Contact(email="zoe@example.fr", first_name="Zoé", locale="fr")
    assert "Hello Zoé" in renderer.render("welcome", step(renderer), zoe, "2").html


def test_an_undefined_name_fails_with_file_and_line(renderer: MessageRenderer) -> None:
    nameless = Contact(email="x@example.com")
    with pytest.raises(RenderError) as caught:
        renderer.render("welcome", step(renderer, 1), nameless, "44")
    assert str(caught.value) == "templates/welcome/2.html:3: 'contact.first_name' is undefined"
    with pytest.raises(RenderError) as caught:
        renderer.render("welcome", step(renderer), nameless, "45")
    assert str(caught.value) == (
        f"{renderer.settings.source}: campaigns.welcome.steps[0].subject: "
        "'contact.first_name' is undefined"
    )


def test_headers(renderer: MessageRenderer) -> None:
    rendered = renderer.render("welcome", step(renderer), ADA, "42")
    message = parsed(rendered.data)
    assert message["From"] == "Acme Coffee <news@acme.example>"
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["Subject"] == "Welcome, Ada"
    assert message["Date"] == "Mon, 23 Nov 2026 10:00:00 +0000"
    assert message["Message-ID"] == renderer.message_id("42")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [web] = (part.strip(" <>") for part in message["List-Unsubscribe"].split(","))
    assert web.startswith(renderer.settings.tracking.base_url + "/u/")
    assert message["List-Id"] == "Newsletter <newsletter.acme.example>"
    assert message["Feedback-ID"] == "hello:welcome:newsletter:mailer"
    assert rendered.envelope_from.startswith("bounces+") and rendered.envelope_from.endswith(
        "@acme.example"
    )
    token = rendered.envelope_from.removeprefix("bounces+").split("@")[0]
    assert verify(renderer.keys, "bounce", token) == ["42"]


def test_the_date_header_keeps_the_offset_of_the_moment_given(renderer: MessageRenderer) -> None:
    """The Date header is written once per moment: an equal moment at another offset is
    another header."""
    utc = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    rome = utc.astimezone(timezone(timedelta(hours=1)))
    dates = [parsed(renderer.render("welcome", step(renderer), ADA, "42", now=now).data)["Date"]
             for now in (utc, rome, utc)]  # fmt: skip
    assert dates == ["Mon, 23 Nov 2026 10:00:00 +0000", "Mon, 23 Nov 2026 11:00:00 +0100",
                     "Mon, 23 Nov 2026 10:00:00 +0000"]  # fmt: skip


def test_a_retry_gets_the_same_message_id(renderer: MessageRenderer) -> None:
    first = parsed(renderer.render("welcome", step(renderer), ADA, "42").data)
    again = parsed(renderer.render("welcome", step(renderer), ADA, "42").data)
    other = parsed(renderer.render("welcome", step(renderer), ADA, "43").data)
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]


@pytest.mark.parametrize("hostile", [
    "Eve\r\nBcc: victim@example.com", "Eve\nBcc: victim@example.com", "Eve\rX-Evil: 1",
    "=?utf-8?q?Eve=0D=0ABcc:_victim@example.com?=",
])  # fmt: skip
def test_hostile_contact_data_never_adds_a_header(renderer: MessageRenderer, hostile: str) -> None:
    contact = Contact(email="eve@example.com", first_name=hostile, last_name=hostile)
    data = renderer.render("welcome", step(renderer), contact, "46").data
    message = parsed(data)
    assert message["Bcc"] is None and message["X-Evil"] is None
    head = data.split(b"\r\n\r\n")[0]
    assert not any(line.startswith((b"Bcc:", b"X-Evil:")) for line in head.split(b"\r\n"))
    assert message["Subject"].startswith("Welcome, Eve")


def test_non_ascii_names_and_subjects_are_encoded(renderer: MessageRenderer) -> None:
    zoe = Contact(email="zoe@example.fr", first_name="Zoë", last_name="Brontë ☕")
    data = renderer.render("welcome", step(renderer), zoe, "47").data
    head = data.split(b"\r\n\r\n")[0]
    assert head.isascii()
    assert b"=?utf-8?" in head
    message = parsed(data)
    assert message["Subject"] == "Welcome, Zoë"
    assert message["To"].addresses[0].display_name == "Zoë Brontë ☕"


def test_template_code_in_contact_data_is_just_text(renderer: MessageRenderer) -> None:
    contact = Contact(email="x@example.com", first_name="{{ 7 * 7 }}<script>")
    html = renderer.render("welcome", step(renderer), contact, "48").html
    assert "{{ 7 * 7 }}&lt;script&gt;" in html and "49" not in html


def test_addresses_with_encoded_word_look_or_unicode_are_written_safely(
    renderer: MessageRenderer,
) -> None:
    hostile = Contact(email="=?utf-8?q?=0D=0A?=@x.com", first_name="X")
    data = renderer.render("welcome", step(renderer), hostile, "1").data
    assert b"\r\nTo: X <=?utf-8?q?=0D=0A?=@x.com>\r\n" in data
    assert parsed(data)["Bcc"] is None
    idn = Contact(email="lena@bücher.example", first_name="Lena")
    assert b"\r\nTo: Lena <lena@xn--bcher-kva.example>\r\n" in renderer.render(
        "welcome", step(renderer), idn, "2").data  # fmt: skip
    utf8 = Contact(email="zoë@example.fr", first_name="Zoë")
    head = renderer.render("welcome", step(renderer), utf8, "3").data.split(b"\r\n\r\n")[0]
    assert "To: =?utf-8?b?Wm/Dqw==?= <zoë@example.fr>".encode() in head  # SMTPUTF8 only
    assert renderer.render("welcome", step(renderer), utf8, "3").smtputf8
    assert renderer.render("welcome", step(renderer), idn, "2").recipient == (
        "lena@xn--bcher-kva.example"
    )


@pytest.fixture
def mailto_renderer(project: Path, templates: Path, clock: FrozenClock) -> MessageRenderer:
    """A renderer whose sender offers the mailto unsubscribe address too."""
    settings = load_settings(project / "settings.toml", environ={
        "MAILER_SECRET_KEY": SECRET, "MAILER_SENDER__MAILTO_UNSUBSCRIBE": "true"})  # fmt: skip
    return MessageRenderer(settings, settings.secret(), clock)


def test_the_mailto_unsubscribe_is_offered_only_when_the_sender_turns_it_on(
    mailto_renderer: MessageRenderer,
) -> None:
    renderer = mailto_renderer
    message = parsed(renderer.render("welcome", step(renderer), ADA, "42").data)
    web, mail = (part.strip(" <>") for part in message["List-Unsubscribe"].split(","))
    assert web.startswith(renderer.settings.tracking.base_url + "/u/")
    assert mail.startswith("mailto:unsubscribe+") and mail.endswith("@acme.example")
    assert mail.removeprefix("mailto:unsubscribe+").split("@")[0] == web.rpartition("/")[2]


def test_list_unsubscribe_stays_readable_however_long(mailto_renderer: MessageRenderer) -> None:
    renderer = mailto_renderer
    data = renderer.render("welcome", step(renderer), ADA, "a-rather-long-message-key-1234").data
    head = data.split(b"\r\n\r\n")[0]
    line = next(line for line in head.split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert b"<mailto:unsubscribe+" in line and b"=?" not in line


def test_the_sent_bytes_pass_an_independent_dkim_verifier(
    renderer: MessageRenderer,
) -> None:
    import dkim

    from mailer.render.dkim import DkimKey, generate_key

    private, record = generate_key("rsa-sha256")
    renderer.dkim_key = DkimKey("acme.example", "s1", "rsa-sha256", private)
    zoe = Contact(email="zoe@example.fr", first_name="Zoë", last_name="Brontë")
    data = renderer.render("welcome", step(renderer), zoe, "49").data

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record.encode() if name == b"s1._domainkey.acme.example." else b""

    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                                        b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks"),
                           dnsfunc=dns)  # fmt: skip


def test_a_variant_changes_the_subject(renderer: MessageRenderer) -> None:
    tips = step(renderer, 1)
    assert renderer.render("welcome", tips, ADA, "50").subject == "Brewing tips"
    assert renderer.render("welcome", tips, ADA, "50", variant="B").subject == (
        "Psst, Ada: better coffee"
    )


def test_now_is_in_the_contacts_timezone(renderer: MessageRenderer, templates) -> None:  # type: ignore[no-untyped-def]
    (templates / "welcome" / "1.html").write_text(
        "<p>{{ now.strftime('%H:%M %Z') }} {{ sender.postal_address }} {{ unsubscribe_url }}</p>"
    )
    tokyo = Contact(email="ken@example.jp", first_name="Ken", timezone="Asia/Tokyo")
    assert "19:00 JST" in renderer.render("welcome", step(renderer), tokyo, "51").html
    assert "10:00 UTC" in renderer.render("welcome", step(renderer), Contact(
        email="x@example.com", first_name="X"), "52").html  # fmt: skip


def test_templates_can_include_partials(renderer: MessageRenderer, templates) -> None:  # type: ignore[no-untyped-def]
    (templates / "partials").mkdir()
    (templates / "partials" / "signature.html").write_text("<p>Maya, {{ sender.name }}</p>")
    (templates / "welcome" / "1.html").write_text(
        '{% extends "layout.html" %}{% block content %}{% include "partials/signature.html" %}'
        "{% endblock %}"
    )
    assert "Maya, Acme Coffee" in renderer.render("welcome", step(renderer), ADA, "60").html
