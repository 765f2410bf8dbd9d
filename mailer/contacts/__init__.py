"""Contacts: addresses, lists and memberships, import and export."""
