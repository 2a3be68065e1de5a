"""The data channel's post-quantum inner layer (networks created with --pq) — pure, no I/O.

Python 3.11's `ssl` (OpenSSL 3.0) offers TLS 1.3 no hybrid key-exchange group, no exporter and no
external PSK, so the TLS handshake agrees its keys with X25519 alone and nothing from outside can be
mixed into its key schedule. A PQ channel therefore runs a second, independently keyed AEAD layer
inside TLS — a cascade of two ciphers, so the payload stays confidential and intact if *either*
TLS (X25519, ECDSA P-256 certificates pinned by the node signatures) or ML-KEM-768 holds:

1. KEM. The opener draws an ephemeral ML-KEM-768 key pair per channel and sends the public key `ek`
   in its open request (over the admitted libp2p connection); the acceptor encapsulates to it and
   answers with the ciphertext `ct`. The opener's hybrid (Ed25519 + ML-DSA-65) signature covers its
   certificate and `ek` (`open_binding`), the acceptor's covers its certificate, the channel id,
   `ct` and `ek`'s hash (`answer_binding`): nobody can swap a KEM value without forging ML-DSA.
2. Keys. HKDF-SHA256(ikm = the ML-KEM shared secret, info = `Transcript.encode()`: context, network
   id, channel id, both node ids, SHA-256 of both certificates, of `ek` and of `ct`) gives 88 bytes:
   key and IV for opener → acceptor, then key and IV for acceptor → opener. Nothing of TLS's own
   secrets enters (none is reachable from Python), so the two layers are independent.
3. Chunks. Every chunk that carries a seq (data, END, CLOSE) is sealed with ChaCha20-Poly1305:
   nonce = IV XOR seq (TLS 1.3's per-record nonce, RFC 8446 §5.3; seq numbers each chunk of one
   direction once, so a nonce never repeats under a key), AAD = the chunk's 13-byte header with
   the sealed length, body = ciphertext ‖ 16-byte tag. STRIPE_END (a connection's clean end, no data
   and no seq) stays unsealed.

An attacker who records the TLS connections and breaks X25519 later sees inner ciphertext only. One
who breaks TLS live and flips, drops-and-replays, or moves a chunk to another seq or stripe fails
the inner tag, which ends the channel (`WireError`). What it cannot prevent: such an attacker can
stall a channel (a forged STRIPE_END, or simply dropping packets), as on any network path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mycelium.encoding import canonical
from mycelium.mesh.channel_wire import KEM_CIPHERTEXT_BYTES, KEM_PUBLIC_BYTES, TAG_BYTES, WireError, encode_header

PQ_CONTEXT = "mycelium-datachannel-pq/1"
SHARED_BYTES = 32
KEY_BYTES = 32
IV_BYTES = 12


def open_binding(network_id: str, cert_der: bytes, ek: bytes) -> bytes:
    """What the opener of a PQ channel signs: its certificate and its ML-KEM public key."""
    return canonical([PQ_CONTEXT, "open", network_id, cert_der, ek])


def answer_binding(network_id: str, cert_der: bytes, channel_id: bytes, ct: bytes, ek: bytes) -> bytes:
    """What the acceptor signs: its certificate, the channel, its ciphertext and the key it answers."""
    return canonical([PQ_CONTEXT, "answer", network_id, cert_der, channel_id, ct, hashlib.sha256(ek).digest()])


class KemOffer:
    """The opener's ephemeral ML-KEM-768 key pair for one channel (never stored)."""

    def __init__(self) -> None:
        self._private = MLKEM768PrivateKey.generate()
        self.public: bytes = self._private.public_key().public_bytes_raw()

    def shared(self, ct: bytes) -> bytes:
        if not isinstance(ct, bytes) or len(ct) != KEM_CIPHERTEXT_BYTES:
            raise WireError(f"an ML-KEM-768 ciphertext has {KEM_CIPHERTEXT_BYTES} bytes")
        try:
            return self._private.decapsulate(ct)
        except ValueError as exc:
            raise WireError(f"the ML-KEM-768 ciphertext does not decapsulate: {exc}") from exc


