"""The JSON schemas the CLI prints with --json: DTOs we own, built field by field from the node's
state (never our internal objects serialised as they are). Documented in README ("Status JSON").
Fields are only ever added; a removed or retyped field breaks users' scripts."""

from __future__ import annotations

from typing import Any

STATUS_SCHEMA_VERSION = 1


def status(node: Any) -> dict:
    ledger = node.ledger
    me = node.key.node_id
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "version": _version(),
        "node_id": me,
        "addresses": list(node.addresses()),
        "network_id": node.membership.network_id,
        "network_name": node.membership.name,
        "personal_network": node.membership.personal,
        "role": ledger.role_of(me),
        "role_reason": ledger.role_reason(me),
        "max_role": node.cfg.node.max_role,
        "epoch": ledger.height,
        "primary_hash": ledger.head_hash.hex() if ledger.head_hash else None,
        "validators": ledger.validators(),
        "members": ledger.member_count(),
        "admitted": ledger.is_member(me),
        "peers": node.peer_count(),
        "read_only": node.read_only(),
        "read_only_reason": node.read_only_reason(),
        "runtime": node.runtime_name(),
        "services": ledger.service_count(),
        "uptime_s": node.uptime_s,
        "state_dir": str(node.cfg.state_dir),
    }


def _version() -> str:
    from mycelium import __version__

    return __version__
