"""Volume keys across rotations of the network secret (pure, no I/O).

A chunk is sealed under the volume key of the secret generation current when it was written
(`VolumeKey.derive(secret_g, network, volume, generation=g)`), and its `ChunkRef` records g. A
rotation (leave / remove → rekey) never re-encrypts bulk data; instead the rekeying validator, which
holds the outgoing secret, seals every earlier secret under a key derived from the new one:

    past = nonce (12) || ChaCha20-Poly1305(HKDF(secret_g, salt = network, info = "myc-past" ‖ g),
                                           canonical([[0, secret_0], …, [g-1, secret_g-1]]), aad = info)

and the rekey operation carries it into the Primary (params["secret_past"], latest rotation only).
Every member that holds secret g opens it, so data written before the rotation stays readable —
also to a node that joins later with a token of generation g. A removed node holds only the older
secrets: it can read what it could read before, never what is written after the rotation.

Bounded: at most MAX_GENERATIONS earlier secrets (32 B each) travel in one rotation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.storage.sealing import KEY_BYTES, VolumeKey

MAX_GENERATIONS = 1024  # earlier secrets one rotation carries (32 KiB); README: a bound on rotations
MAX_PAST_BYTES = 12 + 16 + 16 + MAX_GENERATIONS * (KEY_BYTES + 8)  # what governance accepts in a rekey
PARAM = "secret_past"  # Primary params key (written by the rekey rule)


class KeyringError(ValueError):
    """A sealed list of past secrets that does not open under this secret, or is malformed."""


class KeyUnavailable(KeyringError):
    """A chunk was sealed under a secret generation this node cannot recover."""


def _info(network_id: str, generation: int) -> bytes:
    return b"myc-past" + canonical([network_id, generation])


def _key(secret: bytes, network_id: str, generation: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=network_id.encode(),
                info=_info(network_id, generation)).derive(secret)


def seal_past(past: Mapping[int, bytes], secret: bytes, network_id: str, generation: int) -> bytes:
    """Every secret of a generation below `generation`, sealed under `secret` (that generation's)."""
    items = sorted((g, s) for g, s in past.items() if 0 <= g < generation)[-MAX_GENERATIONS:]
    if any(len(s) != KEY_BYTES for _, s in items):
        raise KeyringError(f"a network secret has {KEY_BYTES} bytes")
    nonce = os.urandom(12)
    info = _info(network_id, generation)
    return nonce + ChaCha20Poly1305(_key(secret, network_id, generation)).encrypt(
        nonce, canonical([[g, s] for g, s in items]), info)


def open_past(blob: bytes, secret: bytes, network_id: str, generation: int) -> dict[int, bytes]:
    """The earlier secrets by generation; KeyringError if `blob` was not sealed under `secret`."""
    if not isinstance(blob, bytes) or not 28 <= len(blob) <= MAX_PAST_BYTES:
        raise KeyringError("sealed past secrets have the wrong size")
    info = _info(network_id, generation)
    try:
        raw = ChaCha20Poly1305(_key(secret, network_id, generation)).decrypt(blob[:12], blob[12:], info)
        items = decode(raw, max_size=MAX_PAST_BYTES)
    except (InvalidTag, EncodingError) as exc:
        raise KeyringError(f"past secrets of generation {generation} do not open with this node's secret") from exc
    out: dict[int, bytes] = {}
    if not isinstance(items, list):
        raise KeyringError("past secrets must be a list")
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                and 0 <= item[0] < generation and isinstance(item[1], bytes) and len(item[1]) == KEY_BYTES):
            raise KeyringError("malformed past secret entry")
        out[item[0]] = item[1]
    return out


class Keyring:
    """The secrets this node can use, by generation: the current one plus those opened from the
    Primary's sealed past. `write(volume)` seals new chunks; `read(volume, gen)` opens old ones."""

    def __init__(self, network_id: str, generation: int, secret: bytes) -> None:
        self.network_id = network_id
        self.generation = generation
        self._secrets: dict[int, bytes] = {generation: secret}

    def advance(self, generation: int, secret: bytes) -> None:
        """A newer secret was adopted; the older ones stay (they open chunks written before)."""
        if generation < self.generation:
            raise KeyringError(f"generation {generation} is older than {self.generation}")
        self._secrets[generation] = secret
        self.generation = generation

    def learn(self, blob: bytes | None, generation: int) -> int:
        """Add the earlier secrets in `blob` (sealed under generation `generation`'s secret, which
        we must hold); returns how many were new. Secrets we already hold are never replaced."""
        secret = self._secrets.get(generation)
        if not blob or secret is None:
            return 0
        new = {g: s for g, s in open_past(blob, secret, self.network_id, generation).items() if g not in self._secrets}
        self._secrets.update(new)
        return len(new)

    def secrets(self) -> dict[int, bytes]:
        return dict(self._secrets)

    def generations(self) -> list[int]:
        return sorted(self._secrets)

    def write(self, volume: str) -> VolumeKey:
        return self.read(volume, self.generation)

    def read(self, volume: str, generation: int) -> VolumeKey:
        secret = self._secrets.get(generation)
        if secret is None:
            raise KeyUnavailable(
                f"volume {volume!r} has chunks sealed under network secret generation {generation}, which this "
                f"node cannot recover (it holds {self.generations()}); wait until it adopts the latest rotation, "
                "or rejoin with a fresh invite")
        return VolumeKey.derive(secret, self.network_id, volume, generation=generation)


def past_for_rotation(network_id: str, *, held_generation: int, held_secret: bytes, primary_past: bytes | None,
                      primary_generation: int, new_secret: bytes, new_generation: int) -> bytes:
    """What a rekey carries: every secret the rekeying node can recover (its own and those in the
    Primary's current sealed past), sealed under the new secret. A past it cannot open is left out
    (then only what it holds carries over; the error is not the rekey's to fail on)."""
    ring = Keyring(network_id, held_generation, held_secret)
    try:
        ring.learn(primary_past, primary_generation)
    except KeyringError:
        pass  # sealed under a secret we do not hold: carry what we have
    return seal_past(ring.secrets(), new_secret, network_id, new_generation)
