"""Serving vectors: the fallback chain (``EmbeddingService``), its tiers and recovery, the
micro-batcher, the adapters' shared options and service handle."""
