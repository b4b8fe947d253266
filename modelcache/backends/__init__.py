"""Embedding backends behind one protocol. Importing this package imports no torch."""

from .base import Encoder, Kind

__all__ = ["Encoder", "Kind"]