def encapsulate(ek: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the opener's public key `ek`; WireError if it is no key."""
    if not isinstance(ek, bytes) or len(ek) != KEM_PUBLIC_BYTES:
        raise WireError(f"an ML-KEM-768 public key has {KEM_PUBLIC_BYTES} bytes")
    try:
        return MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
    except ValueError as exc:
        raise WireError(f"not an ML-KEM-768 public key: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Transcript:
    """Everything the inner keys are bound to (all of it public, none of it from TLS)."""

    network_id: str
    channel_id: bytes
    opener: str  # node ids
    acceptor: str
    opener_cert: bytes  # DER
    acceptor_cert: bytes
    ek: bytes
    ct: bytes

    def encode(self) -> bytes:
        h = [hashlib.sha256(x).digest() for x in (self.opener_cert, self.acceptor_cert, self.ek, self.ct)]
        return canonical([PQ_CONTEXT, "keys", self.network_id, self.channel_id, self.opener, self.acceptor, *h])


@dataclass(frozen=True, slots=True)
class DirectionKeys:
    key: bytes  # ChaCha20-Poly1305, 32 bytes
    iv: bytes  # 12 bytes, XORed with the chunk's seq


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    up: DirectionKeys  # opener → acceptor (the stripes labelled "u")
    down: DirectionKeys  # acceptor → opener ("d")

    def for_opener(self) -> tuple[DirectionKeys, DirectionKeys]:
        """(send, receive) keys of the opener; the acceptor's are the reverse."""
        return self.up, self.down

    def for_acceptor(self) -> tuple[DirectionKeys, DirectionKeys]:
        return self.down, self.up


def schedule(shared: bytes, transcript: Transcript) -> ChannelKeys:
    """Both directions' keys from the ML-KEM shared secret, bound to `transcript`."""
    if len(shared) != SHARED_BYTES:
        raise ValueError(f"an ML-KEM-768 shared secret has {SHARED_BYTES} bytes, got {len(shared)}")
    step = KEY_BYTES + IV_BYTES
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * step, salt=None, info=transcript.encode()).derive(shared)
    return ChannelKeys(DirectionKeys(okm[:KEY_BYTES], okm[KEY_BYTES:step]),
                       DirectionKeys(okm[step : step + KEY_BYTES], okm[step + KEY_BYTES :]))


def nonce(iv: bytes, seq: int) -> bytes:
    """IV XOR seq (big-endian, right-aligned): distinct for every seq of one direction."""
    return (int.from_bytes(iv, "big") ^ seq).to_bytes(IV_BYTES, "big")


class ChunkSealer:
    """Seals one direction's chunks. One instance per thread (AEAD objects are not shared)."""

    def __init__(self, keys: DirectionKeys) -> None:
        self._aead = ChaCha20Poly1305(keys.key)
        self._iv = keys.iv

    def seal(self, seq: int, flags: int, payload: bytes | memoryview) -> tuple[bytes, bytes]:
        """(header, sealed body) of one chunk; the header's length counts the tag."""
        header = encode_header(seq, flags, len(payload) + TAG_BYTES)
        return header, self._aead.encrypt(nonce(self._iv, seq), payload, header)


class ChunkOpener:
    """Opens one direction's chunks; WireError for anything that does not authenticate."""

    def __init__(self, keys: DirectionKeys) -> None:
        self._aead = ChaCha20Poly1305(keys.key)
        self._iv = keys.iv

    def open(self, seq: int, flags: int, sealed: bytes) -> bytes:
        if len(sealed) < TAG_BYTES:
            raise WireError(f"inner layer: chunk {seq} is shorter than its tag")
        header = encode_header(seq, flags, len(sealed))
        try:
            return self._aead.decrypt(nonce(self._iv, seq), sealed, header)
        except InvalidTag:
            raise WireError(f"inner layer: chunk {seq} failed authentication (altered on the way, "
                            "or keyed to another channel)") from None


@dataclass(frozen=True, slots=True)
class Sealing:
    """A PQ channel's inner layer for one end: what its writers seal with and its readers open with."""

    send: DirectionKeys
    receive: DirectionKeys

    def sealer(self) -> ChunkSealer:
        return ChunkSealer(self.send)

    def opener(self) -> ChunkOpener:
        return ChunkOpener(self.receive)
