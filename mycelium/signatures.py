"""Signature schemes: classic Ed25519, or hybrid Ed25519 + ML-DSA-65 for networks created with --pq.

A network's genesis names its scheme; the network id is the genesis hash, so the choice is part of
the network's identity and cannot be changed (downgraded) later. Every signature other nodes verify
goes through `Scheme.sign` / `Scheme.verify`:

    classic   sig = Ed25519(data)                                              64 bytes
    hybrid    sig = Ed25519(HYBRID_DOMAIN ‖ data) ‖ ML-DSA-65(data, ctx)     64 + 3 309 bytes

A hybrid signature is valid only if *both* halves verify. The Ed25519 half signs a domain-separated
message, so stripping the ML-DSA half never leaves a valid classic signature (no downgrade by
truncation), and a classic signature is refused outright in a hybrid network (wrong size).

ML-DSA public keys (1 952 bytes) cannot be recovered from a node id (an Ed25519 libp2p peer id), so
they are *pinned*: `PqKeyDirectory` maps node id → ML-DSA public key, first pin wins, a conflicting
pin is refused. Pins come only from authenticated sources — the genesis record (the founder's key;
covered by the network id), a Primary whose certificate checked, the node's own key — never from
unverified wire data. A join operation carries the joiner's key and is checked against that key.

Pure apart from the process-wide registries (the same kind of state as a key cache): no I/O.
"""

from __future__ import annotations

import threading
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

ED25519_SIGNATURE_SIZE = 64
ML_DSA_65_SIGNATURE_SIZE = 3309
ML_DSA_65_PUBLIC_SIZE = 1952
HYBRID_SIGNATURE_SIZE = ED25519_SIGNATURE_SIZE + ML_DSA_65_SIGNATURE_SIZE
MAX_SIGNATURE_SIZE = HYBRID_SIGNATURE_SIZE  # what size caps on the wire must leave room for
HYBRID_DOMAIN = b"mycelium-hybrid-v1"  # prefixed to what the Ed25519 half signs (non-separability)
ML_DSA_CONTEXT = b"mycelium-v1"  # ML-DSA context string (FIPS 204 ctx)
MAX_PINNED_KEYS = 65_536  # bound on the directory: far above MAX_MEMBERS of every network in a process
MAX_NETWORKS = 65_536  # bound on network → scheme bindings (one per genesis this process ever held)


class Scheme(str, Enum):
    """A network's signature scheme. Values are stable strings (genesis, `network show`)."""

    CLASSIC = "ed25519"
    HYBRID = "ed25519+ml-dsa-65"

    @property
    def signature_size(self) -> int:
        return ED25519_SIGNATURE_SIZE if self is Scheme.CLASSIC else HYBRID_SIGNATURE_SIZE

    @property
    def post_quantum(self) -> bool:
        return self is Scheme.HYBRID

    def describe(self) -> str:
        return "post-quantum (hybrid Ed25519 + ML-DSA-65)" if self.post_quantum else "classic (Ed25519)"


class SchemeError(ValueError):
    """A scheme conflict: a network bound to two schemes, or a node id pinned to two ML-DSA keys."""


def mldsa_private_from_seed(seed: bytes) -> MLDSA65PrivateKey:
    return MLDSA65PrivateKey.from_seed_bytes(seed)


def sign(scheme: Scheme, ed_private: Ed25519PrivateKey, pq_private: MLDSA65PrivateKey | None, data: bytes) -> bytes:
    if scheme is Scheme.CLASSIC:
        return ed_private.sign(data)
    if pq_private is None:
        raise SchemeError("a hybrid signature needs the node's ML-DSA-65 key")
    return ed_private.sign(HYBRID_DOMAIN + data) + pq_private.sign(data, ML_DSA_CONTEXT)


def verify(scheme: Scheme, ed_public: bytes, pq_public: bytes | None, data: bytes, signature: bytes) -> bool:
    """True iff `signature` is valid under `scheme` (hybrid: both halves). Never raises."""
    if not isinstance(signature, bytes) or len(signature) != scheme.signature_size:
        return False
    try:
        ed = Ed25519PublicKey.from_public_bytes(ed_public)
        if scheme is Scheme.CLASSIC:
            ed.verify(signature, data)
            return True
        if not isinstance(pq_public, bytes) or len(pq_public) != ML_DSA_65_PUBLIC_SIZE:
            return False
        ed.verify(signature[:ED25519_SIGNATURE_SIZE], HYBRID_DOMAIN + data)
        MLDSA65PublicKey.from_public_bytes(pq_public).verify(signature[ED25519_SIGNATURE_SIZE:], data, ML_DSA_CONTEXT)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# --------------------------------------------------------------------------- process-wide registries


class NetworkSchemes:
    """network id → scheme. Bound when a Genesis is built or parsed; rebinding to another scheme is
    refused (the id is the genesis hash, so a conflict means a bug or a forged genesis)."""

    def __init__(self, capacity: int = MAX_NETWORKS) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._by_network: dict[str, Scheme] = {}

    def bind(self, network_id: str, scheme: Scheme) -> None:
        with self._lock:
            # never evict: a forgotten hybrid binding would read as classic (a downgrade)
            if network_id not in self._by_network and len(self._by_network) >= self._capacity:
                raise SchemeError(f"this process already holds {self._capacity} networks; restart it")
            have = self._by_network.setdefault(network_id, scheme)
        if have is not scheme:
            raise SchemeError(
                f"network {network_id[:16]} is {have.describe()}; it cannot also be {scheme.describe()}"
            )

    def of(self, network_id: str) -> Scheme:
        """The scheme of `network_id`; classic for a network this process never saw a genesis of."""
        return self._by_network.get(network_id, Scheme.CLASSIC)


class PqKeyDirectory:
    """(network id, node id) → pinned ML-DSA-65 public key (first pin wins; a conflicting pin raises).
    Scoped per network, so a forged genesis for some other network id cannot pin a victim's node id."""

    def __init__(self, capacity: int = MAX_PINNED_KEYS) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._keys: dict[tuple[str, str], bytes] = {}

    def pin(self, network_id: str, node_id: str, public: bytes) -> None:
        if not isinstance(public, bytes) or len(public) != ML_DSA_65_PUBLIC_SIZE:
            raise SchemeError(f"an ML-DSA-65 public key has {ML_DSA_65_PUBLIC_SIZE} bytes")
        with self._lock:
            have = self._keys.get((network_id, node_id))
            if have is None:
                if len(self._keys) >= self._capacity:
                    raise SchemeError(f"ML-DSA key directory is full ({self._capacity} keys)")
                self._keys[(network_id, node_id)] = public
                return
        if have != public:
            raise SchemeError(f"node {node_id[:16]} is already pinned to another ML-DSA-65 key")

    def get(self, network_id: str, node_id: str) -> bytes | None:
        return self._keys.get((network_id, node_id))

    def __len__(self) -> int:
        return len(self._keys)


NETWORK_SCHEMES = NetworkSchemes()
PQ_KEYS = PqKeyDirectory()
