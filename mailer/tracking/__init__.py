"""The tracking endpoint: the HTTP service recipients and the website talk to (opens, clicks,
unsubscribes, lead forms, website events)."""
