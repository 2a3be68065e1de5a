"""Endophyte leases in the Primary: placement of primary + backups, reports, failover, planned handover (pure).

The ledger keeps one record per Endophyte under `params["endophytes"]` and applies `apply_action` for
each signed `endophyte` operation, then `reconcile` once per height. Both are deterministic functions of
the previous state, the batch and liveness — no clock, no floats — so every validator computes the same
lease, and each generation names exactly one primary:

    {"spec": {...manifest spec...}, "generation": g, "primary": node, "backups": [nodes],
     "resumed_epoch": e, "reports": {node: [generation, epoch]}, "migrating_to": node | None,
     "lost_epochs": n}

Actions (operation bodies):
    {"action": "deploy", "name", "spec"}              admin
    {"action": "undeploy", "name"}                    admin
    {"action": "report", "name", "generation", "epoch"}   a backup: the newest epoch it committed
                                                      (the primary: the newest epoch it cut); only
                                                      for the current generation
    {"action": "migrate", "name", "to"}               admin: move the primary to backup `to`
    {"action": "handover", "name", "generation", "epoch"} the primary, once `to` acknowledged the final
                                                      epoch with the workload frozen: `to` becomes primary
"""

from __future__ import annotations

import hashlib
from typing import Any

from mycelium.ram.handover import Lease, decide_failover

KEY = "endophytes"
MAX_ENDOPHYTES = 64
MAX_BACKUPS = 16
FULL = -1


class LeaseError(ValueError):
    """An endophyte operation that cannot apply; the message says why."""


def _rank(name: str, nodes: list[str]) -> list[str]:
    """Rendezvous order of `nodes` for `name` (deterministic, no floats)."""
    return sorted(nodes, key=lambda n: hashlib.blake2b(f"{name}\x00{n}".encode(), digest_size=8).digest())


def check_action(state: dict[str, Any], author: str, body: Any, *, admin: bool) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
        raise LeaseError("an endophyte operation needs a name")
    action, name = body.get("action"), body["name"]
    rec = state.get(name)
    if action == "deploy":
        if not admin:
            raise LeaseError(f"{author[:16]} is not an admin, so it cannot deploy")
        spec = body.get("spec")
        if not isinstance(spec, dict) or not (("vm" in spec) ^ ("process" in spec)):
            raise LeaseError("an Endophyte spec needs exactly one of vm, process")
        backups = spec.get("backups", 1)
        if not isinstance(backups, int) or isinstance(backups, bool) or not 1 <= backups <= MAX_BACKUPS:
            raise LeaseError(f"backups must be 1..{MAX_BACKUPS}")
        if rec is None and len(state) >= MAX_ENDOPHYTES:
            raise LeaseError(f"at most {MAX_ENDOPHYTES} Endophytes per network")
        return
    if rec is None:
        raise LeaseError(f"no Endophyte named {name!r} is deployed")
    if action == "undeploy":
        if not admin:
            raise LeaseError(f"{author[:16]} is not an admin, so it cannot undeploy")
    elif action == "report":
        if author not in rec["backups"] and author != rec["primary"]:
            raise LeaseError(f"{author[:16]} is neither the primary nor a backup of {name}")
        if not all(isinstance(body.get(k), int) and not isinstance(body.get(k), bool) for k in ("generation", "epoch")):
            raise LeaseError("a report carries integer generation and epoch")
        if body["generation"] != rec["generation"]:
            # one the author sent before a handover or failover moved the lease on: the epochs it names
            # belong to a copy the new generation no longer runs from, so failover must not count them
            raise LeaseError(f"a report for generation {body['generation']} of {name}, which is at "
                             f"generation {rec['generation']}: stale")
    elif action == "migrate":
        if not admin:
            raise LeaseError(f"{author[:16]} is not an admin, so it cannot migrate")
        if body.get("to") not in rec["backups"]:
            raise LeaseError(f"{body.get('to')!r} is not a backup of {name}; a migration target must be one "
                             "(it already holds the replicated state)")
    elif action == "handover":
        if author != rec["primary"] or rec.get("migrating_to") is None:
            raise LeaseError(f"only the primary of {name}, during a migration, hands over")
        if body.get("generation") != rec["generation"] or not isinstance(body.get("epoch"), int):
            raise LeaseError("a handover names the current generation and the final epoch")
    else:
        raise LeaseError(f"unknown endophyte action {action!r}")


def apply_action(state: dict[str, Any], author: str, body: dict) -> dict[str, Any]:
    """`state` with one checked action applied (a new dict; the input is not changed)."""
    state = {k: dict(v) for k, v in state.items()}
    name, action = body["name"], body["action"]
    if action == "deploy":
        old = state.get(name)
        state[name] = {"spec": body["spec"], "generation": old["generation"] if old else 0,
                       "primary": old["primary"] if old else None, "backups": old["backups"] if old else [],
                       "resumed_epoch": old["resumed_epoch"] if old else FULL,
                       "reports": old["reports"] if old else {}, "migrating_to": None,
                       "lost_epochs": old["lost_epochs"] if old else 0}
    elif action == "undeploy":
        state.pop(name, None)
    elif action == "report":
        rec = state[name]
        prev = rec["reports"].get(author, [0, FULL])
        if [body["generation"], body["epoch"]] > list(prev):
            rec["reports"] = {**rec["reports"], author: [body["generation"], body["epoch"]]}
    elif action == "migrate":
        state[name]["migrating_to"] = body["to"]
    elif action == "handover":
        rec = state[name]
        to, old = rec["migrating_to"], rec["primary"]
        rec.update(generation=rec["generation"] + 1, primary=to, resumed_epoch=body["epoch"],
                   backups=sorted([b for b in rec["backups"] if b != to] + [old]), migrating_to=None,
                   reports={})
    return state


def reconcile(state: dict[str, Any], eligible: list[str], alive: dict[str, bool]) -> dict[str, Any]:
    """Once per height: place new Endophytes, fail over dead primaries, replace dead backups."""
    out: dict[str, Any] = {}
    for name in sorted(state):
        rec = dict(state[name])
        live = [n for n in _rank(name, eligible) if alive.get(n, False)]
        want = rec["spec"].get("backups", 1)
        if rec["primary"] is None:
            if live:
                rec.update(primary=live[0], backups=live[1: 1 + want], generation=1)
        elif not alive.get(rec["primary"], False):
            lease = Lease(name, rec["generation"], rec["primary"], tuple(rec["backups"]), rec["resumed_epoch"])
            reports = {n: e for n, (g, e) in rec["reports"].items() if g == rec["generation"] or g == 0}
            succ = decide_failover(lease, reports, {n for n in live})
            if succ is not None:
                known = max((e for _, e in rec["reports"].values()), default=FULL)
                rec.update(generation=succ.generation, primary=succ.primary, backups=list(succ.backups),
                           resumed_epoch=succ.resumed_epoch, reports={}, migrating_to=None,
                           lost_epochs=rec["lost_epochs"] + max(0, known - succ.resumed_epoch))
        if rec["primary"] is not None:
            keep = [b for b in rec["backups"] if alive.get(b, False) and b != rec["primary"]]
            spare = [n for n in live if n != rec["primary"] and n not in keep]
            rec["backups"] = sorted(keep + spare[: max(0, want - len(keep))])
            if rec.get("migrating_to") not in rec["backups"]:
                rec["migrating_to"] = None
        out[name] = rec
    return out
