"""The Primary spore: the agreed state at a height, a hash chain from genesis, each link certified.

A Primary holds the members (role, trust, caps, join height, profile summary), services, placements,
params and evidence. Its hash is BLAKE2b of its canonical encoding; the quorum certificate is kept
beside it (`CertifiedPrimary`), never inside the hashed part. The chain rule: Primary h+1 names the
hash of Primary h and is certified by a quorum of h's validators (its members with role sclerotium).
Genesis (height 0) is built from the network's Genesis record with the founder as sole sclerotium
and certified by the founder alone. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from mycelium.encoding import HASH_SIZE, EncodingError, canonical, decode, hash_value
from mycelium.identity import Genesis, NodeId, NodeKey, is_node_id
from mycelium.signatures import ML_DSA_65_PUBLIC_SIZE, PQ_KEYS, SchemeError
from mycelium.spores.certificate import CertificateError, QuorumCertificate, precommit_signing_bytes

PRIMARY_VERSION = 1
ROLES = ("sclerotium", "rhizomorph", "hypha")
VALIDATOR_ROLE = "sclerotium"
TRUST_SCALE_PPM = 1_000_000
GENESIS_TRUST_PPM = 500_000  # the founder starts at the trust prior (mycelium.consensus.trust)
ZERO_HASH = bytes(HASH_SIZE)  # prev_hash of the genesis Primary
MAX_PRIMARY_BYTES = 4 << 20  # a Primary of ~10 000 members with profiles fits
MAX_MEMBERS = 10_000
MAX_SERVICES = 4_096
MAX_EVIDENCE = 1_024
MAX_MEMBER_MAP_BYTES = 4_096  # caps + profile of one member


class PrimaryError(ValueError):
    """A Primary (or its wire form) is malformed; the message says which field."""


class ChainError(PrimaryError):
    """A Primary does not follow its predecessor; `reason` is a short code, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # network | height | epoch | prev_hash | certificate | genesis


@dataclass(frozen=True, slots=True)
class Member:
    role: str  # one of ROLES
    trust_ppm: int  # 0 … 1 000 000 (fixed point, parts per million)
    caps: dict = field(default_factory=dict)  # operator limits, e.g. {"max_role": "rhizomorph"}
    joined_at_height: int = 0
    profile: dict = field(default_factory=dict)  # capability summary (integers only)
    pq_key: bytes = b""  # post-quantum networks: the member's ML-DSA-65 public key (1 952 bytes)

    def to_wire(self) -> dict:
        wire = {"role": self.role, "trust": self.trust_ppm, "caps": self.caps, "joined": self.joined_at_height,
                "profile": self.profile}
        if self.pq_key:  # absent in classic networks: their Primaries hash as before
            wire["pq"] = self.pq_key
        return wire

    @classmethod
    def from_wire(cls, obj: object, who: str = "member") -> Member:
        base = {"role", "trust", "caps", "joined", "profile"}
        if not isinstance(obj, dict) or set(obj) - {"pq"} != base:
            raise PrimaryError(f"{who} must be a map of role, trust, caps, joined, profile (and pq)")
        pq = obj.get("pq", b"")
        if "pq" in obj and not (isinstance(pq, bytes) and len(pq) == ML_DSA_65_PUBLIC_SIZE):
            raise PrimaryError(f"{who} pq key must be {ML_DSA_65_PUBLIC_SIZE} bytes (an ML-DSA-65 public key)")
        m = cls(obj["role"], obj["trust"], obj["caps"], obj["joined"], obj["profile"], pq)
        if m.role not in ROLES:
            raise PrimaryError(f"{who} has unknown role {m.role!r} (known: {', '.join(ROLES)})")
        if not (_is_int(m.trust_ppm) and 0 <= m.trust_ppm <= TRUST_SCALE_PPM):
            raise PrimaryError(f"{who} trust must be an integer in [0, {TRUST_SCALE_PPM}]")
        if not (_is_int(m.joined_at_height) and m.joined_at_height >= 0):
            raise PrimaryError(f"{who} joined height must be a non-negative integer")
        for label, value in (("caps", m.caps), ("profile", m.profile)):
            if not isinstance(value, dict) or len(_encode(value, f"{who} {label}")) > MAX_MEMBER_MAP_BYTES:
                raise PrimaryError(f"{who} {label} must be a map of at most {MAX_MEMBER_MAP_BYTES} bytes")
        return m


