"""Latent spore entries: typed, keyed, per-author versioned, timestamped, signed observations.

An entry is keyed by (type, observer, subject, name). The observer is always the author: a node may
only write its own observations, and for the "self" types (node, endpoint, usage, capability,
service) the subject must be the author too, so a node only speaks about itself. Health and
connection entries may name another node as subject ("I, observer, see subject like this").

For the temporal types (health, usage, connection) the version *is* the timestamp in milliseconds
(authors use `next_temporal_version`, a hybrid clock). That makes "newer version" and "newer
observation" the same order, which the Latent limits rely on (see latent.py).

The signature covers the network id, so an entry cannot be replayed into another network. Pure: no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from mycelium.encoding import EncodingError, canonical, decode, hash_value
from mycelium.identity import SIGNATURE_SIZE, NodeId, NodeKey, is_node_id, verify

ENTRY_DOMAIN = b"mycelium-spore-entry-v1"
MASTER_SCOPE = "network"  # the master spores; a service's spores use service_scope(name)

MAX_SCOPE_CHARS = 80  # "service/" + a service name
MAX_NAME_CHARS = 128  # endpoint protocol, service name, ... (the key's free part)
MAX_BODY_BYTES = 4096  # canonical bytes of the body; a capability profile fits in ~1 KiB
MAX_ENTRY_BYTES = MAX_BODY_BYTES + 1024  # a whole encoded entry, signature and ids included
MAX_INT = 2**63 - 1  # versions and timestamps are non-negative signed 64-bit integers


class EntryType(IntEnum):
    """What an entry describes. WARNING: ONLY APPEND TO THIS LIST (the numbers are on the wire)."""

    NODE = 1  # the author's own node record (addresses, software version, claimed role)
    ENDPOINT = 2  # a network endpoint the author serves
    HEALTH = 3  # health of the subject as seen by the observer (temporal)
    USAGE = 4  # the author's resource usage (temporal)
    CONNECTION = 5  # the observer's connection to the subject, with flap counters (temporal)
    CAPABILITY = 6  # the author's capability profile (cores, RAM, disk, battery, ...)
    SERVICE = 7  # a service replica the author runs (service spores)
    OVERLAY = 8  # the author's WireGuard public key and endpoint (mycelium.overlay.peers)


TEMPORAL_TYPES = frozenset({EntryType.HEALTH, EntryType.USAGE, EntryType.CONNECTION})
OBSERVATION_TYPES = frozenset({EntryType.HEALTH, EntryType.CONNECTION})  # subject may be another node


def service_scope(service: str) -> str:
    return f"service/{service}"


class EntryError(ValueError):
    """An entry on the wire is unusable. Subclasses name the drop reason."""


class MalformedEntry(EntryError):
    """Missing or extra fields, wrong types, out-of-bounds values, bytes that do not decode."""


class UnknownEntryType(EntryError):
    """A type number this build does not know (a newer peer, or garbage)."""


class OversizeEntry(EntryError):
    """The entry or its body is larger than the bounds allow."""


EntryKey = tuple[int, str, str, str]  # (type, observer, subject, name)


@dataclass(frozen=True, slots=True)
class Entry:
    type: EntryType
    observer: NodeId  # who observed; must equal author
    subject: NodeId  # what the entry is about; must equal author for the self types
    name: str  # free part of the key ("" when a type has one entry per subject)
    author: NodeId
    version: int  # per author per key; for temporal types equal to timestamp_ms
    timestamp_ms: int  # author's clock, unix milliseconds (simulated clock in the simulator)
    body: dict = field(default_factory=dict)  # canonical-encodable, at most MAX_BODY_BYTES
    scope: str = MASTER_SCOPE
    signature: bytes = b""

    # -- identity and order ---------------------------------------------------------------------

    @property
    def key(self) -> EntryKey:
        return (int(self.type), self.observer, self.subject, self.name)

    @property
    def temporal(self) -> bool:
        return self.type in TEMPORAL_TYPES

    def digest(self) -> bytes:
        """Hash of the whole signed entry: identifies this exact version (cached per object: the
        store ranks entries by it on every merge, and recomputing it dominated gossip's CPU)."""
        cached = _DIGESTS.get(id(self))
        if cached is not None and cached[0] is self:
            return cached[1]
        value = hash_value(self.to_wire(), person=b"myc-entry")
        _DIGESTS[id(self)] = (self, value)
        if len(_DIGESTS) > _DIGEST_CACHE_SIZE:
            _DIGESTS.popitem(last=False)
        return value

    def rank(self) -> tuple[int, str, bytes]:
        """The total order used per key (and for eviction): highest (version, author) wins; the
        digest only breaks ties between two different entries an author signed with one version."""
        return (self.version, self.author, self.digest())

    # -- signing --------------------------------------------------------------------------------

    def signed_part(self) -> dict:
        return {
            "t": int(self.type),
            "sc": self.scope,
            "obs": self.observer,
            "sub": self.subject,
            "n": self.name,
            "a": self.author,
            "v": self.version,
            "ts": self.timestamp_ms,
            "b": self.body,
        }

    def signing_bytes(self, network_id: str) -> bytes:
        return ENTRY_DOMAIN + canonical({"net": network_id, **self.signed_part()})

    def signed_by(self, key: NodeKey, network_id: str) -> Entry:
        if key.node_id != self.author:
            raise ValueError(f"entry author {self.author[:16]} is not the signing key {key.node_id[:16]}")
        return _replace(self, signature=key.sign(self.signing_bytes(network_id)))

    def verify_signature(self, network_id: str) -> bool:
        try:
            data = self.signing_bytes(network_id)
        except EncodingError:
            return False
        return verify(self.author, data, self.signature)

    # -- wire -----------------------------------------------------------------------------------

    def to_wire(self) -> dict:
        return {**self.signed_part(), "sig": self.signature}

    def to_bytes(self) -> bytes:
        return canonical(self.to_wire())

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        if isinstance(data, (bytes, bytearray)) and len(data) > MAX_ENTRY_BYTES:
            raise OversizeEntry(f"entry of {len(data)} bytes exceeds {MAX_ENTRY_BYTES}")
        try:
            obj = decode(data, max_size=MAX_ENTRY_BYTES)
            recoded = canonical(obj)
        except EncodingError as exc:
            raise MalformedEntry(str(exc)) from exc
        entry = cls.from_wire(obj)
        if recoded != bytes(data):
            raise MalformedEntry("entry bytes are not in canonical form")
        return entry

    @classmethod
    def from_wire(cls, obj: object) -> Entry:
        """Parse a decoded entry strictly; raises an EntryError subclass naming the drop reason."""
        if not isinstance(obj, dict):
            raise MalformedEntry(f"entry must be a map, got {type(obj).__name__}")
        if set(obj) != _WIRE_FIELDS:
            missing, extra = _WIRE_FIELDS - set(obj), set(obj) - _WIRE_FIELDS
            raise MalformedEntry(f"entry fields wrong: missing {sorted(missing)}, unexpected {sorted(map(str, extra))}")
        t = obj["t"]
        if not _is_int(t):
            raise MalformedEntry("entry type must be an integer")
        try:
            etype = EntryType(t)
        except ValueError:
            raise UnknownEntryType(f"entry type {t} is unknown to this build") from None
        entry = cls(
            type=etype,
            observer=obj["obs"],
            subject=obj["sub"],
            name=obj["n"],
            author=obj["a"],
            version=obj["v"],
            timestamp_ms=obj["ts"],
            body=obj["b"],
            scope=obj["sc"],
            signature=obj["sig"],
        )
        problem = entry.shape_problem()
        if problem is not None:
            raise problem
        return entry

    def shape_error(self) -> str | None:
        """What is structurally wrong with this entry (types and bounds), or None.

        Authorisation (observer/subject vs author) is checked by validation, not here."""
        problem = self.shape_problem()
        return None if problem is None else str(problem)

    def shape_problem(self) -> EntryError | None:
        """Like shape_error, as the exception that names the drop reason."""
        problem = self._shape_message()
        if problem is None:
            return None
        if problem.startswith("body of"):
            return OversizeEntry(problem)
        if problem.startswith("entry type"):
            return UnknownEntryType(problem)
        return MalformedEntry(problem)

    def _shape_message(self) -> str | None:
        if not isinstance(self.type, EntryType):
            return "entry type is unknown"
        if not (isinstance(self.scope, str) and 1 <= len(self.scope) <= MAX_SCOPE_CHARS):
            return f"scope must be 1-{MAX_SCOPE_CHARS} characters"
        for label, value in (("author", self.author), ("observer", self.observer), ("subject", self.subject)):
            if not is_node_id(value):
                return f"{label} is not a node id"
        if not (isinstance(self.name, str) and len(self.name) <= MAX_NAME_CHARS):
            return f"name must be a string of at most {MAX_NAME_CHARS} characters"
        if not (_is_int(self.version) and 0 <= self.version <= MAX_INT):
            return "version must be a non-negative 64-bit integer"
        if not (_is_int(self.timestamp_ms) and 0 <= self.timestamp_ms <= MAX_INT):
            return "timestamp_ms must be a non-negative 64-bit integer"
        if self.temporal and self.version != self.timestamp_ms:
            return f"a {self.type.name.lower()} entry's version must equal its timestamp_ms"
        if not (isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_SIZE):
            return f"signature must be {SIGNATURE_SIZE} bytes"
        if not isinstance(self.body, dict) or not all(isinstance(k, str) for k in self.body):
            return "body must be a map with string keys"
        try:
            size = len(canonical(self.body))
        except EncodingError as exc:
            return f"body has no canonical encoding: {exc}"
        if size > MAX_BODY_BYTES:
            return f"body of {size} bytes exceeds {MAX_BODY_BYTES}"
        return None


_WIRE_FIELDS = frozenset({"t", "sc", "obs", "sub", "n", "a", "v", "ts", "b", "sig"})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# id(entry) → (entry, digest). The entry itself is kept in the value, so an id reused by a new object
# after the old one died never returns a stale digest (`cached[0] is self` fails). Entries are frozen;
# their body dict must not be mutated after creation (documented in the class).
_DIGESTS: OrderedDict[int, tuple[Entry, bytes]] = OrderedDict()
_DIGEST_CACHE_SIZE = 1 << 16


def _replace(entry: Entry, **changes: Any) -> Entry:
    fields = {name: getattr(entry, name) for name in Entry.__dataclass_fields__}
    fields.update(changes)
    return Entry(**fields)


def next_temporal_version(previous: int, now_ms: int) -> int:
    """A hybrid clock for temporal entries: the wall clock, but always above the previous version."""
    return max(previous + 1, now_ms)


def make_entry(
    key: NodeKey,
    network_id: str,
    type_: EntryType,
    body: dict,
    *,
    version: int,
    timestamp_ms: int,
    subject: NodeId | None = None,
    name: str = "",
    scope: str = MASTER_SCOPE,
) -> Entry:
    """A signed entry authored (and observed) by `key`'s node. For temporal types pass
    version == timestamp_ms (see next_temporal_version)."""
    entry = Entry(
        type=EntryType(type_),
        observer=key.node_id,
        subject=subject if subject is not None else key.node_id,
        name=name,
        author=key.node_id,
        version=version,
        timestamp_ms=timestamp_ms,
        body=body,
        scope=scope,
    )
    return entry.signed_by(key, network_id)
