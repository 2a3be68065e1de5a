"""Benchmarks: `python -m bench all --json` prints one JSON line per figure."""
