"""Chunk encryption: XChaCha20-Poly1305 under a per-volume key, chunk id = hash of the ciphertext.

The volume key comes from HKDF-SHA256 over the network secret (salt = network id, info names the
volume), or is a 32-byte key the service's admins hold (`VolumeKey.from_admin_key`): then no member
that lacks it can read the volume, even though every holder stores its shares.

The nonce is synthetic: BLAKE2b keyed with a separate nonce key over the plaintext (an SIV-style
construction). The same plaintext in the same volume therefore seals to the same ciphertext, which
gives deduplication inside a volume and makes a re-put idempotent; it reveals only that two chunks of
one volume are equal, never anything across volumes (each volume has its own keys). The volume name
is bound as associated data, so a chunk cannot be replayed into another volume.

Sealed layout: nonce (24 bytes) || ciphertext || tag (16 bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings
from nacl.exceptions import CryptoError

from mycelium.encoding import digest

KEY_BYTES = 32
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES
_CHUNK_PERSON = b"myc-chunk-v1"


class SealError(ValueError):
    """A sealed chunk failed authentication: wrong key, wrong volume, or tampered bytes."""


def chunk_id(sealed: bytes) -> bytes:
    """The content address of a sealed chunk: BLAKE2b-256 of its ciphertext."""
    return digest(sealed, person=_CHUNK_PERSON)


@dataclass(frozen=True, slots=True)
class VolumeKey:
    volume: str
    aead_key: bytes  # XChaCha20-Poly1305 key
    nonce_key: bytes  # keys the synthetic nonce; never used for encryption

    @classmethod
    def derive(cls, network_secret: bytes, network_id: str, volume: str) -> VolumeKey:
        """The key every member can compute: HKDF-SHA256(secret, salt=network id, info=volume)."""
        return cls._expand(network_secret, network_id.encode(), volume, b"network")

    @classmethod
    def from_admin_key(cls, admin_key: bytes, volume: str) -> VolumeKey:
        """A key held by the service's admins only (32 bytes, e.g. from `mycelium storage keygen`)."""
        if len(admin_key) != KEY_BYTES:
            raise ValueError(f"an admin volume key is {KEY_BYTES} bytes, got {len(admin_key)}")
        return cls._expand(admin_key, b"mycelium-admin-volume", volume, b"admin")

    @classmethod
    def _expand(cls, ikm: bytes, salt: bytes, volume: str, kind: bytes) -> VolumeKey:
        okm = HKDF(
            algorithm=hashes.SHA256(),
            length=2 * KEY_BYTES,
            salt=salt,
            info=b"mycelium volume key v1|" + kind + b"|" + volume.encode(),
        ).derive(ikm)
        return cls(volume=volume, aead_key=okm[:KEY_BYTES], nonce_key=okm[KEY_BYTES:])

    def seal(self, plaintext: bytes) -> bytes:
        nonce = hashlib.blake2b(plaintext, digest_size=NONCE_BYTES, key=self.nonce_key).digest()
        ct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, self._aad(), nonce, self.aead_key)
        return nonce + ct

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < OVERHEAD_BYTES:
            raise SealError(f"sealed chunk of {len(sealed)} bytes is shorter than nonce + tag")
        nonce, ct = bytes(sealed[:NONCE_BYTES]), bytes(sealed[NONCE_BYTES:])
        try:
            return bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, self._aad(), nonce, self.aead_key)
        except CryptoError as exc:
            raise SealError(f"chunk of volume {self.volume!r} failed authentication") from exc

    def _aad(self) -> bytes:
        return b"mycelium-volume|" + self.volume.encode()

    def __repr__(self) -> str:  # never print key material
        return f"VolumeKey(volume={self.volume!r})"
