"""One-click surveys in messages: a template writes `{{ survey("nps", "nps") }}` and the
reader sees a row of answer links; each goes to the tracking endpoint (`/s/TOKEN`), whose
token names the message, the question and the answer, so one click answers.

    {{ survey("nps", "nps") }}                  0..10, "How likely are you to recommend us?"
    {{ survey("delivery", "scale") }}            1..5, very dissatisfied .. very satisfied
    {{ survey("why_leave", "options", ["Too many emails", "Not relevant"]) }}
    {{ survey("nps", "nps", plain=true) }}       the same as lines of text, for a .txt template

The links start with `tracking.base_url`, so click tracking leaves them as they are
(render/links.py); the endpoint records the answer (tracking/surveys.py). The question's
wording is the template's: the helper writes only the answers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jinja2.exceptions import TemplateRuntimeError
from markupsafe import Markup

from mailer.tokens import SEPARATOR, TokenKeys, sign

QUESTION = re.compile(r"[a-z][a-z0-9_]{0,49}")  # matched whole: `$` would let "\n" in
KINDS = ("nps", "scale", "options")
NPS_WORDS = ("not at all likely", "extremely likely")  # the ends of 0..10
SCALE_WORDS = ("very dissatisfied", "dissatisfied", "neutral", "satisfied", "very satisfied")
MAX_OPTIONS = 10
MAX_OPTION_BYTES = 200  # the token's payload holds about 300 bytes: key, question and this

_CELL = "padding:0 2px"
_LINK = (
    "display:block;padding:12px 4px;font:bold 16px/20px Arial,Helvetica,sans-serif;"
    "color:#1a1a1a;background:#f2f2f2;border:1px solid #767676;border-radius:6px;"
    "text-decoration:none;text-align:center"
)  # 46 px tall: big enough to tap
_SMALL = "font:13px/18px Arial,Helvetica,sans-serif;color:#4d4d4d;padding:6px 2px 0"
_TABLE = (
    '<table role="presentation" cellpadding="0" cellspacing="0" border="0" '
    'width="100%" style="border-collapse:collapse;max-width:560px;margin:8px 0">'
)


class SurveyError(TemplateRuntimeError):
    """A `survey(...)` call a template cannot make; the message says how to write it."""


@dataclass(frozen=True)
class Choice:
    value: str  # what the token carries and the answer records
    shown: str  # what the link shows
    label: str  # what a screen reader says: "0 — not at all likely"


def choices(kind: str, options: Sequence[str] | Mapping[str, str] | None = None,
            labels: Sequence[str] | None = None) -> list[Choice]:  # fmt: skip
    """The answers of one question, in the order they are shown."""
    if kind == "nps":
        low, high = _words(labels, NPS_WORDS, "two labels, for 0 and for 10")
        ends = {0: low, 10: high}
        return [Choice(str(n), str(n), f"{n} — {ends[n]}" if n in ends else f"{n} out of 10")
                for n in range(11)]  # fmt: skip
    if kind == "scale":
        words = _words(labels, SCALE_WORDS, "five labels, for 1 to 5")
        return [Choice(str(n), f"{n}", f"{n} — {word}") for n, word in enumerate(words, 1)]
    if kind == "options":
        return _options(options)
    raise SurveyError(f"survey(): kind '{kind}' is not one of {', '.join(KINDS)}")


def _words(labels: Sequence[str] | None, default: Sequence[str], wanted: str) -> Sequence[str]:
    if labels is None:
        return default
    if isinstance(labels, str) or len(labels) != len(default):
        raise SurveyError(f"survey(): labels are {wanted}")
    return [str(label) for label in labels]


def _options(options: Sequence[str] | Mapping[str, str] | None) -> list[Choice]:
    if options is None or isinstance(options, str) or not 2 <= len(options) <= MAX_OPTIONS:
        raise SurveyError(f"survey(): an 'options' question needs a list of 2 to {MAX_OPTIONS}"
                          ' answers, e.g. survey("why_leave", "options", ["Too many emails",'
                          ' "Not relevant"])')  # fmt: skip
    pairs = options.items() if isinstance(options, Mapping) else ((o, o) for o in options)
    found = []
    for value, shown in pairs:
        value = str(value).strip()
        if not value or SEPARATOR in value or len(value.encode()) > MAX_OPTION_BYTES:
            raise SurveyError(f"survey(): option '{value[:40]}' must be 1 to "
                              f"{MAX_OPTION_BYTES} bytes of text")  # fmt: skip
        found.append(Choice(value, str(shown), str(shown)))
    if len({choice.value for choice in found}) != len(found):
        raise SurveyError("survey(): two options have the same value")
    return found


def survey_helper(keys: TokenKeys, base_url: str, message_key: str) -> Callable[..., Markup]:
    """`survey(question, kind, options=None, labels=None, plain=False)` for one message's
    templates: its links carry tokens signed for `message_key`."""

    def survey(question: str, kind: str = "nps",
               options: Sequence[str] | Mapping[str, str] | None = None,
               labels: Sequence[str] | None = None, plain: bool = False) -> Markup:  # fmt: skip
        if not isinstance(question, str) or not QUESTION.fullmatch(question):
            raise SurveyError(f"survey(): question '{question}' is not a name: lowercase "
                              "letters, digits and '_', starting with a letter, at most 50 "
                              'characters (e.g. "nps")')  # fmt: skip
        answers = []
        for choice in choices(kind, options, labels):
            token = sign(keys, "survey", message_key, question, choice.value)
            answers.append((choice, f"{base_url}/s/{token}"))
        if plain:
            return Markup("".join(f"{choice.label}: {url}\n" for choice, url in answers))
        if kind == "options":
            return Markup(_column(answers))
        return Markup(_row(answers, kind == "nps"))

    return survey


def _link(choice: Choice, url: str, text: str) -> str:
    label = html.escape(choice.label)
    return (
        f'<a href="{html.escape(url)}" aria-label="{label}" title="{label}" '
        f'style="{_LINK}">{text}</a>'
    )


def _row(answers: Sequence[tuple[Choice, str]], nps: bool) -> str:
    """NPS: 0..10 with the two ends named below; scale: 1..5, each with its word."""
    width = f"{100 // len(answers)}%"
    cells = []
    for choice, url in answers:
        text = html.escape(choice.shown)
        if not nps:
            word = html.escape(choice.label.split(" — ", 1)[1])
            text += f'<br><span style="font-weight:normal;font-size:12px">{word}</span>'
        cells.append(f'<td width="{width}" style="{_CELL}">{_link(choice, url, text)}</td>')
    rows = ["<tr>" + "".join(cells) + "</tr>"]
    if nps:
        low, high = (html.escape(answers[n][0].label.split(" — ", 1)[1]) for n in (0, 10))
        # Seen, not read twice: each link's aria-label already says what its end means.
        rows.append(f'<tr aria-hidden="true"><td colspan="6" style="{_SMALL}">{low}</td>'
                    f'<td colspan="5" align="right" style="{_SMALL};text-align:right">{high}'
                    "</td></tr>")  # fmt: skip
    return _TABLE + "".join(rows) + "</table>"


def _column(answers: Sequence[tuple[Choice, str]]) -> str:
    """Options: one full-width link each, one under another (texts are long)."""
    rows = [f'<tr><td style="padding:3px 0">{_link(choice, url, html.escape(choice.shown))}'
            "</td></tr>" for choice, url in answers]  # fmt: skip
    return _TABLE + "".join(rows) + "</table>"
