"""The storage protocol on the data channel (purpose "storage"): requests and answers (pure codec).

One request, one answer, in order, on a channel a client keeps per peer:

    {"op": "put", "sid", "chunk", "index", "data"}  → {"ok": True}            (after the fsync)
    {"op": "get", "sids": [...]}                    → {"ok": True, "sid", "chunk", "index", "data"}
    {"op": "inventory"}                             → {"ok": True, "ids": [...], "corrupt": n, "used": n}

A failure is {"ok": False, "code": CODE, "error": text}. Op names and codes are append-only.
"""

from __future__ import annotations

from typing import Any

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.mesh.channel import MAX_MESSAGE_BYTES

PURPOSE = "storage"
OPS = ("put", "get", "inventory")  # append only
CODES = ("malformed", "absent", "refused", "full", "stopped")  # append only
MAX_SIDS_PER_GET = 64


class WireError(ValueError):
    """A peer sent a message that breaks the storage protocol."""


def pack(msg: dict[str, Any]) -> bytes:
    return canonical(msg)


def unpack_request(raw: bytes) -> dict[str, Any]:
    try:
        msg = decode(raw, max_size=MAX_MESSAGE_BYTES)
    except EncodingError as exc:
        raise WireError(str(exc)) from exc
    if not isinstance(msg, dict) or msg.get("op") not in OPS:
        raise WireError("request is not a map with a known op")
    op = msg["op"]
    if op == "put":
        if not (
            isinstance(msg.get("sid"), bytes)
            and isinstance(msg.get("chunk"), bytes)
            and isinstance(msg.get("index"), int)
            and isinstance(msg.get("data"), bytes)
        ):
            raise WireError("put needs sid, chunk, index and data")
    elif op == "get":
        sids = msg.get("sids")
        if not (isinstance(sids, list) and 0 < len(sids) <= MAX_SIDS_PER_GET and all(isinstance(s, bytes) for s in sids)):
            raise WireError(f"get needs 1..{MAX_SIDS_PER_GET} share ids")
    return msg


def unpack_answer(raw: bytes) -> dict[str, Any]:
    try:
        msg = decode(raw, max_size=MAX_MESSAGE_BYTES)
    except EncodingError as exc:
        raise WireError(str(exc)) from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("ok"), bool):
        raise WireError("answer is not a map with ok")
    return msg


def failure(code: str, error: str) -> bytes:
    return pack({"ok": False, "code": code, "error": error})
