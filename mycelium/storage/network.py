"""The network this node belongs to, kept in `network.key` in the state dir (mode 0600: it holds the
network secret). Written atomically and fsynced before the daemon acts on it."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import Genesis, IdentityError, Invite, SECRET_SIZE, write_private_file

_HEADER = b"mycelium-network-v1\n"


@dataclass(frozen=True, slots=True)
class NetworkMembership:
    genesis: Genesis
    secret: bytes
    bootstrap: tuple[str, ...] = ()  # addresses from the join token (peers learned later live elsewhere)
    invite: Invite | None = None  # the invite this node joined with; None for the founder
    personal: bool = False  # the single-node network a node creates when it has none
    secret_generation: int = 0  # rotations of the secret so far (rekey on removal; the Primary's "secret" gen)

    @property
    def network_id(self) -> str:
        return self.genesis.network_id

    @property
    def name(self) -> str:
        return self.genesis.name


def save_membership(path: Path, m: NetworkMembership) -> None:
    body = canonical(
        {
            "genesis": m.genesis.to_wire(),
            "secret": m.secret,
            "boot": list(m.bootstrap),
            "invite": m.invite.to_wire() if m.invite else None,
            "personal": m.personal,
            **({"gen": m.secret_generation} if m.secret_generation else {}),
        }
    )
    write_private_file(path, _HEADER + body)


def load_membership(path: Path) -> NetworkMembership | None:
    """The stored membership, None if the node has none yet; IdentityError if unsafe or corrupt."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"{path} holds the network secret but is readable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix with: chmod 600 {path}"
        )
    raw = path.read_bytes()
    if not raw.startswith(_HEADER):
        raise IdentityError(f"{path} is not a mycelium network file (bad header)")
    try:
        obj = decode(raw[len(_HEADER) :])
        if not isinstance(obj, dict):
            raise IdentityError("not a map")
        secret = obj["secret"]
        if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
            raise IdentityError("network secret has the wrong size")
        return NetworkMembership(
            genesis=Genesis.from_wire(obj["genesis"]),
            secret=secret,
            bootstrap=tuple(obj.get("boot") or ()),
            invite=Invite.from_wire(obj["invite"]) if obj.get("invite") else None,
            personal=bool(obj.get("personal", False)),
            secret_generation=int(obj.get("gen", 0)),
        )
    except (EncodingError, KeyError, IdentityError, TypeError) as exc:
        raise IdentityError(
            f"{path} is corrupt ({exc}); restore it from a backup, or remove it and rejoin with a token"
        ) from exc
