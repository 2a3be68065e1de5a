"""Commit-reveal BFT state machine (pure) and its trio driver; trust and slashing."""
