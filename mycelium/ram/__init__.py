"""RAM replication for Endophytes (filled by a later issue)."""
