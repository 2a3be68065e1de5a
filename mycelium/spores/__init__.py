"""Spore data model, codec, validation, merge and limits: pure, no I/O."""
