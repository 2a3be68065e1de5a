"""Seed spores and the authority order Primary > Seed > Latent.

A Seed spore is a holder's signed snapshot of a recent certified Primary plus the holder's own
observations (its connections and the entries it authored). It helps a joiner bootstrap, but it
is one-way: the receiver adopts the listed connections, and the observations that depend on them,
only after confirming those connections itself (`adoptable`). The Primary inside is only a hint
until the receiver verifies its chain (mycelium.spores.primary.verify_chain / verify_extension).

Authority: what the Primary says wins over a Seed, which wins over Latent claims; Latent entries
contradicting the Primary are discarded (`latent_contradiction`, `resolve_latent`); with no
Primary reachable a node uses its validated Latent data (`effective_roles`). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import NodeId, NodeKey, is_node_id, verify
from mycelium.spores.entry import Entry, EntryError, EntryType
from mycelium.spores.primary import CertifiedPrimary, PrimaryError, PrimarySpore

SEED_DOMAIN = b"mycelium-seed-spore-v1"
SEED_VERSION = 1
MAX_SEED_BYTES = 8 << 20
MAX_SEED_OBSERVATIONS = 1_024
MAX_SEED_CONNECTIONS = 1_024


class SeedError(ValueError):
    """A Seed spore is malformed, forged or for another network; the message says which."""


@dataclass(frozen=True, slots=True)
class SeedSpore:
    network_id: str
    holder: NodeId
    created_ms: int  # holder's clock
    snapshot: CertifiedPrimary  # a recent Primary with its certificate
    connections: tuple[NodeId, ...]  # peers the holder is connected to (sorted)
    observations: tuple[Entry, ...] = ()  # entries authored by the holder
    signature: bytes = b""

    def signed_part(self) -> dict:
        return {
            "v": SEED_VERSION,
            "net": self.network_id,
            "holder": self.holder,
            "ts": self.created_ms,
            "primary": self.snapshot.to_wire(),
            "conns": sorted(self.connections),
            "obs": [e.to_wire() for e in self.observations],
        }

    def signing_bytes(self) -> bytes:
        return SEED_DOMAIN + canonical(self.signed_part())

    def to_wire(self) -> dict:
        return {**self.signed_part(), "sig": self.signature}

    def to_bytes(self) -> bytes:
        return canonical(self.to_wire())

    @classmethod
    def from_bytes(cls, data: bytes) -> SeedSpore:
        try:
            obj = decode(data, max_size=MAX_SEED_BYTES)
            recoded = canonical(obj)
        except EncodingError as exc:
            raise SeedError(f"Seed spore bytes are malformed: {exc}") from exc
        seed = cls.from_wire(obj)
        if recoded != bytes(data):
            raise SeedError("Seed spore bytes are not in canonical form")
        return seed

    @classmethod
    def from_wire(cls, obj: object) -> SeedSpore:
        fields = {"v", "net", "holder", "ts", "primary", "conns", "obs", "sig"}
        if not isinstance(obj, dict) or set(obj) != fields:
            raise SeedError(f"a Seed spore must be a map of exactly: {', '.join(sorted(fields))}")
        if obj["v"] != SEED_VERSION:
            raise SeedError(f"Seed spore version {obj['v']!r} is not supported (this build reads {SEED_VERSION})")
        conns, obs = obj["conns"], obj["obs"]
        if not isinstance(conns, list) or len(conns) > MAX_SEED_CONNECTIONS or not all(is_node_id(c) for c in conns):
            raise SeedError(f"Seed connections must be at most {MAX_SEED_CONNECTIONS} node ids")
        if not isinstance(obs, list) or len(obs) > MAX_SEED_OBSERVATIONS:
            raise SeedError(f"Seed observations must be a list of at most {MAX_SEED_OBSERVATIONS} entries")
        if not (is_node_id(obj["holder"]) and isinstance(obj["net"], str) and isinstance(obj["ts"], int)):
            raise SeedError("Seed holder, network id or timestamp is malformed")
        if not isinstance(obj["sig"], bytes):
            raise SeedError("Seed signature must be bytes")
        try:
            snapshot = CertifiedPrimary.from_wire(obj["primary"])
            observations = tuple(Entry.from_wire(e) for e in obs)
        except (PrimaryError, EntryError) as exc:
            raise SeedError(f"Seed spore content is malformed: {exc}") from exc
        return cls(obj["net"], obj["holder"], obj["ts"], snapshot, tuple(conns), observations, obj["sig"])

    def verify(self, network_id: str) -> None:
        """Raise SeedError unless the holder signed this Seed for `network_id` and every observation
        is the holder's own, correctly signed entry."""
        if self.network_id != network_id or self.snapshot.primary.network_id != network_id:
            raise SeedError(f"Seed spore is for network {self.network_id[:16]}, not {network_id[:16]}")
        if not isinstance(self.signature, bytes) or not verify(self.holder, self.signing_bytes(), self.signature, network_id):
            raise SeedError(f"Seed spore signature by {self.holder[:16]} does not verify: it was tampered with or forged")
        for e in self.observations:
            if e.author != self.holder or not e.verify_signature(network_id):
                raise SeedError(f"Seed observation {e.type.name.lower()} by {e.author[:16]} is not the holder's signed entry")


