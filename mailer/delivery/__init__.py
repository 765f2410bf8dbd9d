"""Delivery: from queued outbox rows to messages accepted by an SMTP relay."""
