"""Mycelium: a self-hosting decentralized node daemon."""

__version__ = "0.1.0"

# Wire and control-API versions are separate from the package version: they change only when a
# peer or a CLI of another version could misread us. Append-only history lives in their modules.
