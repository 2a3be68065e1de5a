"""Network-secret envelopes: a rotated secret encrypted to each remaining member (pure, no I/O).

Each member has a key-agreement key derived from its node seed: X25519, plus ML-KEM-768 in
post-quantum networks. Its public half (`kem_public`) is recorded in the Primary (join or `keys`
operation). To hand a new secret to a member, the rekeying validator

    x25519:  ephemeral key e, ss1 = X25519(e, member)                    32 B on the wire (e's public)
    ML-KEM:  (ss2, ct) = Encaps(member's ML-KEM-768 key)                1 088 B on the wire (pq only)
    key    = HKDF-SHA256(ss1 ‖ ss2, info = "myc-rekey" ‖ network ‖ generation ‖ member)
    box    = ChaCha20-Poly1305(key, nonce 0, secret, aad = info)        48 B (a fresh key per envelope)

The hybrid combiner keeps the secret safe while *either* X25519 or ML-KEM holds. The envelopes live
in the Primary only for the latest rotation (bounded: one per member, ≤ 1 168 B each).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mycelium.encoding import canonical, digest

X25519_PUBLIC_SIZE = 32
ML_KEM_768_PUBLIC_SIZE = 1184
ML_KEM_768_CIPHERTEXT_SIZE = 1088
SECRET_SIZE = 32
BOX_SIZE = SECRET_SIZE + 16


def kem_public_size(pq: bool) -> int:
    return X25519_PUBLIC_SIZE + (ML_KEM_768_PUBLIC_SIZE if pq else 0)


def envelope_size(pq: bool) -> int:
    return X25519_PUBLIC_SIZE + (ML_KEM_768_CIPHERTEXT_SIZE if pq else 0) + BOX_SIZE


class EnvelopeError(ValueError):
    """An envelope does not open: not for us, tampered with, or the wrong size."""


class KemKey:
    """A node's key-agreement key, derived from its node seed (nothing extra to store)."""

    def __init__(self, node_seed: bytes) -> None:
        self._x = X25519PrivateKey.from_private_bytes(digest(node_seed, person=b"myc-x25519")[:32])
        self._kem = MLKEM768PrivateKey.from_seed_bytes(
            digest(node_seed, person=b"myc-ml-kem-a")[:32] + digest(node_seed, person=b"myc-ml-kem-b")[:32])

    def public(self, pq: bool) -> bytes:
        x = self._x.public_key().public_bytes_raw()
        return x + self._kem.public_key().public_bytes_raw() if pq else x

    def open(self, envelope: bytes, *, network_id: str, generation: int, node_id: str, pq: bool) -> bytes:
        if not isinstance(envelope, bytes) or len(envelope) != envelope_size(pq):
            raise EnvelopeError(f"an envelope has {envelope_size(pq)} bytes")
        eph, rest = envelope[:X25519_PUBLIC_SIZE], envelope[X25519_PUBLIC_SIZE:]
        ss = self._x.exchange(X25519PublicKey.from_public_bytes(eph))
        if pq:
            ct, rest = rest[:ML_KEM_768_CIPHERTEXT_SIZE], rest[ML_KEM_768_CIPHERTEXT_SIZE:]
            try:
                ss += self._kem.decapsulate(ct)
            except ValueError as exc:
                raise EnvelopeError("ML-KEM ciphertext does not decapsulate") from exc
        info = _info(network_id, generation, node_id)
        try:
            return ChaCha20Poly1305(_key(ss, info)).decrypt(bytes(12), rest, info)
        except InvalidTag as exc:
            raise EnvelopeError("envelope does not open with this node's key (not for us, or tampered with)") from exc


def seal(secret: bytes, recipient_public: bytes, *, network_id: str, generation: int, node_id: str, pq: bool) -> bytes:
    """`secret` encrypted to the member whose `kem_public` is `recipient_public`."""
    if len(secret) != SECRET_SIZE:
        raise EnvelopeError(f"a network secret has {SECRET_SIZE} bytes")
    if len(recipient_public) != kem_public_size(pq):
        raise EnvelopeError(f"a key-agreement public key has {kem_public_size(pq)} bytes here")
    eph = X25519PrivateKey.generate()
    ss = eph.exchange(X25519PublicKey.from_public_bytes(recipient_public[:X25519_PUBLIC_SIZE]))
    wire = eph.public_key().public_bytes_raw()
    if pq:
        ss2, ct = MLKEM768PublicKey.from_public_bytes(recipient_public[X25519_PUBLIC_SIZE:]).encapsulate()
        ss, wire = ss + ss2, wire + ct
    info = _info(network_id, generation, node_id)
    return wire + ChaCha20Poly1305(_key(ss, info)).encrypt(bytes(12), secret, info)


def secret_hash(secret: bytes, network_id: str, generation: int) -> bytes:
    """What the Primary records of a secret: members check the secret they opened against it."""
    return digest(canonical([network_id, generation, secret]), person=b"myc-secret")


def _info(network_id: str, generation: int, node_id: str) -> bytes:
    return b"myc-rekey" + canonical([network_id, generation, node_id])


def _key(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
