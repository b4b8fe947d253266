"""Test support: tiny sentence-transformers models, a local olah Hub and a fault proxy.

Nothing here imports ``modelcache``: the fixtures must work with plain huggingface_hub.
"""