@dataclass(frozen=True, slots=True)
class PrimarySpore:
    network_id: str
    height: int  # one per consensus decision; genesis is 0
    epoch: int  # advances at epoch boundaries (validator-set changes take effect there)
    prev_hash: bytes  # hash of the Primary at height − 1 (ZERO_HASH for genesis)
    members: dict[NodeId, Member] = field(default_factory=dict)
    services: dict[str, dict] = field(default_factory=dict)  # service name → spec (manifest, canonical)
    placements: dict[str, list[NodeId]] = field(default_factory=dict)  # service name → sorted node ids
    params: dict = field(default_factory=dict)  # network parameters (integers, strings)
    evidence: tuple[dict, ...] = ()  # equivocation proofs and other slashing evidence
    version: int = PRIMARY_VERSION

    def __post_init__(self) -> None:
        # placements are sets of nodes: keep them sorted so equal Primaries compare (and hash) equal
        placements = {s: sorted(nodes) for s, nodes in self.placements.items()}
        object.__setattr__(self, "placements", placements)
        object.__setattr__(self, "evidence", tuple(self.evidence))

    def validators(self) -> list[NodeId]:
        """The sorted validator set that certifies the *next* Primary."""
        return sorted(n for n, m in self.members.items() if m.role == VALIDATOR_ROLE)

    def role_of(self, node: NodeId) -> str | None:
        member = self.members.get(node)
        return member.role if member else None

    def to_wire(self) -> dict:
        return {
            "v": self.version,
            "net": self.network_id,
            "h": self.height,
            "epoch": self.epoch,
            "prev": self.prev_hash,
            "members": {n: m.to_wire() for n, m in self.members.items()},
            "services": self.services,
            "placements": {s: list(nodes) for s, nodes in self.placements.items()},
            "params": self.params,
            "evidence": list(self.evidence),
        }

    def to_bytes(self) -> bytes:
        return canonical(self.to_wire())

    def hash(self) -> bytes:
        return hash_value(self.to_wire(), person=b"myc-primary")

    @classmethod
    def from_wire(cls, obj: object) -> PrimarySpore:
        fields = {"v", "net", "h", "epoch", "prev", "members", "services", "placements", "params", "evidence"}
        if not isinstance(obj, dict) or set(obj) != fields:
            raise PrimaryError(f"a Primary must be a map of exactly: {', '.join(sorted(fields))}")
        if obj["v"] != PRIMARY_VERSION:
            raise PrimaryError(f"Primary version {obj['v']!r} is not supported (this build reads {PRIMARY_VERSION})")
        net, h, epoch, prev = obj["net"], obj["h"], obj["epoch"], obj["prev"]
        if not (isinstance(net, str) and len(net) == 2 * HASH_SIZE):
            raise PrimaryError("Primary network id must be 64 hex characters")
        if not (_is_int(h) and h >= 0 and _is_int(epoch) and epoch >= 0):
            raise PrimaryError("Primary height and epoch must be non-negative integers")
        if not (isinstance(prev, bytes) and len(prev) == HASH_SIZE):
            raise PrimaryError(f"Primary prev hash must be {HASH_SIZE} bytes")
        members = obj["members"]
        if not isinstance(members, dict) or len(members) > MAX_MEMBERS:
            raise PrimaryError(f"Primary members must be a map of at most {MAX_MEMBERS}")
        parsed: dict[NodeId, Member] = {}
        for node, m in members.items():
            if not is_node_id(node):
                raise PrimaryError(f"Primary member key {str(node)[:20]!r} is not a node id")
            parsed[node] = Member.from_wire(m, f"member {node[:16]}")
        services, placements, params, evidence = obj["services"], obj["placements"], obj["params"], obj["evidence"]
        if not isinstance(services, dict) or len(services) > MAX_SERVICES:
            raise PrimaryError(f"Primary services must be a map of at most {MAX_SERVICES}")
        if not all(isinstance(k, str) and isinstance(v, dict) for k, v in services.items()):
            raise PrimaryError("Primary services must map names to spec maps")
        if not isinstance(placements, dict) or not all(
            isinstance(s, str) and isinstance(ns, list) and all(is_node_id(n) for n in ns) for s, ns in placements.items()
        ):
            raise PrimaryError("Primary placements must map service names to lists of node ids")
        if not all(ns == sorted(set(ns)) for ns in placements.values()):
            raise PrimaryError("Primary placements must list each node once, sorted")
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise PrimaryError("Primary params must be a map with string keys")
        if not isinstance(evidence, list) or len(evidence) > MAX_EVIDENCE or not all(isinstance(e, dict) for e in evidence):
            raise PrimaryError(f"Primary evidence must be a list of at most {MAX_EVIDENCE} maps")
        primary = cls(net, h, epoch, prev, parsed, services, dict(placements), params, tuple(evidence))
        _encode(primary.to_wire(), "Primary")  # no floats or other non-canonical values anywhere
        return primary

    @classmethod
    def from_bytes(cls, data: bytes) -> PrimarySpore:
        return cls.from_wire(_decode(data, "Primary"))


