"""The on-disk cache, disk only (no network): the HF-layout store, file integrity, the lockfile of
pins, the disk budget, embedding-space fingerprints, the one publish transaction, upgrade history."""
