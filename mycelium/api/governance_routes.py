"""Control-API handlers for governance: `network show|set`, `admin add|remove`, `invite list|revoke`,
`remove NODE`. Each request is signed as this node's operation, checked against the current Primary
first (a refused one changes nothing and says why), then handed to the validators."""

from __future__ import annotations

import time
from typing import Any

from mycelium.api import protocol
from mycelium.api.server import ApiError, ControlServer, Request
from mycelium.ledger import governance



def install_governance_routes(server: ControlServer, node: Any) -> None:
    async def network_show(_req: Request) -> tuple[int, Any]:
        return 200, network_dto(node)

    async def network_set(req: Request) -> tuple[int, Any]:
        changes = _body(req).get("set")
        head = _head(node)
        try:
            governance.check_params_change(changes, governance.effective_params(head))
        except governance.GovernanceError as exc:
            raise ApiError(400, "bad_parameter", str(exc), "see `mycelium network show` for keys and bounds") from None
        await _submit(node, "params", {"set": changes})
        return 202, {"status": "submitted", "set": changes}

    async def admin(req: Request) -> tuple[int, Any]:
        body = _body(req)
        action = body.get("action")
        if action not in ("add", "remove"):
            raise ApiError(400, "bad_request", "admin needs action add or remove", "mycelium admin add NODE")
        who = resolve_member(node, body.get("node"))
        await _submit(node, "admin", {"action": action, "node": who})
        return 202, {"status": "submitted", "action": action, "node": who}

    async def invites(_req: Request) -> tuple[int, Any]:
        head = _head(node)
        used = head.params.get("invites_used", {})
        revoked = head.params.get(governance.REVOKED, {})
        now = int(time.time())
        rows = []
        for invite_id, expires_s, uses, created_s in node.db.list_invites(node.membership.network_id):
            hex_id = invite_id.hex()
            state = ("revoked" if hex_id in revoked else "expired" if expires_s <= now
                     else "used" if used.get(hex_id, 0) >= uses else "valid")
            rows.append({"id": hex_id, "created_s": created_s, "expires_s": expires_s, "uses": uses,
                         "used": used.get(hex_id, 0), "state": state})
        return 200, {"invites": rows}

    async def invite_revoke(req: Request) -> tuple[int, Any]:
        raw = _body(req).get("id")
        if not isinstance(raw, str) or len(raw) != 32 or any(c not in "0123456789abcdef" for c in raw.lower()):
            raise ApiError(400, "bad_request", f"invite id must be 32 hex digits, got {raw!r}",
                           "`mycelium invite list` shows the ids")
        await _submit(node, "invite_revoke", {"id": raw.lower()})
        return 202, {"status": "submitted", "id": raw.lower()}

    async def remove(req: Request) -> tuple[int, Any]:
        who = resolve_member(node, _body(req).get("node"))
        if who == node.key.node_id:
            raise ApiError(409, "refused", "a node cannot remove itself", "use `mycelium leave`")
        await _submit(node, "remove", {"node": who})
        return 202, {"status": "submitted", "node": who, "rekey": "the network secret rotates once it is decided"}

    server.route("GET", protocol.NETWORK_SHOW, network_show)
    server.route("POST", protocol.NETWORK_SET, network_set)
    server.route("POST", protocol.ADMIN, admin)
    server.route("GET", protocol.INVITES, invites)
    server.route("POST", protocol.INVITE_REVOKE, invite_revoke)
    server.route("POST", protocol.REMOVE, remove)


def network_dto(node: Any) -> dict:
    """`mycelium network show --json` (a schema we own)."""
    head = node.ledger.head
    m = node.membership
    secret = head.params.get(governance.SECRET) if head else None
    due = head.params.get(governance.REKEY_DUE) if head else None
    return {
        "network_id": m.network_id,
        "network_name": m.name,
        "signature_scheme": m.genesis.scheme.value,
        "post_quantum": m.genesis.scheme.post_quantum,
        "height": head.height if head else None,
        "members": len(head.members) if head else 0,
        "admins": list(head.params.get(governance.ADMINS, [])) if head else [],
        "params": governance.effective_params(head),
        "bounds": {k: {"min": p.low, "max": p.high, "default": p.default, "meaning": p.doc}
                   for k, p in governance.PARAMS.items()},
        "secret_generation": governance.secret_generation(head),
        "secret_generation_here": m.secret_generation,
        "secret_rotated_at_height": secret["h"] if isinstance(secret, dict) else None,
        "rekey_due": {"generation": due["gen"], "since_height": due["since_h"]} if isinstance(due, dict) else None,
        "invites_revoked": len(head.params.get(governance.REVOKED, {})) if head else 0,
    }


def resolve_member(node: Any, text: Any) -> str:
    """A member's node id from its full id or a unique prefix (≥ 6 characters)."""
    head = _head(node)
    if not isinstance(text, str) or len(text) < 6:
        raise ApiError(400, "bad_request", f"expected a node id (or a unique prefix of ≥ 6 characters), got {text!r}",
                       "`mycelium status` and `mycelium peers` show node ids")
    matches = sorted(n for n in head.members if n.startswith(text))
    if len(matches) != 1:
        found = "no member" if not matches else f"{len(matches)} members"
        raise ApiError(404 if not matches else 400, "no_such_member", f"{found} of this network match {text!r}",
                       "`mycelium peers` lists the members; give more characters of the id")
    return matches[0]


async def _submit(node: Any, kind: str, body: dict) -> None:
    """Raises the layers' own errors (mapped to statuses by type in mycelium.api.errors)."""
    from mycelium.daemon import SessionNotRunning
    from mycelium.ledger.operations import OpType, check_operation, sign_operation
    from mycelium.roles.readonly import ReadOnlyMode

    session = node.session
    if session is None:
        raise SessionNotRunning()
    if node.read_only():
        raise ReadOnlyMode(f"this node is in read-only mode ({node.read_only_reason()}), so it accepts no "
                           "governance changes")
    head = _head(node)
    now_s = int(time.time())
    op = sign_operation(node.key, node.membership.network_id, OpType(kind), body, now_s=now_s)
    check_operation(op, head, now_s=now_s)  # OperationError (NotAuthorized: not an admin) changes nothing
    await session.submit(op)


def _head(node: Any) -> Any:
    from mycelium.daemon import NoPrimaryYet

    head = node.ledger.head
    if head is None:
        raise NoPrimaryYet()
    return head


def _body(req: Request) -> dict:
    if req.body is None:
        return {}
    if not isinstance(req.body, dict):
        raise ApiError(400, "bad_request", "request body must be a JSON object")
    return req.body
