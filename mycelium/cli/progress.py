"""Progress lines for long operations (pure: a status or service row in, a line out; the CLI prints
a line whenever it changes, on stderr). join: connecting → waiting for the chain → join submitted →
admitted as ROLE. deploy --wait: replicas coming up, per node."""

from __future__ import annotations

from typing import Any

JOIN_DONE = "admitted"


def join_stage(st: dict[str, Any]) -> tuple[str, str]:
    """(stage key, line) for a joining node's `mycelium status --json`."""
    if st.get("admitted"):
        return JOIN_DONE, f"admitted as {st['role']} ({st.get('role_reason') or 'role decided by the ledger'})"
    reason = st.get("role_reason") or ""
    if "waiting for the network's chain" in reason or st.get("primary_hash") is None:
        if not st.get("peers"):
            return "connecting", f"connecting to the network {st.get('network_name', '')} (no member reached yet)"
        return "chain", f"waiting for the chain ({st['peers']} member(s) reached)"
    return "submitted", f"join submitted at height {st.get('epoch', 0)}; waiting for a validator to decide it"


def deploy_line(name: str, row: dict[str, Any] | None) -> str:
    """One line of a service's rollout for `deploy --wait`."""
    if row is None:
        return f"{name}: waiting for the deploy to be decided"
    ready = row.get("up_to_date", row.get("running", 0))
    per_node = ", ".join(f"{n[-8:]}: {state}" for n, state in sorted((row.get("placement") or {}).items()))
    return f"{name}: {ready}/{row.get('desired', 0)} replicas up" + (f" — {per_node}" if per_node else " — not placed yet")
