"""Talking to a Hub or mirror (the network): remote listings, resumable transfers, retries, the pull.

Nothing here is imported on a cached load: the HTTP stack loads only when a pull needs it."""
