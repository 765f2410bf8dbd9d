"""settings.toml, loaded into validated, typed models.

Every value can be overridden from the environment: `MAILER_` + the key path in capitals, with
`__` between levels (`MAILER_DATABASE_URL`, `MAILER_SMTP__HOST`, `MAILER_LISTS__LEADS__TITLE`).
An override is read as a TOML value when it parses as one (`25`, `true`, `["a", "b"]`), else as a
string. A MAILER_ variable that names no setting is ignored with a warning (another tool may
use the prefix), which says what a near miss meant. Secrets (`secret_key`, `smtp.password`) may
come only from the environment or from a file named in settings (`secret_key_file`,
`smtp.password_file`), never from settings.toml itself.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from datetime import time, timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from mailer.clock import NOW_VARIABLE
from mailer.durations import format_duration, parse_duration
from mailer.errors import SettingsError
from mailer.send_times import parse_send_at

ENV_PREFIX = "MAILER_"
# Variables of ours that are not settings overrides.
_ENV_NOT_SETTINGS = ("MAILER_CONFIG", "MAILER_DEBUG", NOW_VARIABLE, "MAILER_TEST_DATABASE_URL")
# Where a secret may not be written: (path in the file, where to put it instead).
_SECRETS = {
    ("secret_key",): "MAILER_SECRET_KEY or secret_key_file",
    ("smtp", "password"): "MAILER_SMTP__PASSWORD or smtp.password_file",
    ("smtp", "fallbacks", "*", "password"): "MAILER_SMTP__FALLBACKS__<NAME>__PASSWORD or "
    "password_file",
    ("tracking", "events_token"): "MAILER_TRACKING__EVENTS_TOKEN",
    ("webhooks", "ses", "certificate"): "MAILER_WEBHOOKS__SES__CERTIFICATE or certificate_file",
    ("webhooks", "postmark", "password"): "MAILER_WEBHOOKS__POSTMARK__PASSWORD or password_file",
    ("webhooks", "sendgrid", "public_key"): "MAILER_WEBHOOKS__SENDGRID__PUBLIC_KEY or "
    "public_key_file",
    ("webhooks", "mailgun", "signing_key"): "MAILER_WEBHOOKS__MAILGUN__SIGNING_KEY or "
    "signing_key_file",
    ("reports", "password"): "MAILER_REPORTS__PASSWORD or reports.password_file",
    # "*": any name of the table (an outgoing webhook's own secret).
    ("webhooks", "outgoing", "*", "secret"): "MAILER_WEBHOOKS__OUTGOING__<NAME>__SECRET or "
    "secret_file",
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


def _stderr(text: str) -> None:
    print(f"mailer: {text}", file=sys.stderr)


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f'{value!r} is not a duration (write it as a string, e.g. "2 days")')
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
AttributeType = Literal["string", "integer", "number", "boolean", "date", "datetime"]


def _https_or_localhost(url: str, why: str) -> str:
    """`url` when it is https://, or plain http:// to this machine (tests, demos); else an
    error saying `why` https is needed."""
    parts = urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f'"{url}" must be an https:// URL ({why}; plain http is accepted '
                         "only for localhost)")  # fmt: skip
    return url


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sender(Model):
    name: str
    email: str
    postal_address: str = Field(min_length=10)
    reply_to: str | None = None
    # Bounces come back to bounces+TOKEN@bounce_domain (VERP); default: the From domain.
    bounce_domain: str | None = None
    feedback_id: str = "mailer"  # the sender id in Feedback-ID (Gmail's complaint reports)
    # Also offer <mailto:unsubscribe+TOKEN@bounce_domain> in List-Unsubscribe. Off: turn it on
    # only where mail to that address reaches `mailer inbound` (or another reader that withdraws).
    mailto_unsubscribe: bool = False
    # Campaign mail's Reply-To is reply+TOKEN@bounce_domain: `mailer inbound` records a
    # `replied` event and forwards the reply to [inbound] replies_to (which it then needs).
    reply_tracking: bool = False

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    @property
    def envelope_domain(self) -> str:
        """Where bounces+, unsubscribe+ and reply+ addresses live (and SPF is checked):
        bounce_domain, else the From domain."""
        return self.bounce_domain or self.domain

    @field_validator("email", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(validate_email(value, check_deliverability=False).normalized)
        except EmailNotValidError as error:
            raise ValueError(f"'{value}' is not an email address ({error})") from None


class Relay(Model):
    """Where and how to hand mail over: [smtp] itself, or one of its [smtp.fallbacks.NAME]."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    timeout: Duration = timedelta(seconds=30)
    # A CA bundle (PEM) to trust besides the system's, for a relay with a private certificate.
    ca_file: Path | None = None


class FallbackRelay(Relay):
    host: str  # no default: a fallback on this machine's port 25 is not what anyone means


PRIMARY_RELAY = "primary"  # the name of [smtp] itself in logs, metrics and outbox replies


class Smtp(Relay):
    pool_size: int = Field(default=4, ge=1, le=100)
    # Used, in the order written, while the relays before them are down.
    fallbacks: dict[str, FallbackRelay] = {}


