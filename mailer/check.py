"""`mailer check`: everything a campaign needs, checked before anything is sent.

Settings were validated on load; here: every template compiles, every list file can be read,
and every message of every campaign (variants included) renders, with an unsubscribe link and
the postal address in both parts, for each of the first `rows` good rows of its list's file
(a sample contact when the list has no file) and for a contact with only an email address.
A template that fails for a row is an error naming the row; one that fails only for the
email-only contact is a warning (no such contact exists yet, but a form may bring one), an
error with `strict`. Rows an import would reject are warnings (the import skips them and keeps
the rest), or errors with `strict`.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from jinja2 import TemplateNotFound, TemplateSyntaxError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from mailer.campaigns.broadcast_runs import held_broadcasts
from mailer.campaigns.date_steps import date_triggered, never_in_its_day
from mailer.campaigns.enrollment import parse_trigger
from mailer.campaigns.expressions import conditions_in, events_in, settings_expressions
from mailer.campaigns.segment_sql import SegmentCompiler
from mailer.campaigns.segments import (
    PREVIOUS,
    Engagement,
    Segment,
    SegmentError,
    Sent,
    parse_segment,
)
from mailer.campaigns.timing import DAY_WINDOW, day_window, overlap, parse_window
from mailer.clock import FrozenClock
from mailer.config import Settings, parse_quiet_hours, resent_name
from mailer.contacts.cells import shown as cell
from mailer.contacts.csvfile import CsvReader
from mailer.contacts.model import Contact
from mailer.contacts.rows import RowError, map_columns, parse_row
from mailer.delivery.relay import cleartext_password
from mailer.durations import format_duration
from mailer.errors import InputFileError, MailerError, SettingsError
from mailer.render.message import MessageRenderer, RenderedMessage, RenderError, problem
from mailer.render.spam import SpamCheckError, SpamScore, score_messages, spamassassin
from mailer.render.templates import TEMPLATE_SUFFIXES, syntax_problem, template_environment
from mailer.store.engine import create_database_engine, schema_is_current
from mailer.tracking import apple
from mailer.tracking.confirmation import CONFIRM_TEMPLATE, ConfirmationMail
from mailer.tracking.forms import Lead, Subscriber
from mailer.tracking.surveys import EVENT as SURVEY_ANSWER
from mailer.workspace import Workspace


@dataclass(frozen=True)
class Problem:
    severity: Literal["error", "warning"]
    message: str  # starts with file:line where there is one


@dataclass
class CheckReport:
    problems: list[Problem]
    templates: int = 0
    list_rows: int = 0
    messages: int = 0  # messages (steps and variants) that rendered for some contact
    renders: int = 0  # messages rendered, one per (message, contact)
    # Each message's shortest render (where, SMTP DATA): what length-based content rules judge
    # most harshly; SpamAssassin's score of each, when asked for.
    shortest: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    spam: list[tuple[str, SpamScore]] = dataclasses.field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]


SAMPLE = Contact(email="sample@example.com", first_name="Sam", last_name="Sample")
EMAIL_ONLY = Contact(email="email.only@example.com")  # every optional field missing
CHECK_SECRET = b"mailer check: tokens made here are never sent"
ROWS = 1000  # rows of each list file every message is rendered for, by default


@dataclass(frozen=True)
class Sample:
    """A contact every message is rendered for, and where it comes from."""

    contact: Contact
    origin: str  # `from lists/leads.csv:12`, or what kind of made-up contact it is
    severity: Literal["error", "warning"]  # of a message that fails for it


def check_project(settings: Settings, now: datetime, strict: bool = False,
                  rows: int = ROWS,
                  spam_threshold: float | None = None) -> CheckReport:  # fmt: skip
    """Check everything; render every message for the first `rows` rows of each list file.
    With `spam_threshold`, SpamAssassin scores every message: at or above it is an error."""
    report = CheckReport(problems=[])
    _check_segments(settings, now, report)
    _check_templates(settings, report)
    samples: dict[str, list[Sample]] = {}
    for name, contact_list in settings.lists.items():
        if contact_list.file is not None:
            path = settings.path(contact_list.file)
            samples[name] = _check_list_file(settings, name, path, now, strict, rows, report)
    if not report.errors:  # a template that does not compile would fail every message
        made_up = Sample(EMAIL_ONLY, "with only an email address, every optional field missing",
                         "error" if strict else "warning")  # fmt: skip
        for name in settings.lists:
            found = samples.get(name) or [Sample(SAMPLE, "made up by mailer check", "error")]
            samples[name] = [*found, made_up]
        _check_messages(settings, samples, now, report)
        if spam_threshold is not None:
            report.shortest += _confirmation_emails(settings, now)
            _check_spam(report, spam_threshold)
    _check_send_windows(settings, report)  # after rendering: its errors do not stop the renders
    _check_date_steps(settings, report)
    _check_held_broadcasts(settings, now, report)
    for name, relay in settings.relays():
        if (cleartext := cleartext_password(relay, name)) is not None:
            report.problems.append(Problem("error", f"{settings.source}: {cleartext}"))
    _check_apple_ranges(settings, report)
    _check_reply_listener(settings, report)
    return report


def _check_reply_listener(settings: Settings, report: CheckReport) -> None:
    """Replies tracked but no listener in `mailer run`: only a `mailer inbound` elsewhere, which
    settings cannot see, receives them; say so rather than lose replies in silence."""
    if not settings.sender.reply_tracking or settings.inbound.enabled:
        return
    domain = settings.sender.envelope_domain
    report.problems.append(Problem("warning", (
        f"{settings.source}: [sender] reply_tracking: replies go to reply+...@{domain}, and "
        "`mailer run` does not listen for them ([inbound] enabled = false); run `mailer "
        f"inbound` where the MX of {domain} points, or set [inbound] enabled = true")))


def _check_apple_ranges(settings: Settings, report: CheckReport) -> None:
    """`[tracking] apple_proxy_ranges_file` can be read and holds ranges."""
    try:
        ranges = apple.of_settings(settings)
    except MailerError as error:
        report.problems.append(Problem("error", f"{settings.source}: {error}"))
        return
    if ranges.count == 0:
        report.problems.append(Problem("warning", (
            f"{settings.source}: [tracking] apple_proxy_ranges_file: "
            f"{settings.tracking.apple_proxy_ranges_file} holds no address range, so no open is "
            "told Apple Mail Privacy Protection's by its address; download "
            "https://mask-api.icloud.com/egress-ip-ranges.csv there")))


def _check_segments(settings: Settings, now: datetime, report: CheckReport) -> None:
    """Every expression parses and compiles (types included), with its place in settings:
    `segments.silent: col 14: ...`, `campaigns.welcome.steps[1].condition: ...`."""
    for where, source, previous in settings_expressions(settings):
        try:
            if where.endswith(".trigger"):
                parse_trigger(source)
                continue
            segment = parse_segment(source)
            SegmentCompiler.for_settings(settings, now, previous).where(segment)
        except (SegmentError, SettingsError) as error:
            report.problems.append(Problem("error", f"{settings.source}: {where}: {error}"))
            continue
        _check_website_events_kept(settings, where, segment, report)
        _check_messages_named(settings, where, segment, report)


def _check_website_events_kept(settings: Settings, where: str, segment: Segment,
                               report: CheckReport) -> None:  # fmt: skip
    """With [retention] website_events_after set, an `event` condition with a property filter
    that reaches further back reads only the events kept: older ones are counted per contact,
    name and day, without their properties (a goal without `ever` reads only its own run of
    the sequence, seldom that long). Without a filter the counts answer it (segment_sql.py)."""
    kept = settings.retention.website_events_after
    if kept is None:
        return
    shown = f"{kept.days} days" if not kept.seconds else format_duration(kept)
    for event in events_in(segment):
        further = event.within is None or event.within > kept
        filtered = bool(event.where) and event.name != SURVEY_ANSWER
        if further and filtered and (event.ever or not where.endswith(".goal")):
            report.problems.append(Problem("warning", (
                f'{settings.source}: {where}: event "{event.name}" with `where` reaches further '
                f'back than retention.website_events_after ("{shown}"): older website events '
                "are counted per contact and day without their properties, so the filter sees "
                "only that window; add `within`, or keep website events longer")))  # fmt: skip


def _check_messages_named(settings: Settings, where: str, segment: Segment,
                          report: CheckReport) -> None:  # fmt: skip
    """`opened`, `clicked` and `sent` name a campaign, step and variant that settings have: a
    typo matches nobody, silently. A warning, not an error: messages of a campaign, step or
    variant since removed are still in the database, and still count."""
    campaigns = settings.campaigns
    for condition in conditions_in(segment, Engagement | Sent):
        assert isinstance(condition, Engagement | Sent)
        name, step, variant = condition.campaign, condition.step, condition.variant
        if name == PREVIOUS:
            continue  # the step before, whichever it is (compiling checked there is one)
        said = f"{settings.source}: {where}: {_verb(condition)}"
        if name is not None and name not in campaigns:
            report.problems.append(Problem("warning", (
                f'{said} "{name}": no such campaign in settings, so it matches only messages '
                f"of one removed since; campaigns: {', '.join(campaigns)}")))  # fmt: skip
            continue
        chosen = [campaigns[name]] if name is not None else list(campaigns.values())
        messages = [m for c in chosen for m in c.messages()
                    if step is None or step in (m.name, resent_name(m.name))]  # fmt: skip
        if step is not None and not messages:
            steps = [m.name for m in campaigns[name or ""].messages()]
            report.problems.append(Problem("warning", (
                f'{said} step "{name}.{step}": the campaign has no such step, so it matches '
                f"only messages of one removed since; its steps: {', '.join(steps)}")))
            continue
        labels = {"A"} | {label for message in messages for label in message.variants}
        if variant is not None and variant not in labels:
            report.problems.append(Problem("warning", (
                f'{said} variant "{variant}": no message of {_of(name, step)} has that variant '
                f"in settings; its variants: {', '.join(sorted(labels))}")))


def _verb(condition: Engagement | Sent) -> str:
    return "sent" if isinstance(condition, Sent) else f"{condition.kind}ed"


def _of(campaign: str | None, step: str | None) -> str:
    if campaign is None:
        return "any campaign"
    return f"{campaign}.{step}" if step is not None else campaign


def _check_send_windows(settings: Settings, report: CheckReport) -> None:
    """Every step's send window parses and leaves some time outside quiet hours: a window that
    lies wholly in the night would postpone its step forever."""
    quiet = settings.engine.quiet_hours
    awake = parse_window(parse_quiet_hours(quiet)) if quiet else None
    for name, campaign in settings.campaigns.items():
        for index, step in enumerate(campaign.steps):
            if step.send_window is None:
                continue
            where = f"{settings.source}: campaigns.{name}.steps[{index}].send_window"
            try:
                window = parse_window(step.send_window)
            except ValueError as error:
                report.problems.append(Problem("error", f"{where}: {error}"))
                continue
            if awake is not None and not overlap(window, awake):
                report.problems.append(Problem("error", (
                    f'{where}: "{step.send_window}" lies wholly inside engine.quiet_hours '
                    f'"{quiet}", so its messages would wait forever; widen the window or '
                    "shorten the quiet hours")))  # fmt: skip


def _check_held_broadcasts(settings: Settings, now: datetime, report: CheckReport) -> None:
    """A broadcast edited after its run began sending is held (nothing more goes out until the
    settings are restored): an error here, before the marketer wonders why. Read from the
    database when it exists and is reachable; check never creates or migrates one."""
    engine = existing_database(settings)
    if engine is None:
        return
    try:
        with engine.connect() as connection:
            held = held_broadcasts(connection, settings, now)
    except SQLAlchemyError:
        return  # unreachable now, or a schema being migrated: the tick will say it
    finally:
        engine.dispose()
    for name, why in held.items():
        report.problems.append(Problem("error", f"{settings.source}: campaigns.{name}: {why}"))


def existing_database(settings: Settings) -> Engine | None:
    """The settings' database if it exists, answers and has the current schema; else None.
    Never creates or migrates one (check and doctor only read)."""
    url = settings.resolved_database_url()
    try:
        parsed = make_url(url)
    except SQLAlchemyError:
        return None
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and not (parsed.database and Path(parsed.database).is_file()):
        return None
    # A server that does not answer fails fast: check is run by hand and in CI.
    options: dict[str, Any] = {} if sqlite else {"connect_args": {"connect_timeout": 5}}
    try:
        engine = create_database_engine(url, **options)
    except MailerError:
        return None
    try:
        if schema_is_current(engine):
            return engine
    except SQLAlchemyError:
        pass
    engine.dispose()
    return None


def _check_date_steps(settings: Settings, report: CheckReport) -> None:
    """The first step of a date trigger: a time of day in `delay` ("9h") is read on the clock,
    which `at` says plainly; a day's window that quiet hours or the send window always shut
    would skip every message."""
    quiet = settings.engine.quiet_hours
    for name, campaign in settings.campaigns.items():
        if campaign.kind != "sequence" or not campaign.steps or not date_triggered(campaign):
            continue
        step, where = campaign.steps[0], f"{settings.source}: campaigns.{name}.steps[0]"
        if step.at is None and step.delay.seconds:
            opens = day_window(step, datetime(2024, 1, 1, tzinfo=UTC), "UTC").opens
            days = f' and delay = "{step.delay.days} days"' if step.delay.days else ""
            report.problems.append(Problem("warning", (
                f'{where}.delay: "{format_duration(step.delay)}" after a date is read on the '
                f"contact's clock ({opens:%H:%M}); write at = "
                f'"{opens:%H:%M}"{days}')))  # fmt: skip
        windows = [text for text in (step.send_window, quiet and parse_quiet_hours(quiet)) if text]
        try:
            never = never_in_its_day(campaign, windows)
        except ValueError:
            continue  # a send window that does not parse: _check_send_windows says so
        if never:
            report.problems.append(Problem("error", (
                f"{where}: quiet hours or the send window shut its whole day's window (from its "
                f"time for {DAY_WINDOW.seconds // 3600} hours, until midnight), so every message "
                "would be skipped; move `at` earlier or widen the window")))  # fmt: skip


def _check_messages(
    settings: Settings, samples: dict[str, list[Sample]], now: datetime, report: CheckReport
) -> None:
    renderer = MessageRenderer(settings, CHECK_SECRET, FrozenClock(now))
    for name, campaign in settings.campaigns.items():
        for step in campaign.messages():
            for variant in [None, *step.variants]:
                where = f"campaigns.{name} step {step.name}"
                where += f" variant {variant}" if variant else ""
                first, shortest, failed = None, None, _Failures()
                for sample in samples.get(campaign.list_name, []):
                    try:
                        message = renderer.render(name, step, sample.contact, "check", variant)
                    except Exception as error:  # RenderError, or anything else: never a traceback
                        failed.add(str(error) if isinstance(error, RenderError)
                                   else problem(error), sample)  # fmt: skip
                        continue
                    report.renders += 1
                    first = first or message
                    if shortest is None or len(message.html) < len(shortest.html):
                        shortest = message
                report.problems += failed.problems(where)
                if first is not None:
                    report.messages += 1
                    _check_footer(settings, where, first, report)
                if shortest is not None:
                    report.shortest.append((where, shortest.data))


def _confirmation_emails(settings: Settings, now: datetime) -> list[tuple[str, bytes]]:
    """The double opt-in confirmation email of each list that sends one, as the sign-up form
    would send it to a new address (the template's absence is an error of its own)."""
    if not (settings.path(settings.templates_dir) / f"{CONFIRM_TEMPLATE}.html").is_file():
        return []
    mail = ConfirmationMail(Workspace(settings, FrozenClock(now)),
                            MessageRenderer(settings, CHECK_SECRET, FrozenClock(now)))  # fmt: skip
    asked = Subscriber(0, SAMPLE.email, "pending", 0)
    return [(f"the confirmation email of list {name}",
             mail.message(asked, Lead(SAMPLE.email, name, "check"), now).data)
            for name, spec in settings.lists.items() if spec.double_opt_in]  # fmt: skip


def _check_spam(report: CheckReport, threshold: float) -> None:
    """Each message's shortest render scored by SpamAssassin's local rules; asked for and not
    installed is an error: a content check that did not run must not pass."""
    program = spamassassin()
    if program is None:
        report.problems.append(Problem("error", (
            "spamassassin is not installed, so --spam cannot score the messages: install it "
            "(Debian: apt-get install --no-install-recommends spamassassin)")))  # fmt: skip
        return
    try:
        scores = score_messages([data for _, data in report.shortest], program)
    except SpamCheckError as error:
        report.problems.append(Problem("error", str(error)))
        return
    for (where, _), score in zip(report.shortest, scores, strict=True):
        report.spam.append((where, score))
        if score.score >= threshold:
            report.problems.append(Problem("error", (
                f"{where}: SpamAssassin scores {score.score:g}, at or above {threshold:g}: "
                f"{score.worst_rules()}")))  # fmt: skip


class _Failures:
    """The reasons a message failed, each with the first contact it failed for and how many
    more: one line per reason, not one per row."""

    def __init__(self) -> None:
        self.reasons: dict[str, list[Sample]] = {}

    def add(self, reason: str, sample: Sample) -> None:
        self.reasons.setdefault(reason, []).append(sample)

    def problems(self, where: str) -> list[Problem]:
        found = []
        for reason, failed in self.reasons.items():
            first = failed[0]
            more = len(failed) - 1
            others = f", and {more} more contact{'s' if more > 1 else ''}" if more else ""
            severity: Literal["error", "warning"] = (
                "error" if any(sample.severity == "error" for sample in failed) else "warning"
            )
            found.append(Problem(severity, f"{reason} (contact {first.contact.email} {first.origin}"
                                           f"{others}; {where})"))  # fmt: skip
        return found


def _check_footer(settings: Settings, where: str, message: RenderedMessage,
                  report: CheckReport) -> None:  # fmt: skip
    unsubscribe = f"{settings.tracking.base_url}/u/"
    postal = settings.sender.postal_address
    for part, text in (("HTML", message.html), ("text", message.text)):
        if unsubscribe not in text:
            missing = "an unsubscribe link: put {{ unsubscribe_url }} in the layout"
            report.problems.append(Problem("error", f"{where}: {part} lacks {missing}"))
        if postal not in text and html.escape(postal) not in text:
            missing = "the postal address: put {{ sender.postal_address }} in the layout"
            report.problems.append(Problem("error", f"{where}: {part} lacks {missing}"))


def _check_templates(settings: Settings, report: CheckReport) -> None:
    templates_dir = settings.path(settings.templates_dir)
    environment = template_environment(templates_dir)
    display_dir = settings.templates_dir
    if templates_dir.is_dir():
        for path in sorted(templates_dir.rglob("*")):
            if path.suffix in TEMPLATE_SUFFIXES:
                name = path.relative_to(templates_dir).as_posix()
                try:
                    environment.get_template(name)
                    report.templates += 1
                except TemplateSyntaxError as error:
                    report.problems.append(
                        Problem("error", syntax_problem(error, display_dir, name))
                    )
                except TemplateNotFound as error:  # an {% extends %} or {% include %} target
                    report.problems.append(
                        Problem("error", f"{display_dir / name}: includes missing '{error.name}'")
                    )
    double_opt_in = [name for name, spec in settings.lists.items() if spec.double_opt_in]
    if double_opt_in and not (templates_dir / f"{CONFIRM_TEMPLATE}.html").is_file():
        report.problems.append(Problem(
            "error", f"{display_dir}/{CONFIRM_TEMPLATE}.html does not exist: double opt-in "
            f"lists ({', '.join(double_opt_in)}) make their confirmation email from it (copy "
            "the example project's)",
        ))  # fmt: skip
    for where, template, subject in _messages(settings):
        if not (templates_dir / f"{template}.html").is_file():
            report.problems.append(Problem(
                "error", f"{settings.source}: {where}.template: {display_dir}/{template}.html "
                "does not exist",
            ))  # fmt: skip
        try:
            environment.from_string(subject)
        except TemplateSyntaxError as error:
            report.problems.append(
                Problem("error", f"{settings.source}: {where}.subject: {error.message}")
            )


def _messages(settings: Settings) -> list[tuple[str, str, str]]:
    """(where in settings, template, subject) of every message the campaigns can send."""
    found = []
    for name, campaign in settings.campaigns.items():
        if campaign.template is not None and campaign.subject is not None:
            found.append((f"campaigns.{name}", campaign.template, campaign.subject))
        for index, step in enumerate(campaign.steps):
            where = f"campaigns.{name}.steps[{index}]"
            found.append((where, step.template, step.subject))
            for label, variant in step.variants.items():
                found.append((f"{where}.variants.{label}", variant.template or step.template,
                              variant.subject or step.subject))  # fmt: skip
    return found


def _check_list_file(
    settings: Settings, name: str, path: Path, now: datetime, strict: bool, rows: int,
    report: CheckReport,
) -> list[Sample]:  # fmt: skip
    """Report the rows an import would reject; return the first `rows` good rows, as samples."""
    samples: list[Sample] = []
    shown = path.relative_to(settings.root) if path.is_relative_to(settings.root) else path
    try:
        with CsvReader(path, shown=shown) as reader:
            targets = map_columns(reader.header, settings.lists[name].columns, str(shown))
            for row in reader.rows():
                report.list_rows += 1
                try:
                    if row.problem:
                        raise RowError(row.problem)
                    parsed = parse_row(row.fields, targets, settings.attributes, now)
                except RowError as error:
                    severity: Literal["error", "warning"] = "error" if strict else "warning"
                    report.problems.append(Problem(severity, f"{shown}:{row.line}: {error}"))
                    continue
                for target, warning in parsed.warnings:  # a cell the import leaves out
                    column = cell(reader.header[targets.index(target)])
                    where = f"{shown}:{row.line}: column {column}"
                    report.problems.append(Problem("warning", f"{where}: {warning}"))
                if len(samples) < rows:
                    contact = Contact(parsed.email, parsed.first_name, parsed.last_name,
                                      parsed.timezone, parsed.locale, parsed.attributes,
                                      tuple(sorted(parsed.tags)))  # fmt: skip
                    samples.append(Sample(contact, f"from {shown}:{row.line}", "error"))
    except InputFileError as error:
        report.problems.append(Problem("error", str(error)))
    return samples
