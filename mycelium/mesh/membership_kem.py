"""ML-KEM-768 for the membership handshake of --pq networks — pure, no I/O (used by `membership`).

    initiator: key = initiator_key(seed); Hello carries public(key)        1 184 B
    responder: (mac_key, ct) = respond(secret, ek); Challenge carries ct   1 088 B
    initiator: mac_key = finish(secret, key, ct)

    mac_key = HKDF-SHA256(ikm = ML-KEM shared secret ‖ network secret,
                          info = "myc-membership-kem" ‖ SHA-256(ek) ‖ SHA-256(ct))

The concatenation combiner keeps the key secret while either input is; both MACs of the handshake
use it in place of the bare network secret. Malformed values give None (the caller fails the
handshake as MALFORMED); nothing here raises on peer input.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEM_PUBLIC_SIZE = 1184
KEM_CIPHERTEXT_SIZE = 1088
KEM_SEED_SIZE = 64


def mac_key(secret: bytes, shared: bytes, ek: bytes, ct: bytes) -> bytes:
    info = b"myc-membership-kem" + hashlib.sha256(ek).digest() + hashlib.sha256(ct).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared + secret)


def initiator_key(seed: bytes) -> MLKEM768PrivateKey:
    if len(seed) != KEM_SEED_SIZE:
        raise ValueError(f"an ML-KEM seed has {KEM_SEED_SIZE} bytes, got {len(seed)}")
    return MLKEM768PrivateKey.from_seed_bytes(seed)


def public(key: MLKEM768PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def respond(secret: bytes, ek: object) -> tuple[bytes, bytes] | None:
    """(mac key, ciphertext) for the initiator's `ek`, or None if `ek` is no ML-KEM-768 key."""
    if not isinstance(ek, bytes) or len(ek) != KEM_PUBLIC_SIZE:
        return None
    try:
        shared, ct = MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
    except ValueError:
        return None
    return mac_key(secret, shared, ek, ct), ct


def finish(secret: bytes, key: MLKEM768PrivateKey, ct: object) -> bytes | None:
    """The initiator's mac key from the responder's `ct`, or None if `ct` is malformed."""
    if not isinstance(ct, bytes) or len(ct) != KEM_CIPHERTEXT_SIZE:
        return None
    try:
        shared = key.decapsulate(ct)
    except ValueError:
        return None
    return mac_key(secret, shared, public(key), ct)
