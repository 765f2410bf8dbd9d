from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.render.message import header_text
from mailer.render.mime import alternative, mailbox, unstructured

printable = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120)


def build(subject: str, name: str, text: str, html: str) -> EmailMessage:
    headers = [("From", mailbox("Acme", "news@acme.example")),
               ("To", mailbox(header_text(name), "ada@example.com")),
               ("Subject", unstructured(header_text(subject)))]  # fmt: skip
    data = alternative(headers, text, html, boundary="=_0123456789abcdef")
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@settings(max_examples=300)
@given(subject=printable, name=printable, text=printable, html=printable)
def test_whatever_the_data_the_message_parses_back_with_only_our_headers(
    subject: str, name: str, text: str, html: str
) -> None:
    message = build(subject, name, text, html)
    assert set(message.keys()) == {"From", "To", "Subject", "MIME-Version", "Content-Type"}
    assert message["Subject"] == header_text(subject)
    assert message["To"].addresses[0].addr_spec == "ada@example.com"
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    normalise = lambda value: value.replace("\r\n", "\n").replace("\r", "\n")  # noqa: E731
    assert normalise(plain.get_content()).rstrip("\n") == normalise(text).rstrip("\n")
    assert normalise(rich.get_content()).rstrip("\n") == normalise(html).rstrip("\n")


def test_long_subjects_are_folded_and_long_words_are_not_broken() -> None:
    folded = unstructured("word " * 40 + "x" * 90)
    assert all(len(line) <= 98 for line in folded.split("\r\n")[:-1])
    assert folded.split("\r\n")[-1].endswith("x" * 90)