@dataclass(frozen=True, slots=True)
class CertifiedPrimary:
    """A Primary with the certificate that proves it (what is stored and sent over the wire)."""

    primary: PrimarySpore
    certificate: QuorumCertificate

    def to_wire(self) -> dict:
        return {"primary": self.primary.to_wire(), "qc": self.certificate.to_wire()}

    def to_bytes(self) -> bytes:
        return canonical(self.to_wire())

    @classmethod
    def from_wire(cls, obj: object) -> CertifiedPrimary:
        if not isinstance(obj, dict) or set(obj) != {"primary", "qc"}:
            raise PrimaryError("a certified Primary must be a map of primary and qc")
        try:
            qc = QuorumCertificate.from_wire(obj["qc"])
        except CertificateError as exc:
            raise PrimaryError(f"certificate is malformed: {exc}") from exc
        return cls(PrimarySpore.from_wire(obj["primary"]), qc)

    @classmethod
    def from_bytes(cls, data: bytes) -> CertifiedPrimary:
        return cls.from_wire(_decode(data, "certified Primary"))


# --------------------------------------------------------------------------- the chain rule


def verify_successor(prev: PrimarySpore, nxt: PrimarySpore, certificate: QuorumCertificate) -> None:
    """Raise ChainError unless `nxt` follows `prev` and a quorum of prev's validators certified it."""
    if nxt.network_id != prev.network_id:
        raise ChainError("network", f"Primary is for network {nxt.network_id[:16]}, not {prev.network_id[:16]}")
    if nxt.height != prev.height + 1:
        raise ChainError("height", f"Primary has height {nxt.height}; the successor of {prev.height} has {prev.height + 1}")
    if nxt.epoch not in (prev.epoch, prev.epoch + 1):
        raise ChainError("epoch", f"Primary epoch {nxt.epoch} does not follow epoch {prev.epoch}")
    if nxt.prev_hash != prev.hash():
        raise ChainError(
            "prev_hash",
            f"Primary at height {nxt.height} names previous hash {nxt.prev_hash.hex()[:16]}, but the Primary at "
            f"height {prev.height} hashes to {prev.hash().hex()[:16]}: it was tampered with or is from a fork",
        )
    _verify_certificate(nxt, certificate, prev.validators())
    pin_member_keys(nxt)


def pin_member_keys(primary: PrimarySpore) -> None:
    """Pin the ML-DSA keys a *certified* Primary records (post-quantum networks), so votes and
    certificates from its members verify. Raise ChainError if one contradicts an earlier pin."""
    for node, m in primary.members.items():
        if m.pq_key:
            try:
                PQ_KEYS.pin(primary.network_id, node, m.pq_key)
            except SchemeError as exc:
                raise ChainError("certificate", f"Primary at height {primary.height}: {exc}") from exc


