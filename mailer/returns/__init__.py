"""The return path: what comes back after sending (bounces, complaints, auto-replies), how it
is told apart, matched to the message we sent, and what it changes."""
