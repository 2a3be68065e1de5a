"""The staged rollout, a deterministic function of the Primary (pure).

For the newest published release (the target) every member gets an action:
    done     it runs the target
    upgrade  its turn: it may switch now (and keeps this action while it reports `switching`)
    wait     its turn has not come; `reason` says what it waits for
    held     it will not switch by itself; `reason` says why (opted out, too old, dead, failed …)

The stages: one canary first (a live non-validator if there is one, else a validator; chosen by
hash so it differs between releases), then every rhizomorph and hypha at once, then the validators
one at a time — the next only once the previous reported healthy on the target — so a quorum stays
up (with 4 or more validators; with fewer the heights pause for one restart). A `rolled_back`
report marks the release failed (rules.py): every node not yet switched is held, the rollout stops.
A node that reported `switching` and is silent about it for longer than SWITCH_TIMEOUT_S of Primary
time fails the release too, so a node that vanished mid-switch cannot stall the rollout forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mycelium.encoding import hash_value
from mycelium.identity import NodeId
from mycelium.ledger.derive import liveness
from mycelium.ledger.operation import TIME
from mycelium.release.rules import state_of
from mycelium.release.versions import newer, version_key
from mycelium.spores.primary import PrimarySpore

SWITCH_TIMEOUT_S = 900


@dataclass(frozen=True, slots=True)
class NodePlan:
    version: str | None  # what it reports running (None: never reported)
    state: str  # its last report's state ("unknown" without one)
    action: str  # done | upgrade | wait | held
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Rollout:
    target: str | None  # the newest published release (None: none published)
    network_version: str | None  # the lowest version a member reports (what all of them run at least)
    failed: str | None  # why the target failed (None: it did not)
    canary: NodeId | None
    nodes: dict[NodeId, NodePlan] = field(default_factory=dict)

    def action_of(self, node: NodeId) -> str:
        plan = self.nodes.get(node)
        return plan.action if plan else "held"

    def to_wire(self) -> dict:
        return {"target": self.target, "network_version": self.network_version, "failed": self.failed,
                "canary": self.canary,
                "nodes": {n: {"version": p.version, "state": p.state, "action": p.action, "reason": p.reason}
                          for n, p in sorted(self.nodes.items())}}


def plan(primary: PrimarySpore) -> Rollout:
    state = state_of(primary.params)
    reports = {n: r for n, r in state["nodes"].items() if n in primary.members}
    versions = [r["version"] for r in reports.values()]
    network_version = min(versions, key=version_key) if versions else None
    if not state["published"]:
        return Rollout(None, network_version, None, None,
                       {n: NodePlan(reports.get(n, {}).get("version"), reports.get(n, {}).get("state", "unknown"),
                                    "held", "no release published") for n in sorted(primary.members)})
    target = max(state["published"], key=version_key)
    release = state["published"][target]
    now = primary.params.get(TIME, 0)
    failed = state["failed"].get(target) or _timed_out(reports, target, now)
    alive = liveness(primary)
    validators = set(primary.validators())
    candidates: list[NodeId] = []
    nodes: dict[NodeId, NodePlan] = {}
    for node in sorted(primary.members):
        report = reports.get(node)
        if report is None:
            nodes[node] = NodePlan(None, "unknown", "held", "has not reported its version (a build without self-upgrade?)")
            continue
        version, rstate = report["version"], report["state"]
        if version == target or newer(version, target):
            nodes[node] = NodePlan(version, rstate, "done")
        elif failed:
            nodes[node] = NodePlan(version, rstate, "held", f"release {target} failed: {failed}")
        elif rstate == "opted_out":
            nodes[node] = NodePlan(version, rstate, "held", "opted out (auto_upgrade = false): upgrade it by hand")
        elif newer(release["min_from"], version):
            nodes[node] = NodePlan(version, rstate, "held", f"runs {version}, below {release['min_from']}, the oldest "
                                   f"version release {target} upgrades from: upgrade it by hand (./install.sh)")
        elif rstate == "rolled_back" and report["target"] == target:
            nodes[node] = NodePlan(version, rstate, "held", f"rolled back from {target}: {report['reason']}")
        elif not alive.get(node, False) and not (rstate == "switching" and report["target"] == target):
            nodes[node] = NodePlan(version, rstate, "held", "not alive (silent longer than dead_after_s)")
        else:
            candidates.append(node)
    canary = _canary(candidates, validators, target, nodes)
    if canary is None and failed:  # the one that tried it and rolled back
        canary = next((n for n, r in sorted(reports.items()) if r["state"] == "rolled_back" and r["target"] == target), None)
    switching = {n for n in candidates if reports[n]["state"] == "switching" and reports[n]["target"] == target}
    canary_done = canary is not None and nodes.get(canary, NodePlan(None, "", "")).action == "done"
    followers = [n for n in candidates if n not in validators]
    for node in candidates:
        report = reports[node]
        if node in switching:
            nodes[node] = NodePlan(report["version"], report["state"], "upgrade", "switching")
        elif not canary_done and node != canary:
            nodes[node] = NodePlan(report["version"], report["state"], "wait", f"waiting for the canary {canary[:16]}")
        elif node == canary or node not in validators:
            nodes[node] = NodePlan(report["version"], report["state"], "upgrade", "canary" if node == canary else "")
    busy = sorted(n for n in switching if n in validators)
    pending_followers = [n for n in followers if nodes[n].action != "done"]
    for node in sorted(n for n in candidates if n in validators and n not in nodes):
        report = reports[node]
        if not canary_done:
            continue
        if pending_followers:
            nodes[node] = NodePlan(report["version"], report["state"], "wait",
                                   f"waiting for {len(pending_followers)} rhizomorph(s)/hypha(e) to switch first")
        elif busy:
            nodes[node] = NodePlan(report["version"], report["state"], "wait",
                                   f"waiting for validator {busy[0][:16]} to finish (one at a time: a quorum stays up)")
        else:
            nodes[node] = NodePlan(report["version"], report["state"], "upgrade", "")
            busy = [node]
    return Rollout(target, network_version, failed, canary, dict(sorted(nodes.items())))


def _canary(candidates: list[NodeId], validators: set[NodeId], target: str, nodes: dict[NodeId, NodePlan]
            ) -> NodeId | None:
    """A node already on the target that got there first counts as the canary (it proved the
    release); otherwise a candidate, non-validators first, ordered by hash(target, node)."""
    def rank(n: NodeId) -> tuple[bool, bytes]:
        return (n in validators, hash_value([target, n], person=b"myc-canary"))

    done = [n for n, p in nodes.items() if p.action == "done" and p.version == target]
    pool = done or candidates
    return min(pool, key=rank) if pool else None


def _timed_out(reports: dict[NodeId, dict], target: str, now: int) -> str | None:
    late = sorted(n for n, r in reports.items()
                  if r["state"] == "switching" and r["target"] == target and now - r["t"] > SWITCH_TIMEOUT_S)
    return f"{late[0][:16]} did not report back within {SWITCH_TIMEOUT_S} s of switching" if late else None
