"""Agent memory, framework-free: the memory database (SQLite + FTS5, the source of truth), rank
fusion, and the engine both adapters' managed vector stores are built on."""
