"""Embedding backends behind one protocol. Importing this package imports no torch."""

from modelcache.backends.base import Encoder, Kind

__all__ = ["Encoder", "Kind"]
