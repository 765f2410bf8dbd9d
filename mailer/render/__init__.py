"""Rendering: turning a campaign step and a contact into a message."""
