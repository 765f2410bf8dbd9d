"""The tables. Alembic migrations (store/migrations) create them; this module describes them.

`tests/store/test_migrations.py` proves the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-assigns INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")
# Tables keyed by a composite primary key: on SQLite, store rows in the key's own B-tree
# rather than in a rowid table plus a unique index (half the writes on a big import).
WITHOUT_ROWID: dict[str, Any] = {"sqlite_with_rowid": False}


def only_where(condition: str) -> dict[str, Any]:
    """A partial index's condition, on both engines: rows outside it cost no index write."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


# events.link: a click's link index from its properties (SQLite a virtual column, PostgreSQL a
# stored one); NULL for other kinds, whose "link" may be anything.
CLICKS_ONLY = only_where("link IS NOT NULL")  # ix_events_clicks: opens do not enter it
WEBSITE_ONLY = only_where("kind = 'website'")  # ix_events_kind_name_id: the event triggers'
CLICKED_LINK = case((text("kind IN ('click', 'machine_click')"),
                     literal_column("properties", JSON)["link"].as_integer()))  # fmt: skip


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; naive UTC in SQLite (which has no zones), timestamptz in
    PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: mailer stores timezone-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # One C-level call instead of two Python layers: an import writes millions of these.
        # Same text as SQLAlchemy's own SQLite format ("2026-11-23 10:00:00.000000").
        def as_text(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is UTC:  # the clock's: its offset, "+00:00", cut off the text
                return value.isoformat(" ", "microseconds")[:-6]
            if value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r}: mailer stores timezone-aware times")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return as_text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


