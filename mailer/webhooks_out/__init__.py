"""Outgoing webhooks: mailer's events (sent, bounced, opened, ...) POSTed to the URLs that
[webhooks.outgoing.NAME] subscribes, signed, from a queue in the database.

`events` writes the queue in the transaction of the change itself; `queue` claims, retries and
counts its rows; `sender` POSTs them; `signature` is what a receiver checks."""

from mailer.webhooks_out.events import WebhookEvent, enqueue

__all__ = ["WebhookEvent", "enqueue"]