def make_seed(
    key: NodeKey,
    network_id: str,
    snapshot: CertifiedPrimary,
    connections: Iterable[NodeId],
    observations: Iterable[Entry],
    *,
    created_ms: int,
) -> SeedSpore:
    seed = SeedSpore(network_id, key.node_id, created_ms, snapshot, tuple(sorted(set(connections))), tuple(observations))
    return SeedSpore(
        seed.network_id, seed.holder, seed.created_ms, seed.snapshot, seed.connections, seed.observations,
        key.sign_for(network_id, seed.signing_bytes()),
    )


@dataclass(frozen=True, slots=True)
class SeedAdoption:
    """What a receiver may take from a Seed spore, given the connections it confirmed itself."""

    connections: tuple[NodeId, ...]  # listed and confirmed
    unconfirmed: tuple[NodeId, ...]  # listed but not (yet) confirmed: not adopted
    entries: tuple[Entry, ...] = field(default_factory=tuple)  # observations that may be merged


def adoptable(seed: SeedSpore, confirmed_peers: Iterable[NodeId]) -> SeedAdoption:
    """Adopt only what the receiver confirmed: listed connections it reached itself, and the holder's
    observations whose subject is the holder or a confirmed peer. Call `seed.verify` first."""
    confirmed = set(confirmed_peers)
    listed = sorted(set(seed.connections))
    ok = tuple(p for p in listed if p in confirmed)
    subjects = set(ok)
    if seed.holder in confirmed:  # the holder's entries about itself need the holder confirmed too
        subjects.add(seed.holder)
    entries = tuple(e for e in seed.observations if e.subject in subjects)
    return SeedAdoption(ok, tuple(p for p in listed if p not in confirmed), entries)


# --------------------------------------------------------------------------- authority


def latent_contradiction(entry: Entry, primary: PrimarySpore | None) -> str | None:
    """How a Latent entry contradicts the Primary, or None. With no Primary nothing contradicts."""
    if primary is None:
        return None
    h = primary.height
    if entry.author not in primary.members:
        return f"author {entry.author[:16]} is not a member in the Primary at height {h}"
    if entry.subject not in primary.members:
        return f"subject {entry.subject[:16]} is not a member in the Primary at height {h}"
    if entry.type == EntryType.NODE and "role" in entry.body:
        role = primary.members[entry.author].role
        if entry.body["role"] != role:
            return f"claims role {entry.body['role']!r}, but the Primary at height {h} says {role!r}"
    if entry.type == EntryType.SERVICE:
        service = entry.name
        if service not in primary.services:
            return f"runs service {service!r}, which the Primary at height {h} does not define"
        if entry.author not in primary.placements.get(service, ()):
            return f"runs a replica of {service!r} that the Primary at height {h} did not place on it"
    return None


def contradiction_for(primary: PrimarySpore | None) -> Callable[[Entry], str | None] | None:
    """The hook for EntryValidator/ValidationContext.contradiction under `primary` (None: no check)."""
    if primary is None:
        return None
    return lambda entry: latent_contradiction(entry, primary)


def resolve_latent(entries: Iterable[Entry], primary: PrimarySpore | None) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """Split validated Latent entries into (kept, [(discarded, why)]) under the Primary's authority."""
    kept: list[Entry] = []
    discarded: list[tuple[Entry, str]] = []
    for e in entries:
        why = latent_contradiction(e, primary)
        if why is None:
            kept.append(e)
        else:
            discarded.append((e, why))
    return kept, discarded


def effective_roles(
    primary: PrimarySpore | None, seed: SeedSpore | None, latent: Iterable[Entry]
) -> tuple[dict[NodeId, str], str]:
    """Roles as this node should act on them, and their source: "primary" when a verified Primary
    is known; else "seed" (the snapshot of an adopted Seed); else "latent" (roles claimed in
    validated NODE entries, the fallback with no Primary reachable)."""
    if primary is not None:
        return {n: m.role for n, m in primary.members.items()}, "primary"
    if seed is not None:
        return {n: m.role for n, m in seed.snapshot.primary.members.items()}, "seed"
    roles = {}
    for e in latent:
        if e.type == EntryType.NODE and isinstance(e.body.get("role"), str):
            roles[e.author] = e.body["role"]
    return dict(sorted(roles.items())), "latent"