def verify_certificate(primary: PrimarySpore, certificate: QuorumCertificate, validators: list[NodeId]) -> None:
    """Raise ChainError unless a quorum of `validators` certified exactly `primary`."""
    _verify_certificate(primary, certificate, validators)


def _verify_certificate(primary: PrimarySpore, certificate: QuorumCertificate, validators: list[NodeId]) -> None:
    if certificate.height != primary.height:
        raise ChainError("certificate", f"certificate is for height {certificate.height}, the Primary has {primary.height}")
    try:
        certificate.verify(primary.network_id, validators, expect_value=primary.hash())
    except CertificateError as exc:
        raise ChainError("certificate", f"certificate of the Primary at height {primary.height} is invalid: {exc}") from exc


def genesis_primary(genesis: Genesis, *, founder_profile: dict | None = None) -> PrimarySpore:
    """Height 0 of a network: the founder is the sole member and sole sclerotium."""
    founder = Member(VALIDATOR_ROLE, GENESIS_TRUST_PPM, {}, 0, dict(founder_profile or {}), genesis.founder_pq_key)
    return PrimarySpore(
        network_id=genesis.network_id,
        height=0,
        epoch=0,
        prev_hash=ZERO_HASH,
        members={genesis.founder: founder},
        params=dict(genesis.params),
    )


def certify_genesis(primary: PrimarySpore, founder: NodeKey) -> QuorumCertificate:
    """The founder's own certificate of the genesis Primary (1 signature of 1 validator)."""
    value = primary.hash()
    sig = founder.sign_for(primary.network_id, precommit_signing_bytes(primary.network_id, 0, 0, value))
    return QuorumCertificate(height=0, round=0, value=value, signatures={founder.node_id: sig})


def verify_genesis(primary: PrimarySpore, certificate: QuorumCertificate, genesis: Genesis) -> None:
    """Raise ChainError unless `primary` is exactly this network's genesis Primary, certified by its founder."""
    if primary.network_id != genesis.network_id:
        raise ChainError("network", f"genesis Primary is for network {primary.network_id[:16]}, not {genesis.network_id[:16]}")
    expected = genesis_primary(genesis, founder_profile=primary.members.get(genesis.founder, Member("hypha", 0)).profile)
    if primary.hash() != expected.hash():
        raise ChainError("genesis", "genesis Primary differs from the one the network's Genesis record defines")
    _verify_certificate(primary, certificate, [genesis.founder])


def verify_chain(genesis: Genesis, chain: Sequence[CertifiedPrimary]) -> PrimarySpore:
    """Verify a whole chain from genesis (a joining node's catch-up); returns the last Primary."""
    if not chain:
        raise ChainError("genesis", "empty chain: it must start with the genesis Primary")
    verify_genesis(chain[0].primary, chain[0].certificate, genesis)
    for prev, link in zip(chain, chain[1:]):
        verify_successor(prev.primary, link.primary, link.certificate)
    return chain[-1].primary


def verify_extension(trusted: PrimarySpore, links: Iterable[CertifiedPrimary]) -> PrimarySpore:
    """Verify Primaries that extend an already-trusted one; returns the newest."""
    current = trusted
    for link in links:
        verify_successor(current, link.primary, link.certificate)
        current = link.primary
    return current


# --------------------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _encode(value: Any, what: str) -> bytes:
    try:
        return canonical(value)
    except EncodingError as exc:
        raise PrimaryError(f"{what} has no canonical encoding: {exc}") from exc


def _decode(data: bytes, what: str) -> Any:
    try:
        obj = decode(data, max_size=MAX_PRIMARY_BYTES)
    except EncodingError as exc:
        raise PrimaryError(f"{what} bytes are malformed: {exc}") from exc
    if _encode(obj, what) != bytes(data):
        raise PrimaryError(f"{what} bytes are not in canonical form")
    return obj
