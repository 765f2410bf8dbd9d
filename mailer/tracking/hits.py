"""An open or a click as the endpoint saw it, before it is written: plain data, so that telling
people from machines is a pure function of it (tracking/bots.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple


class Hit(NamedTuple):
    """A tuple: made for every pixel request and pickled to the writer process, at a third
    of a frozen dataclass's cost."""

    kind: Literal["open", "click"]
    message_key: str  # the outbox row the token names (delivery.claims.outbox_id reads it)
    link: int | None  # a click's link index in the sent message
    at: datetime
    user_agent: str
    ip: str
    method: str  # GET or HEAD (a HEAD is a machine checking the link)


@dataclass(frozen=True)
class Verdict:
    machine: bool
    reason: str | None  # why it is taken for a machine, e.g. "Apple Mail Privacy Protection"


@dataclass(frozen=True)
class StoredHit:
    """An open or click of the message already in the events table, as the rules see it."""

    id: int
    kind: Literal["open", "click"]  # what was fetched, whoever fetched it
    link: int | None
    at: datetime
    machine: str | None  # why it was stored as a machine's, or None for a person's
