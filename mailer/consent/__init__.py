"""Consent: the tamper-evident ledger, the current status it implies, suppressions, and what an
auditor asks of one person (show, history, export, erase)."""
