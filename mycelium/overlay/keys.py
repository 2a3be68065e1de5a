"""The node's WireGuard key: X25519, generated on first use, kept in the state dir with mode 0600.

The file holds the private key in WireGuard's own base64 form (what `wg genkey` prints), so an
operator can inspect it with `wg pubkey < overlay.key`. Only the public key leaves the node, in its
overlay Latent entry.
"""

from __future__ import annotations

import base64
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from mycelium.identity import write_private_file

KEY_FILE = "overlay.key"


class OverlayKeyError(Exception):
    """The overlay key file is unusable; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class OverlayKey:
    private: bytes  # 32 raw bytes

    @classmethod
    def generate(cls) -> OverlayKey:
        return cls(X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def public(self) -> bytes:
        return X25519PrivateKey.from_private_bytes(self.private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def private_b64(self) -> str:
        return base64.b64encode(self.private).decode()

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public).decode()

    def __repr__(self) -> str:
        return f"OverlayKey(public={self.public_b64})"

    @classmethod
    def load_or_create(cls, state_dir: Path) -> OverlayKey:
        path = Path(state_dir) / KEY_FILE
        if not path.exists():
            key = cls.generate()
            write_private_file(path, key.private_b64.encode() + b"\n")
            return key
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise OverlayKeyError(f"overlay key {path} is readable by other users (mode {mode:04o}); "
                                  f"fix with: chmod 600 {path}")
        try:
            raw = base64.b64decode(path.read_bytes().strip(), validate=True)
        except ValueError as exc:
            raise OverlayKeyError(f"overlay key {path} is not base64 ({exc}); delete it to generate a new one "
                                  "(peers learn the new public key from the Latent spore)") from exc
        if len(raw) != 32:
            raise OverlayKeyError(f"overlay key {path} holds {len(raw)} bytes, not 32; delete it to generate a new one")
        return cls(raw)


def public_b64(public: bytes) -> str:
    return base64.b64encode(public).decode()
