"""What a rule is: an operation type's check and apply, and the draft Primary apply mutates (pure).

The requirements several rules share (author a member, an admin; a well-formed profile) live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mycelium.identity import NodeId
from mycelium.ledger.operation import ADMINS, NotAuthorized, Operation, OperationError
from mycelium.roles.profile import CapabilityProfile, ProfileError
from mycelium.spores.primary import Member, PrimarySpore


@dataclass(slots=True)
class Draft:
    """The next Primary while a batch is applied (mutable; only apply_batch holds one)."""

    network_id: str
    height: int  # of the Primary being built
    members: dict[NodeId, Member]
    services: dict[str, dict]
    evidence: list[dict]
    params: dict[str, Any]
    invites_used: dict[str, int]
    now: int



@dataclass(frozen=True, slots=True)
class Rule:
    """What one operation type requires (`check`, may read the local clock when given) and what it
    changes (`apply`, deterministic, only ever called on an operation that passed `check`)."""

    check: Callable[[Operation, PrimarySpore, int | None], None]
    apply: Callable[[Operation, Draft], None]


def require_member(op: Operation, prev: PrimarySpore) -> None:
    if op.author not in prev.members:
        raise OperationError(f"{op.author[:16]} is not a member")


def require_profile(op: Operation) -> None:
    try:
        CapabilityProfile.from_wire(op.body.get("profile"))
    except ProfileError as exc:
        raise OperationError(f"operation carries a bad profile: {exc}") from exc
    if op.body.get("max_role") not in ("sclerotium", "rhizomorph", "hypha"):
        raise OperationError("operation max_role must be sclerotium, rhizomorph or hypha")


def require_admin(op: Operation, prev: PrimarySpore) -> None:
    if op.author not in prev.params.get(ADMINS, ()):
        raise NotAuthorized(f"{op.author[:16]} is not an admin of this network, so it cannot deploy; "
                            "ask an admin, or deploy on your own (personal) network")
