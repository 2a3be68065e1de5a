"""Quorum certificates: 2f+1 validator precommits over (network, height, round, Primary hash).

Consensus (mycelium.consensus) produces them; anyone holding the previous Primary — whose validator
set signs the next one — verifies them here. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from mycelium.encoding import HASH_SIZE, canonical
from mycelium.identity import NodeId, is_node_id, verify

PRECOMMIT_DOMAIN = b"mycelium-precommit-v1"


def fault_tolerance(n: int) -> int:
    """f = ⌊(n−1)/3⌋: how many Byzantine validators a set of n tolerates."""
    if n < 1:
        raise ValueError("a validator set has at least one member")
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """Votes needed for a quorum: n − f, which is 2f+1 when n = 3f+1 (and > 2n/3 for every n)."""
    return n - fault_tolerance(n)


def precommit_signing_bytes(network_id: str, height: int, round_: int, value: bytes) -> bytes:
    """The exact bytes a validator signs to precommit `value` (a Primary hash) at (height, round)."""
    return PRECOMMIT_DOMAIN + canonical({"net": network_id, "h": height, "r": round_, "hash": value})


class CertificateError(ValueError):
    """A certificate does not prove what it claims; the message says why."""


@dataclass(frozen=True, slots=True)
class QuorumCertificate:
    height: int
    round: int
    value: bytes  # the certified Primary hash
    signatures: dict[NodeId, bytes] = field(default_factory=dict)

    def to_wire(self) -> dict:
        return {"h": self.height, "r": self.round, "hash": self.value, "sigs": dict(self.signatures)}

    @classmethod
    def from_wire(cls, obj: object) -> QuorumCertificate:
        if not isinstance(obj, dict):
            raise CertificateError("certificate must be a map")
        h, r, value, sigs = obj.get("h"), obj.get("r"), obj.get("hash"), obj.get("sigs")
        if not (isinstance(h, int) and h >= 0 and isinstance(r, int) and r >= 0):
            raise CertificateError("certificate height and round must be non-negative integers")
        if not (isinstance(value, bytes) and len(value) == HASH_SIZE):
            raise CertificateError(f"certificate hash must be {HASH_SIZE} bytes")
        if not isinstance(sigs, dict) or len(sigs) > 1024:
            raise CertificateError("certificate signatures must be a map of at most 1024 entries")
        if not all(is_node_id(k) and isinstance(v, bytes) for k, v in sigs.items()):
            raise CertificateError("certificate signatures must map node ids to bytes")
        return cls(h, r, value, dict(sigs))

    def verify(self, network_id: str, validators: Iterable[NodeId], *, expect_value: bytes | None = None) -> None:
        """Raise CertificateError unless a quorum of `validators` signed this (height, round, value)."""
        vset = set(validators)
        if not vset:
            raise CertificateError("empty validator set")
        if expect_value is not None and expect_value != self.value:
            raise CertificateError("certificate is for another Primary hash")
        msg = precommit_signing_bytes(network_id, self.height, self.round, self.value)
        outsiders = sorted(set(self.signatures) - vset)
        if outsiders:
            raise CertificateError(f"signed by non-validators: {', '.join(o[:16] for o in outsiders)}")
        bad = sorted(v for v, sig in self.signatures.items() if not verify(v, msg, sig, network_id))
        if bad:
            raise CertificateError(f"invalid signatures from: {', '.join(b[:16] for b in bad)}")
        need = quorum_size(len(vset))
        if len(self.signatures) < need:
            raise CertificateError(
                f"only {len(self.signatures)} of {len(vset)} validators signed; a quorum needs {need}"
            )
