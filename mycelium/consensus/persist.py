"""Checking the state a ConsensusCore persisted (PersistLock) before resuming from it. Pure.

The shell stores the state durably; after a crash the core resumes from it so that it never signs
two different messages for one height/round/step. A state that is corrupt, belongs to another key,
or is ahead of the node's decided Primary is refused with a message that says what to do.
"""

from __future__ import annotations

from typing import Any

from mycelium.encoding import HASH_SIZE
from mycelium.identity import NodeId

from mycelium.consensus.messages import NIL, MessageError, parse_message

STATE_VERSION = 1
STEPS = ("propose", "commit", "reveal", "precommit")
SLOTS = ("proposal", "commit", "reveal", "precommit")


class ConsensusStateError(Exception):
    """The persisted consensus state cannot be used; the message says why and what to do."""


def _bad(why: str) -> ConsensusStateError:
    return ConsensusStateError(
        f"persisted consensus state is unusable: {why}. Restore the state directory from a backup; "
        "do not delete it while this node is a validator, or it may sign conflicting votes"
    )


def _value(value: Any) -> bytes | None:
    if value is not None and not (isinstance(value, bytes) and len(value) == HASH_SIZE):
        raise _bad("a locked or valid value is not a hash")
    return value


def load_state(state: Any, *, node_id: NodeId, height: int, prev_hash: bytes) -> dict | None:
    """The resumable parts of `state`, or None if it is for an older height (already decided)."""
    if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
        raise _bad(f"unknown format or version (this build reads version {STATE_VERSION})")
    h = state.get("h")
    if not isinstance(h, int):
        raise _bad("height missing")
    if h < height:
        return None
    if h > height:
        raise ConsensusStateError(
            f"persisted consensus state is for height {h} but the node's last decided Primary is for height "
            f"{height - 1}: the Primary store lost decided heights. Restore the state directory from a backup"
        )
    if state.get("prev") != prev_hash:
        raise _bad("it was built on another previous Primary than the one on disk")
    round_, step = state.get("r"), state.get("step")
    if not isinstance(round_, int) or round_ < 0 or step not in STEPS:
        raise _bad("round or step missing")
    try:
        locked_round, locked_value = state["locked"]
        valid_round, valid_value, valid_batch = state["valid"]
        own_raw = dict(state["own"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(f"lock fields malformed ({exc})") from exc
    if not (isinstance(locked_round, int) and isinstance(valid_round, int)):
        raise _bad("lock rounds are not integers")
    if (locked_round >= 0) != (locked_value is not None) or (valid_round >= 0) != (valid_batch is not None):
        raise _bad("a lock round without a value (or the reverse)")
    own: dict[int, dict[str, Any]] = {}
    for r, slots in own_raw.items():
        if not isinstance(r, int) or not isinstance(slots, dict):
            raise _bad("own messages malformed")
        own[r] = {}
        for slot, wire in slots.items():
            if slot == "cand":
                if not (wire == NIL or (isinstance(wire, bytes) and len(wire) == HASH_SIZE)):
                    raise _bad("committed candidate is not a hash")
            elif slot in SLOTS:
                try:
                    message = parse_message(wire)
                except MessageError as exc:
                    raise _bad(f"own {slot} message malformed ({exc})") from exc
                if message.validator != node_id or (message.height, message.round) != (height, r):
                    raise _bad(f"own {slot} message was signed by another key or for another round")
            else:
                raise _bad(f"unknown slot {slot!r}")
            own[r][slot] = wire
        if "commit" in own[r] and "cand" not in own[r]:
            raise _bad("a commitment without its candidate")
    return {
        "round": round_, "step": step, "locked": (locked_round, _value(locked_value)),
        "valid": (valid_round, _value(valid_value), tuple(valid_batch) if valid_batch is not None else None),
        "own": own,
    }
