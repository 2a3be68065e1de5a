"""`mycelium logs NAME --node ID`: the output of a replica that runs on another member, asked for
over the mesh (rpc "logs") and answered from that member's own runner — the same lines its
`mycelium logs NAME` would print. Bounded both ways: at most MAX_LOG_LINES lines and
MAX_ANSWER_BYTES of them (the newest kept); an answer that does not decode is refused, never shown."""

from __future__ import annotations

from typing import Any, Iterable

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.runtime.runner import MAX_LOG_LINES, NoSuchReplica, ReplicaElsewhere, WorkloadError

RPC_LOGS = "logs"  # append only (a mesh protocol name)
MAX_ANSWER_BYTES = 4 << 20  # a few MiB of text is more than a terminal shows; the newest lines win
REMOTE_TIMEOUT_S = 15.0
MIN_ID_CHARS = 6


class NodeNotFound(WorkloadError):
    """--node names no member (or several): the message says which."""


class NodeUnreachable(WorkloadError):
    """The member is not connected to this node now, or did not answer."""


def match_member(members: Iterable[str], text: str) -> str:
    """A member from its full id, or a unique prefix or suffix of ≥ 6 characters (the CLI and the
    page show ids by their last 8 characters)."""
    text = text.strip()
    if len(text) < MIN_ID_CHARS:
        raise NodeNotFound(f"--node {text!r}: give at least {MIN_ID_CHARS} characters of the node id "
                           "(`mycelium peers` lists them)")
    members = list(members)
    if text in members:
        return text
    found = sorted({m for m in members if m.startswith(text) or m.endswith(text)})
    if len(found) != 1:
        what = "no member" if not found else f"{len(found)} members ({', '.join(m[-8:] for m in found)})"
        raise NodeNotFound(f"--node {text!r} matches {what} of this network; `mycelium peers` lists them")
    return found[0]


def encode_request(name: str, lines: int) -> bytes:
    return canonical({"name": name, "lines": max(0, min(int(lines), MAX_LOG_LINES))})


def trim(lines: list[str]) -> list[str]:
    """The newest lines whose total size fits MAX_ANSWER_BYTES."""
    out: list[str] = []
    size = 0
    for line in reversed(lines[-MAX_LOG_LINES:]):
        size += len(line.encode()) + 8
        if size > MAX_ANSWER_BYTES:
            break
        out.append(line)
    return out[::-1]


def make_handler(session: Any):
    """The rpc handler a member serves: its own replica's lines, or why there are none."""
    async def handle(_peer: str, data: bytes) -> bytes:
        try:
            req = decode(data)
            name, lines = req["name"], req["lines"]
            if not isinstance(name, str) or not isinstance(lines, int) or isinstance(lines, bool):
                raise TypeError
        except (EncodingError, KeyError, TypeError):
            session.rejected["logs_malformed"] += 1
            return canonical({"error": "malformed logs request", "kind": "malformed"})
        workloads = session.workloads
        if workloads is None:
            return canonical({"error": "that node's workload runner is not running yet", "kind": "no_replica"})
        try:
            got = await workloads.logs(name, max(0, min(lines, MAX_LOG_LINES)))
        except ReplicaElsewhere as exc:
            return canonical({"error": str(exc), "kind": "elsewhere"})
        except NoSuchReplica as exc:
            return canonical({"error": str(exc), "kind": "no_replica"})
        return canonical({"lines": trim(got)})

    return handle


def decode_answer(data: bytes, who: str) -> list[str]:
    try:
        ans = decode(data)
    except EncodingError:
        raise NodeUnreachable(f"node {who} sent an answer that does not decode") from None
    if not isinstance(ans, dict):
        raise NodeUnreachable(f"node {who} sent a malformed answer")
    if "error" in ans:
        message = f"node {who}: {ans['error']}"
        raise (ReplicaElsewhere if ans.get("kind") == "elsewhere" else NoSuchReplica)(message)
    lines = ans.get("lines")
    if not isinstance(lines, list) or not all(isinstance(l, str) for l in lines) or len(lines) > MAX_LOG_LINES:
        raise NodeUnreachable(f"node {who} sent a malformed answer")
    return lines


async def fetch(session: Any, node_text: str, name: str, lines: int) -> tuple[str, list[str]]:
    """(node id, lines) of `name`'s replica on the member `node_text` names (this node included)."""
    head = session.ledger.head
    node = match_member(head.members if head is not None else (), node_text)
    if node == session.key.node_id:
        return node, await session.workloads.logs(name, lines)
    mesh = session.mesh
    if node not in mesh.admitted_peers():
        raise NodeUnreachable(f"node {node[-8:]} is not connected to this node now; "
                              "`mycelium peers` shows who is, or run `mycelium logs` on that node")
    try:
        data = await mesh.request(node, RPC_LOGS, encode_request(name, lines), timeout_s=REMOTE_TIMEOUT_S)
    except Exception as exc:  # the mesh's request errors: not connected any more, timed out, refused
        raise NodeUnreachable(f"node {node[-8:]} did not answer ({type(exc).__name__}: {exc})") from None
    return node, decode_answer(data, node[-8:])
