"""Chunk encryption: ChaCha20-Poly1305 under a per-chunk key from the volume key, chunk id = hash of
the ciphertext.

The volume key comes from HKDF-SHA256 over the network secret of one generation (salt = network id,
info names the volume; storage.keyring keeps earlier generations readable after a rotation), or is a 32-byte key the service's admins hold (`VolumeKey.from_admin_key`): then no member
that lacks it can read the volume, even though every holder stores its shares.

The IV is synthetic: BLAKE2b keyed with a separate nonce key over the plaintext (an SIV-style
construction), 24 bytes. Each chunk is sealed under its own key, BLAKE2b(key = volume AEAD key, IV),
with ChaCha20-Poly1305 and a zero nonce: a key is never used for two different plaintexts, so the
fixed nonce is safe, and the AEAD runs on OpenSSL's ChaCha20-Poly1305 (about 4× libsodium's
XChaCha20-Poly1305 through pynacl on this machine; the XChaCha construction does the same key
derivation inside, with HChaCha20). The same plaintext in the same volume therefore seals to the same
ciphertext, which gives deduplication inside a volume and makes a re-put idempotent; it reveals only
that two chunks of one volume are equal, never anything across volumes (each volume has its own
keys). The volume name is bound as associated data, so a chunk cannot be replayed into another volume.

Sealed layout: IV (24 bytes) || ciphertext || tag (16 bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mycelium.encoding import digest

KEY_BYTES = 32
NONCE_BYTES = 24  # the synthetic IV stored in front of the ciphertext
TAG_BYTES = 16  # Poly1305
_ZERO_NONCE = bytes(12)  # safe: every chunk key seals exactly one plaintext
_KEY_PERSON = b"myc-chunk-key"
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
    aead_key: bytes  # keys the per-chunk AEAD keys (never used to encrypt directly)
    nonce_key: bytes  # keys the synthetic nonce; never used for encryption
    generation: int = 0  # the network secret generation it comes from (recorded in each ChunkRef)

    @classmethod
    def derive(cls, network_secret: bytes, network_id: str, volume: str, generation: int = 0) -> VolumeKey:
        """The key every member can compute: HKDF-SHA256(secret, salt=network id, info=volume).
        `generation` only labels which secret it is (storage.keyring keeps them across rotations)."""
        key = cls._expand(network_secret, network_id.encode(), volume, b"network")
        return cls(key.volume, key.aead_key, key.nonce_key, generation)

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
        iv = hashlib.blake2b(plaintext, digest_size=NONCE_BYTES, key=self.nonce_key).digest()
        return iv + self._aead(iv).encrypt(_ZERO_NONCE, plaintext, self._aad())

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < OVERHEAD_BYTES:
            raise SealError(f"sealed chunk of {len(sealed)} bytes is shorter than nonce + tag")
        iv, ct = bytes(sealed[:NONCE_BYTES]), bytes(sealed[NONCE_BYTES:])
        try:
            return self._aead(iv).decrypt(_ZERO_NONCE, ct, self._aad())
        except InvalidTag as exc:
            raise SealError(f"chunk of volume {self.volume!r} failed authentication") from exc

    def _aead(self, iv: bytes) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(hashlib.blake2b(iv, digest_size=KEY_BYTES, key=self.aead_key, person=_KEY_PERSON).digest())

    def _aad(self) -> bytes:
        return b"mycelium-volume|" + self.volume.encode()

    def __repr__(self) -> str:  # never print key material
        return f"VolumeKey(volume={self.volume!r}, generation={self.generation})"
