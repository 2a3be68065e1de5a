"""Local durable state (SQLite) and the distributed chunk store."""
