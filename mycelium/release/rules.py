"""The signed `release` operation (pure): an admin publishes a release, every node reports on itself.

    publish  an admin: {"action": "publish", "version", "sha256", "size", "min_from", "notes", "protocols"}
             refused: not an admin; not above every version published or run in the network (a
             downgrade or a re-release); min_from above the version; protocols that do not overlap a
             member's (it would split the network)
    report   a member, about itself: {"action": "report", "version" (what it runs), "protocols",
             "state", "target" (the release it is about, "" for none), "reason"}
             states: running | opted_out | switching | healthy | rolled_back. A `rolled_back` report
             about a published release marks that release failed network-wide: the rollout stops.

Everything lives in the Primary's params["release"] (KEY): {"published": {version: record},
"nodes": {node: report}, "failed": {version: reason}}; bounded by MAX_RELEASES published releases
(the newest kept) and one report per member. The rollout itself is derived (mycelium.release.rollout).
"""

from __future__ import annotations

from typing import Any

from mycelium.ledger.operation import NotAuthorized, Operation, OperationError
from mycelium.ledger.rule import Draft, require_member
from mycelium.release.versions import VersionError, check_protocols, incompatible, newer, parse_version, version_key
from mycelium.spores.primary import PrimarySpore

KEY = "release"
MAX_RELEASES = 8  # published releases kept in the Primary (the newest versions)
MAX_WHEEL_BYTES = 64 << 20
MAX_NOTES = 1000
MAX_REASON = 300
STATES = ("running", "opted_out", "switching", "healthy", "rolled_back")
_HEX = set("0123456789abcdef")


def state_of(params: dict) -> dict:
    raw = params.get(KEY)
    return raw if isinstance(raw, dict) else {"published": {}, "nodes": {}, "failed": {}}


def highest_known(state: dict, members: Any) -> str | None:
    """The highest version published or reported by a member (a new release must be above it)."""
    versions = list(state["published"]) + [r["version"] for n, r in state["nodes"].items() if n in members]
    return max(versions, key=version_key) if versions else None


def check(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    body = op.body
    action = body.get("action")
    try:
        if action == "publish":
            _check_publish(op, prev)
        elif action == "report":
            _check_report(op, prev)
        else:
            raise OperationError(f"release action must be publish or report, got {action!r}")
    except VersionError as exc:
        raise OperationError(f"release refused: {exc}") from None


def _check_publish(op: Operation, prev: PrimarySpore) -> None:
    from mycelium.ledger.operation import ADMINS

    body = op.body
    if op.author not in prev.params.get(ADMINS, ()):
        raise NotAuthorized(f"{op.author[:16]} is not an admin of this network, so it cannot publish a release; "
                            "ask an admin (`mycelium network show` lists them)")
    if set(body) != {"action", "version", "sha256", "size", "min_from", "notes", "protocols"}:
        raise OperationError("a release publish needs exactly version, sha256, size, min_from, notes, protocols")
    version, min_from = body["version"], body["min_from"]
    parse_version(version)
    parse_version(min_from)
    sha = body["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= _HEX):
        raise OperationError("release sha256 must be 64 lowercase hex digits")
    if not (type(body["size"]) is int and 0 < body["size"] <= MAX_WHEEL_BYTES):
        raise OperationError(f"release size must be 1 .. {MAX_WHEEL_BYTES} bytes")
    if not (isinstance(body["notes"], str) and len(body["notes"]) <= MAX_NOTES):
        raise OperationError(f"release notes must be text of at most {MAX_NOTES} characters")
    protocols = check_protocols(body["protocols"])
    state = state_of(prev.params)
    known = highest_known(state, prev.members)
    if known is not None and not newer(version, known):
        raise OperationError(f"release {version} is not above {known}, the highest version published or running "
                             "in this network (a downgrade or a re-release); publish a higher version")
    if newer(min_from, version):
        raise OperationError(f"release {version} cannot require nodes to run at least {min_from} (above itself)")
    for node, report in sorted(state["nodes"].items()):
        if node in prev.members and (problems := incompatible(protocols, report["protocols"])):
            raise OperationError(f"release {version} would split the network: it cannot talk to {node[:16]} "
                                 f"(running {report['version']}): {'; '.join(problems)}")


def _check_report(op: Operation, prev: PrimarySpore) -> None:
    require_member(op, prev)
    body = op.body
    if set(body) != {"action", "version", "protocols", "state", "target", "reason"}:
        raise OperationError("a release report needs exactly version, protocols, state, target, reason")
    parse_version(body["version"])
    check_protocols(body["protocols"])
    if body["state"] not in STATES:
        raise OperationError(f"release report state must be one of {', '.join(STATES)}")
    if not (isinstance(body["reason"], str) and len(body["reason"]) <= MAX_REASON):
        raise OperationError(f"release report reason must be text of at most {MAX_REASON} characters")
    target = body["target"]
    if body["state"] in ("switching", "healthy", "rolled_back") and target not in state_of(prev.params)["published"]:
        raise OperationError(f"release report is about {target!r}, which is not a published release")
    if not isinstance(target, str):
        raise OperationError("release report target must be text")


def apply(op: Operation, draft: Draft) -> None:
    old = state_of(draft.params)
    state = {"published": dict(old["published"]), "nodes": dict(old["nodes"]), "failed": dict(old["failed"])}
    body = op.body
    if body["action"] == "publish":
        state["published"][body["version"]] = {
            "sha256": body["sha256"], "size": body["size"], "min_from": body["min_from"], "notes": body["notes"],
            "protocols": body["protocols"], "author": op.author, "t": draft.now,
            "op": op.to_wire()}  # the admin's signed operation: every node checks it again before installing
        kept = sorted(state["published"], key=version_key)[-MAX_RELEASES:]
        state["published"] = {v: state["published"][v] for v in sorted(kept)}
    else:
        state["nodes"][op.author] = {"version": body["version"], "protocols": body["protocols"],
                                     "state": body["state"], "target": body["target"], "reason": body["reason"],
                                     "t": draft.now}
        target = body["target"]
        if body["state"] == "rolled_back" and target in state["published"] and target not in state["failed"]:
            state["failed"][target] = f"{op.author[:16]} rolled back: {body['reason'] or 'no reason given'}"
    state["nodes"] = {n: r for n, r in sorted(state["nodes"].items()) if n in draft.members}
    state["failed"] = {v: r for v, r in sorted(state["failed"].items()) if v in state["published"]}
    draft.params[KEY] = state


def publish_body(version: str, sha256: str, size: int, min_from: str, notes: str, protocols: dict) -> dict:
    return {"action": "publish", "version": version, "sha256": sha256, "size": size, "min_from": min_from,
            "notes": notes, "protocols": protocols}


def report_body(version: str, protocols: dict, state: str, target: str = "", reason: str = "") -> dict:
    return {"action": "report", "version": version, "protocols": protocols, "state": state, "target": target,
            "reason": reason[:MAX_REASON]}