contacts = Table(
    "contacts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("timezone", String(64)),
    Column("locale", String(16)),
    Column("attributes", Json, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # The lead score, scaled to a fixed epoch so that decay needs no update: the score at
    # time t is score_epoch / 2 ** ((t - epoch) / half_life) (contacts/scoring.py).
    Column("score_epoch", Float, nullable=False, server_default="0"),
    Column("stage", String(32)),  # lifecycle stage (lead, prospect, customer, ...)
    Index(None, "updated_at"),
)

lists = Table(
    "lists",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("title", String(200), nullable=False),
    Column("double_opt_in", Boolean, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("joined_at", UTCDateTime, nullable=False),
    Column("source", String(200), nullable=False),
    Index(None, "contact_id"),
    Index(None, "list_id", "joined_at"),
    **WITHOUT_ROWID,
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Index(None, "tag"),
    **WITHOUT_ROWID,
)

# The consent ledger: append-only, each entry chained to the one before by hash. Entry ids are
# assigned by the ledger itself, contiguous from 1, so a deleted entry leaves a visible gap.
consent_entries = Table(
    "consent_entries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("subject_hash", String(64), nullable=False),
    Column("purpose", String(100), nullable=False),
    Column("action", String(16), nullable=False),
    Column("source", String(32), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("evidence_digest", String(64)),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index(None, "contact_id"),
    Index(None, "subject_hash"),
)

# Personal data of the evidence, kept apart so that erasing it leaves the chain verifiable.
# Stored as the exact canonical JSON text whose SHA-256 the chained entry carries.
consent_evidence = Table(
    "consent_evidence",
    metadata,
    Column("entry_id", Id, ForeignKey("consent_entries.id"), primary_key=True),
    Column("data", Text, nullable=False),
)

# Where the ledger ends: the single row every append locks, so appends are serialised.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("keyed_from", BigInteger),  # the first entry chained under the ledger key
    Column("head_mac", String(64)),  # HMAC of (last_id, last_hash, keyed_from) under that key
)

# The current consent per (contact, list): a projection of the ledger, kept in step with every
# append, so send-time checks and segments read one row instead of replaying history.
consent_status = Table(
    "consent_status",
    metadata,
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("purpose", String(100), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("since", UTCDateTime, nullable=False),
    Column("entry_id", Id, ForeignKey("consent_entries.id"), nullable=False),
    Index(None, "purpose", "since"),  # consent expiry reads only the statuses past its bound
    **WITHOUT_ROWID,
)

# Addresses never to be mailed again, by keyed hash so an erased person stays suppressed.
suppressions = Table(
    "suppressions",
    metadata,
    Column("address_hash", String(64), primary_key=True),
    Column("email", String(320)),
    Column("reason", String(32), nullable=False),
    Column("detail", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("entry_id", Id, ForeignKey("consent_entries.id")),
)

# What contacts did: website events (kind "website", name "viewed_product", properties) and
# engagement with messages (kind "open" / "click", name = campaign, step).
events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(100), nullable=False),
    Column("step", String(100)),
    Column("properties", Json, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    # The message (outbox row) an open, click or survey answer was of; NULL for website events
    # and for hits recorded before migration 0019.
    Column("outbox_id", Id),
    # A click's link index, from its properties, computed by the database (migration 0024): the
    # pixel writer reads which links a message's clicks hold from ix_events_clicks alone.
    Column("link", Integer, Computed(CLICKED_LINK)),
    Index(None, "contact_id", "kind", "name", "occurred_at"),
    Index(None, "outbox_id", "occurred_at"),  # a message's hits around a batch (tracking)
    Index("ix_events_clicks", "outbox_id", "occurred_at", "kind", "link", **CLICKS_ONLY),
    Index(None, "kind", "name", "occurred_at"),
    # Event triggers read website events by id, in recording order: opens and clicks, most of
    # the rows, do not enter it (a cost on every pixel the writer stores: issue 16).
    Index(None, "kind", "name", "id", **WEBSITE_ONLY),
)
# The condition that lets a query use that index: written out in the SQL, since neither
# engine's planner can tell that a bound parameter is 'website' when it plans.
WEBSITE_EVENT = events.c.kind == literal_column("'website'")

# Score rules a contact has been awarded: the primary key makes an award happen once, however
# many ticks run at the same time (INSERT ... ON CONFLICT DO NOTHING, campaigns/score_rules.py).
awarded_rules = Table(
    "awarded_rules",
    metadata,
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("rule", String(200), primary_key=True),
    Column("awarded_at", UTCDateTime, nullable=False),
)

# A contact's way through a sequence. `cycle` counts re-entries (0 for the first); the next
# step is the one after `last_step` in the campaign as settings describe it now, due at
# `due_at` (indexed: a tick reads only the due rows).
enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Id, primary_key=True),
    Column("campaign", String(100), nullable=False),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # active, completed, converted, exited
    Column("entered_at", UTCDateTime, nullable=False),
    Column("last_step", String(100)),
    Column("last_position", Integer, nullable=False),  # -1 before the first step
    Column("last_step_at", UTCDateTime),
    Column("due_at", UTCDateTime),
    # While the next step is postponed (cap, window, consent): when it was first due. The
    # frequency cap gives a freed slot to the message that has waited longest.
    Column("waiting_since", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("reason", Text),
    UniqueConstraint("campaign", "contact_id", "cycle"),
    Index(None, "status", "due_at"),
    Index(None, "contact_id"),
)

# The unit of delivery: one row per message, unique per (campaign, step, contact, cycle), so
# no tick, retry or second process can queue the same message twice.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True),
    Column("campaign", String(100), nullable=False),
    Column("step", String(100), nullable=False),
    # NULL once the person is erased: the message stays, pseudonymised (consent/person.py).
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("cycle", Integer, nullable=False),
    Column("enrollment_id", Id, ForeignKey("enrollments.id", ondelete="SET NULL")),
    Column("variant", String(32)),
    # queued -> sending (claimed by a worker) -> sent | deferred (-> sending ...) | failed;
    # or skipped (a condition was false, or consent gate 2 said no).
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    # The ledger entry that allowed the message: at queueing, then again at sending (gate 2).
    Column("consent_entry_id", Id, ForeignKey("consent_entries.id")),
    Column("queued_at", UTCDateTime, nullable=False),
    # When the row may next be taken: at queueing, the retry time of a deferred message, or
    # the end of a worker's lease while it is sending (then another worker may take it).
    Column("send_after", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64)),
    Column("sent_at", UTCDateTime),
    Column("message_id", String(255)),
    Column("reply", Text),  # the relay's last answer, as it said it
    Column("relay", String(100)),  # the relay that gave it, by name (primary, or a fallback)
    Column("links", Text),  # JSON array: the click targets of the sent message, by link index
    UniqueConstraint("campaign", "step", "contact_id", "cycle"),
    Index(None, "status", "send_after"),  # claims, and every count by status
    Index(None, "contact_id"),
    # Sent rows only, so the tick's queued rows enter neither: what was sent in a window
    # (breakers, returns, retention, audits; a bound on sent_at implies IS NOT NULL), and a
    # returned message or an audit naming our Message-ID.
    Index(None, "sent_at", **only_where("sent_at IS NOT NULL")),
    Index(None, "message_id", **only_where("message_id IS NOT NULL")),
)