def _rate(value: Any) -> float:
    """"100/s", "3000/min", "50000/h" -> messages per second."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*",
                         str(value))  # fmt: skip
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f'{value!r} is not a rate (write e.g. "100/s", "3000/min", "50000/h")')
    per = {"s": 1, "m": 60, "h": 3600}[match.group(2)[0]]
    return float(match.group(1)) / per


Rate = Annotated[float, BeforeValidator(_rate)]


class Delivery(Model):
    """How the outbox is handed to the relay: batches, leases, retries, throttles."""

    batch_size: int = Field(default=500, ge=1, le=10_000)  # outbox rows claimed at a time
    # A claimed row belongs to its worker this long; after it, another worker may take it
    # (a crashed worker's rows come back).
    lease: Duration = timedelta(minutes=5)
    retry_after: Duration = timedelta(minutes=5)  # first retry after a 4xx; doubles each time
    retry_at_most: Duration = timedelta(hours=4)  # longest wait between two attempts
    give_up_after: Duration = timedelta(days=3)  # a message still deferred this long fails
    rate: Rate | None = None  # all messages, e.g. "100/s"; none = as fast as the relay takes
    domain_rates: dict[str, Rate] = {}  # per recipient domain, e.g. "gmail.com" = "20/s"
    # This many relay refusals in a row (auth broken, blocked IP) pause the campaign.
    pause_after_refusals: int = Field(default=25, ge=1)
    # Processes that render and DKIM-sign (0 = in the delivering process, in a thread).
    render_processes: int = Field(default=2, ge=0, le=64)
    poll: Duration = timedelta(seconds=2)  # how often `mailer run` looks for new outbox rows


class Tracking(Model):
    base_url: str = "http://127.0.0.1:8025"
    # Link tokens are signed with a key derived from the secret key and this version: raise
    # it to rotate; tokens older than oldest_token_version stop working.
    token_version: int = Field(default=1, ge=1)
    oldest_token_version: int = Field(default=1, ge=1)
    # `mailer serve` listens here (behind your https proxy for base_url).
    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    # Opens and clicks not yet written: at most this many (new pixel requests wait beyond it;
    # what a SIGKILL can lose), written in batches of half of it, or after flush_every.
    flush_size: int = Field(default=2_000, ge=1, le=100_000)
    flush_every: Duration = timedelta(seconds=1)
    # Apple's proxy addresses, to tell Mail Privacy Protection's prefetch: a refreshed copy of
    # https://mask-api.icloud.com/egress-ip-ranges.csv; unset: the shipped 17.0.0.0/8 only.
    apple_proxy_ranges_file: Path | None = None
    # The website's bearer token for POST /events (from MAILER_TRACKING__EVENTS_TOKEN).
    events_token: SecretStr | None = None

    @field_validator("base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return _https_or_localhost(value, "RFC 8058 one-click unsubscribe needs https").rstrip("/")


class ContactList(Model):
    """A list is also a consent purpose: consent is granted, confirmed or withdrawn per list."""

    title: str
    double_opt_in: bool = False
    # The website's sign-up form (POST /subscribe) may join it; closed unless a list says so.
    forms: bool = False
    file: Path | None = None
    # CSV header -> contact field (email, first_name, ...) or attribute name; "-" drops it.
    columns: dict[str, str] = {}
    tags: list[str] = []
    # Consent lapses this long after the last grant or the person's last open or click of the
    # list's mail (CASL's implied consent: "730d"); None keeps it until withdrawn.
    expires_after: Duration | None = None


class Dkim(Model):
    domain: str
    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    key_file: Path  # the private key; `mailer init` creates it and prints the DNS record


class Variant(Model):
    """An A/B variant of a step: another subject, template and/or sender name."""

    subject: str | None = None
    template: str | None = None
    from_name: str | None = None  # the From display name ([sender] name otherwise)
    send_at: str | None = None  # a broadcast's send-time test: this variant's group goes then
    weight: int = Field(default=1, ge=0)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError('must be longer than 0 (write e.g. "4h" or "3 days")')
    return value


MAX_VARIANTS = 3  # of a broadcast's auto-winner test, A included
# How much later than the broadcast's send_at a send-time variant may go: the decision waits
# for the last group, and a week apart the groups meet other weeks' mail.
MAX_SEND_TIME_SPREAD = timedelta(days=7)


class AbTest(Model):
    """A broadcast's A/B test with an auto-winner (campaigns/ab_tests.py): at send_at only
    `test_fraction` of the recipients get a variant; after `wait` the winner by people's opens,
    clicks or conversions (the campaign's goal) goes to the rest; no clear winner: `default`.
    A send-time test (variants.X.send_at) sends everyone their variant at its time: no fraction."""

    test_fraction: float | None = Field(default=None, gt=0, le=1)
    wait: Annotated[Duration, AfterValidator(_positive)]
    decide_by: Literal["opens", "clicks", "conversions"] = "opens"
    default: str = "A"
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class Resend(Model):
    """Send a message once more, with another subject, `after` it was sent, to its recipients
    with no person's open (or click) of it (campaigns/resends.py)."""

    after: Annotated[Duration, AfterValidator(_positive)]
    subject: str
    unless: Literal["opened", "clicked"] = "opened"


class Step(Model):
    name: str
    template: str
    subject: str
    preheader: str | None = None
    delay: Duration = timedelta(0)
    condition: str | None = None
    # Where to go when the condition is false: a later step's name (a branch). Without it
    # the step is skipped and the next one is considered.
    otherwise: str | None = None
    send_window: str | None = None
    # The first step of a date trigger: the time of day on the contact's own date ("09:00").
    at: time | None = None
    # Who goes first when the frequency cap frees a slot: "high" for time-critical mail (a
    # cart reminder); within a priority, the message that has waited longest.
    priority: Literal["high", "normal", "low"] = "normal"
    track_opens: bool = True
    variants: dict[str, Variant] = {}
    resend: Resend | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _time_of_day(cls, value: Any) -> Any:
        if value is None or isinstance(value, time):
            return value
        parsed = _clock_time(value) if isinstance(value, str) else None
        if parsed is None:
            raise ValueError(f'{value!r} is not a time of day (write e.g. "09:00")')
        return parsed


class Campaign(Model):
    kind: Literal["sequence", "broadcast"]
    list_name: str = Field(alias="list")
    description: str = ""
    # sequences
    trigger: str | None = None
    goal: str | None = None
    reentry: Literal["never"] | Duration = "never"
    # On its first tick, a sequence triggered by joining a list or by an event ignores those
    # who joined (or did it) before; true enrolls them too. Segment and date triggers always
    # look at who is in the segment, or whose day it is, now.
    enroll_existing: bool = False
    # A reply (to reply+TOKEN@, [sender] reply_tracking) to any of its messages ends the run:
    # exited "replied", no further step.
    exit_on_reply: bool = False
    steps: list[Step] = []
    # broadcasts
    segment: str | None = None
    send_at: str | None = None
    template: str | None = None
    subject: str | None = None
    preheader: str | None = None
    track_opens: bool = True
    variants: dict[str, Variant] = {}
    ab: AbTest | None = None  # an auto-winner A/B test of the variants
    resend: Resend | None = None

    def messages(self) -> list[Step]:
        """The messages this campaign sends: a sequence's steps, or a broadcast as one step."""
        if self.kind == "sequence":
            return list(self.steps)
        if self.template is None or self.subject is None:
            return []
        return [Step(name="broadcast", template=self.template, subject=self.subject,
                     preheader=self.preheader, track_opens=self.track_opens,
                     variants=self.variants, resend=self.resend)]  # fmt: skip

    def after_skip(self, position: int) -> int:
        """Where a sequence goes when the step at `position` is skipped: to its `otherwise`
        branch, or else to the next step (`len(steps)`: the sequence is over)."""
        step = self.steps[position]
        if step.otherwise:
            return [candidate.name for candidate in self.steps].index(step.otherwise)
        return position + 1

    def step(self, name: str) -> Step:
        for step in self.messages():
            if step.name == name:
                return step
            if step.resend is not None and name == resent_name(step.name):
                return resent(step, step.resend)
        known = ", ".join(step.name for step in self.messages()) or "none"
        raise SettingsError(f"campaign has no step '{name}' (steps: {known})")


def resent_name(step: str) -> str:
    """The outbox step of a step's resend: `broadcast.resend`, `hello.resend`."""
    return f"{step}.resend"


def resent(step: Step, resend: Resend) -> Step:
    """The message a resend sends: the step as it was (the contact's variant too: its template
    and sender name), under the resend's subject."""
    variants = {label: variant.model_copy(update={"subject": None})
                for label, variant in step.variants.items()}  # fmt: skip
    return step.model_copy(update={"name": resent_name(step.name), "subject": resend.subject,
                                   "variants": variants, "resend": None})  # fmt: skip


class EngineSettings(Model):
    # At most this many messages per contact in this window, across all sequences: "3 per 7d".
    # A capped step is postponed until the contact is under the cap again, never dropped.
    frequency_cap: str | None = None
    # No sequence message in these hours of the contact's night, e.g. "21:00-08:00": a step
    # due then waits for the morning (on top of the step's own send_window).
    quiet_hours: str | None = None
    # An event trigger takes an event reported this late (its `at` this long before it was
    # recorded); a later one is kept for segments and reports but enrolls no one.
    late_events: Duration = timedelta(days=1)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quiet_hours(value)
        return value

    @field_validator("frequency_cap")
    @classmethod
    def _cap(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cap(value)
        return value

    def cap(self) -> tuple[int, timedelta] | None:
        return None if self.frequency_cap is None else parse_cap(self.frequency_cap)


def parse_quiet_hours(text: str) -> str:
    """Quiet hours as the send window they leave: "21:00-08:00" -> "08:00-21:00", and a night
    that starts at midnight "00:00-06:00" -> "06:00-24:00". Read as times: "8:00" is 08:00."""
    hint = 'write the night, e.g. "21:00-08:00" or "00:00-06:00"'
    start, separator, end = text.partition("-")
    begins, ends = _clock_time(start), _clock_time(end)
    if not separator or begins is None or ends is None or begins == ends:
        raise ValueError(f'"{text}" are not quiet hours: {hint}')
    if begins > ends:  # across midnight
        return f"{ends:%H:%M}-{begins:%H:%M}"
    if begins == time(0):
        return f"{ends:%H:%M}-24:00"
    raise ValueError(f'"{text}" are not quiet hours: a night starts in the evening or at '
                     f"midnight and ends in the morning ({hint})")  # fmt: skip


def _clock_time(text: str) -> time | None:
    """`8:00`, `08:00`, `24:00` (midnight) as a time; None when it is not one."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    try:
        return time(0) if (hour, minute) == (24, 0) else time(hour, minute)
    except ValueError:
        return None


def parse_cap(text: str) -> tuple[int, timedelta]:
    count, separator, window = text.partition(" per ")
    if not separator or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f'"{text}" is not a frequency cap (write e.g. "3 per 7d")')
    return int(count), parse_duration(window)


class Scoring(Model):
    # The score halves every half_life (at least 14 days: see contacts/scoring.py).
    half_life: Duration = timedelta(days=30)
    # Points per "opened", "clicked", or website event name ("purchased", ...).
    points: dict[str, float] = {}
    # Points once, when a contact first matches a segment expression: 'orders >= 3' = 10.
    rules: dict[str, float] = {}

    @field_validator("half_life")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=14):
            raise ValueError("must be at least 14 days")
        return value


class Lifecycle(Model):
    # Ordered stages; every contact starts in the first. A contact moves up to the highest
    # stage whose rule (a segment expression) holds, never down on its own.
    stages: list[str] = []
    rules: dict[str, str] = {}


class ConsentSettings(Model):
    # `mailer run` writes a signed ledger checkpoint here once a day (UTC date): point it at a
    # folder outside the database's reach (another disk, a synced share) for an auditor.
    checkpoint_dir: Path | None = None


def _share(value: Any) -> float:
    """A rate of returns per message sent: "0.3%" or 0.003 -> 0.003."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f'"{value}" is not a rate (write e.g. "0.3%")') from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f'{value!r} is not a rate between 0 and 100% (write e.g. "0.3%")')
    return float(value)


Share = Annotated[float, BeforeValidator(_share)]


class Returns(Model):
    """What returned mail changes (returns/effects.py) and when sending stops on its own
    (returns/breakers.py). The defaults are the published limits: Gmail wants complaints under
    0.3% (aim under 0.1%); Amazon SES reviews an account at 5% bounces or 0.1% complaints and
    pauses it at 10% / 0.5%."""

    soft_bounces: int = Field(default=3, ge=1)  # this many soft bounces suppress an address...
    soft_window: Duration = timedelta(days=7)  # ...when they all came within this long
    breaker_window: Duration = timedelta(hours=24)  # the sliding window the rates are over
    # Fewer messages sent in the window than this: no rate is judged (one complaint among
    # ten messages is no evidence of anything).
    breaker_minimum: int = Field(default=200, ge=1)
    complaint_warn: Share = 0.001
    complaint_stop: Share = 0.003
    hard_bounce_warn: Share = 0.05
    hard_bounce_stop: Share = 0.10

    @model_validator(mode="after")
    def _warn_before_stop(self) -> Returns:
        for kind in ("complaint", "hard_bounce"):
            if getattr(self, f"{kind}_warn") > getattr(self, f"{kind}_stop"):
                raise ValueError(f"{kind}_warn must not be above {kind}_stop")
        return self


class Reports(Model):
    """Where `mailer report` flags a rate as unusual (beside it in the table, `flag` in
    --json): delivery, opens and clicks below their minimum, complaints and bounces above
    their maximum. The defaults are the usual ranges for permission-based mail."""

    delivery_min: Share = 0.90
    open_min: Share = 0.08
    click_min: Share = 0.005  # unique clicks per delivered message (click-through)
    complaint_max: Share = 0.001
    bounce_max: Share = 0.05
    # A rate is flagged only over at least this many messages (its denominator): 1 open in 20
    # says nothing yet about a list, and a flag on it would send a marketer chasing noise.
    flag_from: int = Field(default=100, ge=1)
    # `mailer serve` shows the report at /reports behind basic auth with these credentials;
    # without a username and a password, /reports answers 404.
    username: str | None = None
    password: SecretStr | None = None  # MAILER_REPORTS__PASSWORD, never in settings.toml
    password_file: Path | None = None


def _kept_for(value: Any) -> timedelta | None:
    """A retention period: "never" (keep for good, None) or a duration over zero."""
    if value == "never" or value is None:
        return None
    duration = _duration(value)
    if duration <= timedelta(0):
        raise ValueError(f'{value!r}: keep for a duration over zero (e.g. "400 days"), or "never"')
    return duration


KeptFor = Annotated[timedelta | None, BeforeValidator(_kept_for)]


class Retention(Model):
    """How long raw rows stay (retention.py, `mailer retention run`, daily in `mailer run`).
    The consent ledger is never pruned."""

    # Opens and clicks (people's and machines') older than this are rolled up per message and
    # day, then deleted: `mailer report` counts the same.
    events_after: KeptFor = timedelta(days=400)
    # Website events (`mailer event`, the events API): segments and goals read them without a
    # time bound ("bought twice"), so they are kept unless this says otherwise.
    website_events_after: KeptFor = None
    # A sent message's click targets (outbox.links): a link clicked after this answers the
    # not-found page.
    rendered_after: KeptFor = timedelta(days=400)
    # Returned messages (bounces, complaints, replies...): rolled up per message and day, then
    # deleted; longer than [returns] soft_window and breaker_window, which read them raw.
    returns_after: KeptFor = timedelta(days=400)


class Inbound(Model):
    """`mailer inbound` (and `mailer run` when enabled): the SMTP listener for what comes back
    to bounces+TOKEN@, unsubscribe+TOKEN@ (the bounce domain) and the feedback-loop address."""

    enabled: bool = False  # `mailer run` listens too
    host: str = "127.0.0.1"
    port: int = Field(default=2526, ge=1, le=65535)
    # Maildir-style: tmp/, new/ (stored, answered 250), cur/ (processed), unparseable/.
    spool_dir: Path = Path(".mailer/inbound")
    fbl_address: str | None = None  # where feedback loops send ARF reports, e.g. fbl@example.com
    max_size: int = Field(default=10 * 1024 * 1024, ge=1024)  # bytes; larger: 552 at DATA
    replies_to: str | None = None  # the person's inbox replies are forwarded to ([sender])
    # `mailer inbound` alone serves Prometheus metrics on metrics_host:metrics_port (`mailer
    # run` and `mailer serve` have /metrics on the tracking endpoint); None: not served. Not on
    # `host`: a listener taking the MX's port 25 on 0.0.0.0 keeps its metrics private.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("fbl_address", "replies_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return Sender._address(value)


class SesWebhook(Model):
    """POST /webhooks/ses: SNS notifications, signed with the certificate given here (PEM,
    downloaded once from the SigningCertURL of your topic; never fetched per message)."""

    enabled: bool = False
    certificate: SecretStr | None = None
    certificate_file: Path | None = None
    topic_arn: str | None = None  # only this topic's messages; None: any topic
    # Visit the SubscribeURL of a signed confirmation (only an https *.amazonaws.com one);
    # off: it is logged for you to open.
    confirm_subscriptions: bool = False


class PostmarkWebhook(Model):
    """POST /webhooks/postmark: bounce and spam complaint webhooks, with basic auth."""

    enabled: bool = False
    username: str = "postmark"
    password: SecretStr | None = None
    password_file: Path | None = None


class SendgridWebhook(Model):
    """POST /webhooks/sendgrid: the signed event webhook (its ECDSA verification key)."""

    enabled: bool = False
    public_key: SecretStr | None = None
    public_key_file: Path | None = None


class MailgunWebhook(Model):
    """POST /webhooks/mailgun: its HMAC webhook signing key."""

    enabled: bool = False
    signing_key: SecretStr | None = None
    signing_key_file: Path | None = None


WebhookEventType = Literal["sent", "bounced", "complained", "opened", "clicked", "unsubscribed",
                           "confirmed", "converted", "survey_answered"]  # fmt: skip
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = get_args(WebhookEventType)


class OutgoingWebhook(Model):
    """[webhooks.outgoing.NAME]: a URL that receives the events named, each as a signed JSON
    POST from a queue in the database (webhooks_out/)."""

    url: str
    events: list[Literal["*"] | WebhookEventType] = Field(min_length=1)  # "*": every type
    # The HMAC key: MAILER_WEBHOOKS__OUTGOING__<NAME>__SECRET, or the file named here.
    secret: SecretStr | None = None
    secret_file: Path | None = None
    timeout: Duration = timedelta(seconds=5)  # no answer in time is a failed attempt

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        return _https_or_localhost(value, "events name people")

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class Webhooks(Model):
    """Bounces and complaints from an ESP the relay is (returns/webhooks/). A provider that is
    not enabled answers 404. `outgoing`: our own events, sent to other systems."""

    # A signed call older than this is refused as a replay (the provider's clock may differ).
    max_age: Duration = timedelta(minutes=5)
    ses: SesWebhook = SesWebhook()
    postmark: PostmarkWebhook = PostmarkWebhook()
    sendgrid: SendgridWebhook = SendgridWebhook()
    mailgun: MailgunWebhook = MailgunWebhook()
    outgoing: dict[str, OutgoingWebhook] = {}
    # Delivered outgoing events are deleted after this long (the dead ones stay for `retry`).
    outgoing_retention: Duration = timedelta(days=7)


class DatabasePool(Model):
    """Each process's pool of database connections: `pool_size` kept open, up to
    `max_overflow` more at peak, and a request for one waits `pool_timeout` at most."""

    pool_size: int = Field(default=5, ge=1, le=1000)
    max_overflow: int = Field(default=10, ge=0, le=1000)
    pool_timeout: Duration = timedelta(seconds=30)


class Settings(Model):
    database_url: str = "sqlite:///.mailer/mailer.db"
    database: DatabasePool = DatabasePool()
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    templates_dir: Path = Path("templates")
    sender: Sender
    smtp: Smtp = Smtp()
    delivery: Delivery = Delivery()
    tracking: Tracking = Tracking()
    dkim: Dkim | None = None
    engine: EngineSettings = EngineSettings()
    scoring: Scoring = Scoring()
    lifecycle: Lifecycle = Lifecycle()
    consent: ConsentSettings = ConsentSettings()
    returns: Returns = Returns()
    inbound: Inbound = Inbound()
    webhooks: Webhooks = Webhooks()
    reports: Reports = Reports()
    retention: Retention = Retention()
    default_timezone: str = "UTC"  # for contacts without one
    default_locale: str = "en"
    attributes: dict[str, AttributeType] = {}
    lists: dict[str, ContactList] = {}
    segments: dict[str, str] = {}
    campaigns: dict[str, Campaign] = {}

    _root: Path = PrivateAttr(default=Path("."))
    _source: Path = PrivateAttr(default=Path("settings.toml"))

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f'"{value}" is not an IANA time zone (e.g. Europe/London, '
                             "America/New_York, UTC)") from None  # fmt: skip
        return value

    @property
    def root(self) -> Path:
        """The folder settings.toml is in: relative paths in settings start here."""
        return self._root

    @property
    def source(self) -> Path:
        return self._source

    def path(self, relative: Path | str) -> Path:
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else self._root / candidate

    def resolved_database_url(self) -> str:
        """The database URL, with a relative SQLite file placed beside settings.toml."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            file = self.database_url[len(prefix) :]
            if file and file != ":memory:" and not Path(file).is_absolute():
                return prefix + str(self.path(file))
        return self.database_url

    def secret(self) -> bytes:
        """The key that signs tokens and hashes addresses; the same for the database's life."""
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
        elif self.secret_key_file is not None and self.path(self.secret_key_file).exists():
            try:
                value = self.path(self.secret_key_file).read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or "not UTF-8 text"
                raise SettingsError(
                    f"{self._source}: secret_key_file: cannot read "
                    f"{self.path(self.secret_key_file)} ({reason}); make it a readable text "
                    "file holding the key, or set MAILER_SECRET_KEY"
                ) from None
        else:
            where = self.path(self.secret_key_file) if self.secret_key_file else None
            raise SettingsError(
                f"{self._source}: no secret key: set MAILER_SECRET_KEY"
                + (f", or run `mailer init` to create {where}" if where else "")
            )
        if len(value) < 32:
            raise SettingsError(f"{self._source}: secret_key: must be at least 32 characters")
        return value.encode()

    def smtp_password(self, name: str = PRIMARY_RELAY) -> str | None:
        """A relay's password: MAILER_SMTP__PASSWORD (MAILER_SMTP__FALLBACKS__<NAME>__PASSWORD),
        or the file its password_file names."""
        relay = dict(self.relays())[name]
        if relay.password is not None:
            return relay.password.get_secret_value()
        if relay.password_file is not None:
            try:
                return self.path(relay.password_file).read_text().strip()
            except OSError as error:
                raise SettingsError(
                    f"{self._source}: {relay_key(name)}.password_file: cannot read "
                    f"{error.filename} ({error.strerror})"
                ) from None
        return None

    def relays(self) -> list[tuple[str, Relay]]:
        """Every relay by name, the primary ([smtp]) first, then its fallbacks in order."""
        return [(PRIMARY_RELAY, self.smtp), *self.smtp.fallbacks.items()]

    def contact_list(self, name: str) -> ContactList:
        try:
            return self.lists[name]
        except KeyError:
            known = ", ".join(sorted(self.lists)) or "none"
            raise SettingsError(
                f"{self._source}: list '{name}' is not defined under [lists] (known: {known})"
            ) from None


def relay_key(name: str) -> str:
    """Where settings.toml writes the relay `name`: `smtp`, `smtp.fallbacks.backup`."""
    return "smtp" if name == PRIMARY_RELAY else f"smtp.fallbacks.{name}"


def _no_settings(source: Path) -> str:
    """What to do when the settings file is missing: make a project, or point at one."""
    if source == Path("settings.toml"):
        return (f"no settings.toml in {Path.cwd()}: create a project here with `mailer new .`, "
                "or pass --config PATH (or set MAILER_CONFIG)")  # fmt: skip
    if source.name != "settings.toml":
        return f"{source}: no such settings file (check the path)"
    return (f"{source}: no such settings file (check the path, or create a project there with "
            f"`mailer new {source.parent}`)")  # fmt: skip


def load_settings(
    path: Path | str, environ: dict[str, str] | None = None, warn: Callable[[str], None] = _stderr
) -> Settings:
    """Read, override from the environment, and validate; raise SettingsError listing every
    problem as `FILE: dotted.path: what is wrong`. A MAILER_* variable that names no setting
    is only a warning, passed to `warn`."""
    source = Path(path)
    environ = dict(os.environ if environ is None else environ)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(_no_settings(source)) from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{source}: {_toml_position(error)}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{source}: is not UTF-8 text") from None

    problems = [
        f"{source}: {'.'.join(key)}: secrets may not be written in settings; use {instead}"
        for key, instead in _written_secrets(raw)
    ]
    origins = _apply_environment(raw, environ, warn)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        problems += [_describe(source, origins, detail) for detail in error.errors()]
        raise SettingsError("\n".join(problems)) from None
    problems += [f"{source}: {problem}" for problem in _cross_references(settings)]
    if problems:
        raise SettingsError("\n".join(problems))
    settings._root = source.resolve().parent
    settings._source = source
    return settings


def _toml_position(error: tomllib.TOMLDecodeError) -> str:
    # tomllib ends its message with "(at line L, column C)"; put the place first, like a compiler.
    match = re.search(r"\(at line (\d+), column (\d+)\)$", str(error))
    if match is None:
        return str(error)
    return f"line {match.group(1)}, column {match.group(2)}: {str(error)[: match.start()].strip()}"


def _written_secrets(raw: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """The secrets settings.toml holds, each with where it belongs instead ("*" expanded)."""
    for key, instead in _SECRETS.items():
        if "*" not in key:
            if _lookup(raw, key) is not None:
                yield key, instead
            continue
        star = key.index("*")
        names = _lookup(raw, key[:star])
        for name in names if isinstance(names, dict) else ():
            concrete = (*key[:star], name, *key[star + 1 :])
            if _lookup(raw, concrete) is not None:
                yield concrete, instead.replace("<NAME>", name.upper())


def _is_secret(path: list[str]) -> bool:
    return any(len(key) == len(path) and all(k in ("*", p) for k, p in zip(key, path, strict=True))
               for key in _SECRETS)  # fmt: skip


def _lookup(tree: dict[str, Any], key: tuple[str, ...]) -> Any:
    node: Any = tree
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _apply_environment(
    raw: dict[str, Any], environ: dict[str, str], warn: Callable[[str], None]
) -> dict[str, str]:
    """Merge MAILER_* overrides into `raw`; return dotted path -> variable, for error messages.
    A variable that names no setting is ignored with a warning: another tool's MAILER_* must
    not stop every command."""
    origins = {}
    for variable, text in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable in _ENV_NOT_SETTINGS:
            continue
        path = variable[len(ENV_PREFIX) :].lower().split("__")
        if not _names_a_setting(path):
            warn(_not_a_setting(variable, raw))
            continue
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SettingsError(f"{variable}: '{part}' is a value in settings, not a table")
            node = child
        # A secret is text as given, even when it looks like a number or a TOML value.
        node[path[-1]] = text if _is_secret(path) else _environment_value(text)
        origins[".".join(path)] = variable
    return origins


def _names_a_setting(path: list[str]) -> bool:
    """Whether `path` is a key settings.toml may hold: a field of a table, any key of a map."""
    annotation: Any = Settings
    for part in path:
        model = _model(annotation)
        if model is not None and part in _fields(model):
            annotation = _fields(model)[part].annotation
        elif model is None and get_origin(annotation) is dict and part:
            annotation = get_args(annotation)[1]
        else:
            return False
    return True


def _model(annotation: Any) -> type[BaseModel] | None:
    """The table model of a field (`Dkim | None` is a table too), or None for a value or map."""
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    for candidate in (annotation, *options):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key settings.toml spells them with (`list`, not `list_name`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _not_a_setting(variable: str, raw: dict[str, Any]) -> str:
    known = [*_ENV_NOT_SETTINGS, *_setting_variables(Settings, raw, ENV_PREFIX)]
    close = difflib.get_close_matches(variable, known, n=1, cutoff=0.85)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"warning: {variable} is not a mailer setting; ignored{hint}"


def _setting_variables(annotation: Any, node: Any, prefix: str) -> Iterator[str]:
    """The variables that override settings: every field, and the map keys `node` holds."""
    model = _model(annotation)
    if model is not None:
        keys = {key: field.annotation for key, field in _fields(model).items()}
    elif get_origin(annotation) is dict and isinstance(node, dict):
        keys = dict.fromkeys(node, get_args(annotation)[1])
    else:
        return
    for key, child in keys.items():
        yield prefix + key.upper()
        below = node.get(key) if isinstance(node, dict) else None
        yield from _setting_variables(child, below, f"{prefix}{key.upper()}__")


def _environment_value(text: str) -> Any:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(source: Path, origins: dict[str, str], detail: Any) -> str:
    location = detail["loc"]
    dotted = ""
    for part in location:
        dotted += f"[{part}]" if isinstance(part, int) else f".{part}" if dotted else str(part)
    message = str(detail["msg"]).removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        allowed = _allowed_keys(location[:-1])
        message = "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    elif detail["type"] == "missing":
        message = "is required but missing"
    elif detail["type"] != "value_error" and not isinstance(detail.get("input"), dict | list):
        message = f"{detail['input']!r}: {message}"
    origin = origins.get(".".join(str(part) for part in location))
    return f"{source}: {dotted}: {message}" + (f" (from {origin})" if origin else "")


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    """The keys the model at `location` accepts, to suggest the right spelling."""
    annotation: Any = Settings
    for part in location:
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = field.annotation if field else None
        elif origin in (dict, list):
            annotation = get_args(annotation)[-1]
        else:
            return []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _cross_references(settings: Settings) -> list[str]:
    """Checks across sections that a single model cannot make."""
    problems = []
    known_lists = ", ".join(sorted(settings.lists)) or "none"
    named = [*settings.lists, *settings.campaigns, *settings.segments]
    for name in [*named, *settings.webhooks.outgoing, *settings.smtp.fallbacks]:
        if not _NAME.match(name):
            problems.append(f"{name}: names must be lowercase letters, digits, '-' or '_'")
    if PRIMARY_RELAY in settings.smtp.fallbacks:
        problems.append(f"smtp.fallbacks.{PRIMARY_RELAY}: '{PRIMARY_RELAY}' names [smtp] "
                        "itself; give the fallback another name")  # fmt: skip
    for rule in settings.scoring.rules:
        if len(rule) > 95:
            problems.append(f"scoring.rules: '{rule[:30]}...' is longer than 95 characters")
    for stage in settings.lifecycle.rules:
        if stage not in settings.lifecycle.stages:
            problems.append(f"lifecycle.rules.{stage}: not one of lifecycle.stages")
    for name, contact_list in settings.lists.items():
        for header, field in contact_list.columns.items():
            if not field:
                problems.append(f'lists.{name}.columns.{header}: map it to a field, or "-"')
    kept = settings.retention.returns_after
    for name in ("soft_window", "breaker_window"):
        window = getattr(settings.returns, name)
        if kept is not None and kept <= window:
            problems.append(f"retention.returns_after: {format_duration(kept)} is not longer "
                            f"than returns.{name} ({format_duration(window)}), which counts "
                            "returned messages one by one: keep them longer")  # fmt: skip
    if settings.sender.reply_tracking and not settings.inbound.replies_to:
        problems.append("inbound.replies_to: sender.reply_tracking forwards replies to a "
                        'person: give their address (e.g. "hello@example.com")')  # fmt: skip
    for name, campaign in settings.campaigns.items():
        where = f"campaigns.{name}"
        if campaign.list_name not in settings.lists:
            problems.append(
                f"{where}.list: '{campaign.list_name}' is not a list defined under [lists] "
                f"(known: {known_lists})"
            )
        if campaign.kind == "sequence":
            if not campaign.steps:
                problems.append(f"{where}.steps: a sequence needs at least one step")
            seen: set[str] = set()
            names = [step.name for step in campaign.steps]
            for index, step in enumerate(campaign.steps):
                if step.name in seen:
                    problems.append(f"{where}.steps[{index}].name: '{step.name}' is used twice")
                seen.add(step.name)
                if step.otherwise is not None and step.otherwise not in names[index + 1 :]:
                    problems.append(f"{where}.steps[{index}].otherwise: '{step.otherwise}' is "
                                    "not a later step of this sequence")  # fmt: skip
                if step.otherwise is not None and step.condition is None:
                    problems.append(f"{where}.steps[{index}].otherwise: needs a condition")
                if step.at is not None and (wrong := _misplaced_at(campaign, index, step)):
                    problems.append(f"{where}.steps[{index}].at: {wrong}")
        else:
            for field in ("template", "subject", "segment", "send_at"):
                if getattr(campaign, field) is None:
                    problems.append(f"{where}.{field}: a broadcast needs {field}")
            if campaign.send_at is not None and (wrong := _not_a_time(campaign.send_at)):
                problems.append(f"{where}.send_at: {wrong}")
            if campaign.steps:
                problems.append(f"{where}.steps: a broadcast has no steps (use template)")
            if campaign.exit_on_reply:
                problems.append(f"{where}.exit_on_reply: a broadcast has no run to end")
            problems += _ab_problems(where, campaign) + _send_time_problems(where, campaign)
        if campaign.kind == "sequence" and campaign.ab is not None:
            problems.append(f"{where}.ab: an auto-winner test is for broadcasts (a sequence's "
                            "variants are compared in mailer report)")  # fmt: skip
        for label, variant in _all_variants(campaign):
            if variant.send_at is not None and campaign.kind == "sequence":
                problems.append(f"{where}.{label}.send_at: send-time variants are for "
                                "broadcasts (a step goes its delay after the one "
                                "before)")  # fmt: skip
        if campaign.segment is not None and campaign.segment not in settings.segments:
            problems.append(
                f"{where}.segment: '{campaign.segment}' is not defined under [segments]"
            )
    return problems


def _all_variants(campaign: Campaign) -> list[tuple[str, Variant]]:
    """Every variant of the campaign, with where settings write it."""
    found = [(f"variants.{label}", variant) for label, variant in campaign.variants.items()]
    for index, step in enumerate(campaign.steps):
        found += [(f"steps[{index}].variants.{label}", variant)
                  for label, variant in step.variants.items()]  # fmt: skip
    return found


def _ab_problems(where: str, campaign: Campaign) -> list[str]:
    """Why a broadcast's auto-winner test cannot run as written (none: an empty list)."""
    test = campaign.ab
    if test is None:
        return []
    problems = []
    labels = ["A", *campaign.variants]
    if len(labels) < 2:
        problems.append(f"{where}.ab: an A/B test needs a variant besides A "
                        '(e.g. variants.B.subject = "...")')  # fmt: skip
    if len(labels) > MAX_VARIANTS:
        problems.append(f"{where}.variants: an auto-winner test takes at most {MAX_VARIANTS} "
                        f"variants (A and {MAX_VARIANTS - 1} more), not {len(labels)}")  # fmt: skip
    if test.default not in labels:
        problems.append(f"{where}.ab.default: '{test.default}' is not a variant of this "
                        f"broadcast ({', '.join(labels)})")  # fmt: skip
    if test.decide_by == "conversions" and not campaign.goal:
        problems.append(f'{where}.goal: decide_by = "conversions" counts who reaches the '
                        "goal after the test went: write one, e.g. "
                        """goal = 'event "purchased"'""")  # fmt: skip
    send_time = any(variant.send_at is not None for variant in campaign.variants.values())
    if send_time and test.test_fraction not in (None, 1):
        problems.append(f"{where}.ab.test_fraction: a send-time test sends every recipient "
                        "their variant at its time: leave test_fraction out (or write "
                        "1)")  # fmt: skip
    elif not send_time and test.test_fraction is None:
        problems.append(f"{where}.ab.test_fraction: write the share of the list that gets the "
                        "test (e.g. 0.2)")  # fmt: skip
    elif not send_time and test.test_fraction == 1:
        problems.append(f"{where}.ab.test_fraction: 1 leaves nobody for the winner: write the "
                        "share that gets the test (e.g. 0.2)")  # fmt: skip
    if not send_time and campaign.send_at is not None and _local(campaign.send_at):
        problems.append(f"{where}.ab: an auto-winner test needs an absolute send_at (e.g. "
                        '"2026-03-20T09:00Z"): a local-time broadcast goes out zone by '
                        "zone, and the winner would come too late for the zones already "
                        "sent")  # fmt: skip
    return problems


def _send_time_problems(where: str, campaign: Campaign) -> list[str]:
    """Why a broadcast's send-time variants (variants.X.send_at) cannot go as written."""
    problems = []
    start = None
    if campaign.send_at is not None and _not_a_time(campaign.send_at) is None:
        start = parse_send_at(campaign.send_at)[0]
    for label, variant in campaign.variants.items():
        at = f"{where}.variants.{label}.send_at"
        if variant.send_at is None:
            continue
        if campaign.ab is None:
            problems.append(f"{at}: a send-time variant is an A/B test: add [{where}.ab] with "
                            "wait and decide_by")  # fmt: skip
        elif wrong := _not_a_time(variant.send_at):
            problems.append(f"{at}: {wrong}")
        elif _local(variant.send_at) or _local(campaign.send_at or ""):
            problems.append(f'{at}: a send-time test needs absolute times (e.g. '
                            '"2026-03-20T18:00Z"), the broadcast\'s send_at too: a local-time '
                            "broadcast goes out zone by zone over 26 hours, each variant's "
                            "group would too, and the groups of different zones would overlap "
                            "in time")  # fmt: skip
        elif start is None:
            continue  # the broadcast's send_at is missing or not a time: reported as such
        elif (moment := parse_send_at(variant.send_at)[0]) < start:
            problems.append(f"{at}: {variant.send_at} is before the broadcast's send_at "
                            f"({campaign.send_at}): variant A goes at send_at, the others then "
                            "or later")  # fmt: skip
        elif moment > start + MAX_SEND_TIME_SPREAD:
            problems.append(f"{at}: {variant.send_at} is more than "
                            f"{MAX_SEND_TIME_SPREAD.days} days after the broadcast's "
                            f"send_at ({campaign.send_at}): the winner waits for the last "
                            "group")  # fmt: skip
    return problems


def _local(send_at: str) -> bool:
    try:
        return parse_send_at(send_at)[1]
    except SettingsError:
        return False  # reported as a bad send_at


def _misplaced_at(campaign: Campaign, index: int, step: Step) -> str | None:
    """Why a step's `at` cannot be kept, or None: it is the first step's time of day on the
    date of a date trigger, and `delay` may add only whole days to that date."""
    if index != 0 or not re.match(r"\s*date\s", campaign.trigger or ""):
        return ('a time of day is for the first step of a date trigger (date "birthday"); '
                "later steps wait their delay")  # fmt: skip
    if step.delay.seconds:
        return (f'with at = "{step.at:%H:%M}", delay counts whole days after the date '
                '(e.g. "1 day")')  # fmt: skip
    return None


def _not_a_time(send_at: str) -> str | None:
    """Why a broadcast's send_at is not a time (`tomorrow`), or None."""
    try:
        parse_send_at(send_at)
    except SettingsError as error:
        return str(error)
    return None
