"""Campaigns: segments, sequences, broadcasts (the engine that decides who gets what, when)."""