# Campaigns whose delivery is held: by an operator (`mailer campaign pause`) or by delivery
# itself when the relay refuses message after message.
campaign_pauses = Table(
    "campaign_pauses",
    metadata,
    Column("campaign", String(100), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("paused_at", UTCDateTime, nullable=False),
)

# How far each sequence's trigger has been read (joined_at / occurred_at), so a tick reads only
# what is new instead of every member of the list.
trigger_cursors = Table(
    "trigger_cursors",
    metadata,
    Column("campaign", String(100), primary_key=True),
    Column("seen_until", UTCDateTime, nullable=False),
    # Event triggers: the highest event id read, and where the next tick reads from (the
    # tick before's highest: PostgreSQL may commit a lower id after a higher one was read).
    Column("events_to", Id),
    Column("events_from", Id),
)

# A broadcast run: one per (campaign, send_at as normalised by send_times.send_at_key), so a
# send_at corrected or a name reused is a new run, and one run never goes out twice. `cycle`
# is the run's number among the campaign's runs, and its outbox rows' cycle.
broadcast_runs = Table(
    "broadcast_runs",
    metadata,
    Column("campaign", String(100), primary_key=True),
    Column("send_at", String(64), primary_key=True),
    Column("cycle", Integer, nullable=False),
    # sending | queued (some zone was) | stale (every zone too late) | empty (nobody in time)
    Column("state", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # The last tick that looked at the run: a zone whose time came before it, and that has no
    # broadcast_zones row, had nobody in it then, and is left out.
    Column("seen_until", UTCDateTime),
    # What the run sends (subject, template, segment and its expression, ...), as it began:
    # settings edited while it is sending hold it, so one run never sends two versions.
    Column("sends", Json),
    UniqueConstraint("campaign", "cycle"),
)

# Each zone of a broadcast run, once decided: queued (to who was in it then) or stale (its
# first due tick came more than a day late). One row per zone, so a zone is never queued twice.
# An absolute broadcast has one zone, `*`.
broadcast_zones = Table(
    "broadcast_zones",
    metadata,
    Column("campaign", String(100), primary_key=True),
    Column("send_at", String(64), primary_key=True),
    Column("zone", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # queued | stale
    Column("decided_at", UTCDateTime, nullable=False),
    Column("messages", Integer, nullable=False),
    ForeignKeyConstraint(
        ["campaign", "send_at"],
        ["broadcast_runs.campaign", "broadcast_runs.send_at"],
        ondelete="CASCADE",
    ),
    **WITHOUT_ROWID,
)

# The winner of a broadcast run's auto-winner A/B test (campaigns/ab_tests.py), decided once,
# `wait` after the test fraction was queued: by people's opens, clicks or conversions
# (`decide_by`); `numbers` is {variant: {"successes": n, "trials": n}} over the test messages
# sent; `rest_queued` the messages then queued to the rest with the winner.
ab_decisions = Table(
    "ab_decisions",
    metadata,
    Column("campaign", String(100), primary_key=True),
    Column("send_at", String(64), primary_key=True),
    Column("decide_by", String(16), nullable=False),  # opens | clicks | conversions
    Column("winner", String(32), nullable=False),  # A, B or C
    Column("reason", Text, nullable=False),
    Column("numbers", Json, nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("rest_queued", Integer, nullable=False),
    ForeignKeyConstraint(
        ["campaign", "send_at"],
        ["broadcast_runs.campaign", "broadcast_runs.send_at"],
        ondelete="CASCADE",
    ),
    **WITHOUT_ROWID,
)

# Every returned message acted on (bounce, complaint, auto-reply, mailto unsubscribe), once:
# the same report twice (a re-read mailbox, a redelivery) is one row and changes nothing twice.
# The recipient is kept as the suppressions' keyed hash, so an erasure leaves no address here.
returned_messages = Table(
    "returned_messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("digest", String(64), nullable=False),  # SHA-256 of the raw message
    Column("received_at", UTCDateTime, nullable=False),
    # hard | soft | delayed | complaint | not_bounce | unparseable | unsubscribe (mailto:) |
    # reply | stale (a bounce of a message older than [retention] returns_after: not acted on)
    Column("classification", String(16), nullable=False),
    Column("recipient_hash", String(64)),
    Column("status_code", String(16)),
    Column("feedback_type", String(64)),
    Column("outbox_id", Id, ForeignKey("outbox.id", ondelete="SET NULL")),
    Column("campaign", String(100)),  # the matched message's, for the per-campaign breakers
    Column("action", Text, nullable=False),  # what it changed, as apply_returned said
    UniqueConstraint("digest"),
    Index(None, "received_at", "classification"),
    Index(None, "recipient_hash", "received_at"),  # soft bounces within the window
)

# Returned messages older than [retention] returns_after (retention.py), once their rows are
# deleted: how many per UTC day, classification and message (outbox_id 0: matched none), so the
# report (each message's worst return), the compliance report's and the doctor's rates count
# what they counted before.
returned_rollups = Table(
    "returned_rollups",
    metadata,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC, of received_at
    Column("classification", String(16), primary_key=True),
    Column("outbox_id", Id, primary_key=True),  # no foreign key: 0 stands for none
    Column("events", Integer, nullable=False),
    **WITHOUT_ROWID,
)

# Each provider webhook call accepted (returns/webhooks/): the same call again is a replay.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("provider", String(16), primary_key=True),
    Column("delivery", String(64), primary_key=True),  # SHA-256 of what names the call
    Column("received_at", UTCDateTime, nullable=False),
)

# Outgoing webhooks (webhooks_out/): one row per (subscription, event), delivered by a POST.
# pending (due at next_attempt_at, also the lease of a delivery in flight) -> delivered | dead.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", Id, primary_key=True),
    Column("subscription", String(100), nullable=False),  # [webhooks.outgoing.NAME]
    Column("event_type", String(32), nullable=False),
    Column("payload", Json, nullable=False),  # the JSON body, its "id" the event's
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime),
    Index(None, "status", "next_attempt_at"),
    Index(None, "subscription", "status"),
)

# Token buckets shared by every process (store/limits.py): sending rates, the form's per-IP
# limit, the confirmation email's resend memory. A row whose bucket is full again is deleted.
shared_limits = Table(
    "shared_limits",
    metadata,
    Column("bucket", String(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("refilled_at", Float, nullable=False),  # epoch seconds
    Column("granted", Integer, nullable=False),  # what the last take got
    Column("full_at", Float, nullable=False),  # epoch seconds: full again, deletable
    # The limit it refills at: the lowest any process asserted, until strict_until (epoch
    # seconds); NULL in rows from before migration 0026, until their next take.
    Column("rate", Float),
    Column("burst", Float),
    Column("strict_until", Float),
    Index(None, "full_at"),
    **WITHOUT_ROWID,
)

# Opens and clicks older than [retention] events_after (retention.py), once their raw rows are
# deleted: per message, kind and UTC day, so `mailer report` counts what it counted before
# (unique per message, the period by the message's queued_at, the timeline by day).
event_rollups = Table(
    "event_rollups",
    metadata,
    Column("outbox_id", Id, primary_key=True),
    Column("kind", String(16), primary_key=True),  # open, click, machine_open, machine_click
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("events", Integer, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),  # the latest of them (consent expiry)
    **WITHOUT_ROWID,
)

# Website events older than [retention] website_events_after: how many per UTC day and name.
website_rollups = Table(
    "website_rollups",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("events", Integer, nullable=False),
    **WITHOUT_ROWID,
)

# The same website events, per contact: what `event "..."` conditions of segments and goals
# count once the raw rows are gone (an erased contact's rows go with the contact).
website_contact_rollups = Table(
    "website_contact_rollups",
    metadata,
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("events", Integer, nullable=False),
    Column("last_at", UTCDateTime, nullable=False),  # the latest of them
    **WITHOUT_ROWID,
)

# Work done once however often it is asked (store/once.py): the events API's Idempotency-Keys
# (`events:KEY`) and the tracking writer's batches (`hits:BATCH`), each with a digest of what
# it was asked with and the answer given, so that a try repeated gets it back. Kept a day.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(300), primary_key=True),  # 255 for a client's key, and its namespace
    Column("digest", String(64), nullable=False),  # SHA-256 hex, or "" where none is needed
    Column("answer", Text, nullable=False),  # JSON
    Column("answered_at", UTCDateTime, nullable=False),
    Index(None, "answered_at"),
    **WITHOUT_ROWID,
)

# Sign-up form posts answered and not yet recorded (store/form_posts.py): written before the
# answer, deleted once the post is recorded, so a serving process that dies in between loses
# nothing; any serving process records what another left. On SQLite in the side file.
form_posts = Table(
    "form_posts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("email", String(320), nullable=False),  # as the form normalised it (erasure finds it)
    Column("lead", Json, nullable=False),  # tracking.forms.Lead's fields
    Column("evidence", Json, nullable=False),  # at, ip, user agent, consent text, form id
    Index(None, "received_at"),
)

# Relays found down (delivery/relay_board.py), one row per host and port, read by every process
# at each batch claim: a second `mailer run` skips a relay the first found down. The process
# that takes a probe moves probe_at forward in the same UPDATE, so one process probes at a time.
relays_down = Table(
    "relays_down",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("port", Integer, primary_key=True),
    Column("since", UTCDateTime, nullable=False),
    Column("probe_at", UTCDateTime, nullable=False),
    Column("failures", Integer, nullable=False),  # the one that took it down and failed probes
    Column("reason", Text, nullable=False),
    **WITHOUT_ROWID,
)
