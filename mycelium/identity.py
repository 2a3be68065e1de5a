"""Node keys, network genesis and secret, invites and join tokens.

A node id is the node's libp2p peer id ("12D3KooW…"): for Ed25519 the peer id *inlines* the public
key, so a node id is self-certifying and `verify(node_id, data, sig)` needs nothing else. This module
computes peer ids itself (protobuf + identity multihash + base58btc) so that pure cores never import
libp2p; `tests/unit/test_identity.py` checks the result against libp2p's own.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mycelium.encoding import EncodingError, canonical, decode, digest, hash_value

NodeId = str  # a libp2p peer id in base58btc, e.g. "12D3KooW…"

KEY_FILE_HEADER = b"mycelium-node-key-v1\n"
SECRET_SIZE = 32
SIGNATURE_SIZE = 64

# protobuf PublicKey{Type=Ed25519(1), Data=<32 bytes>} and the identity multihash around it
_PB_ED25519_PREFIX = b"\x08\x01\x12\x20"
_MULTIHASH_IDENTITY_PREFIX = b"\x00\x24"


class IdentityError(Exception):
    """A key, genesis or token is missing, unreadable, unsafe or invalid; the message says what to do."""


class InvalidName(IdentityError):
    """A network name that is not allowed (length or characters)."""


class TokenError(IdentityError):
    """A join token is malformed, expired, tampered with or for another network."""


# --------------------------------------------------------------------------- node ids and signatures


def node_id_from_public(public: bytes) -> NodeId:
    if len(public) != 32:
        raise IdentityError(f"an Ed25519 public key has 32 bytes, got {len(public)}")
    return base58.b58encode(_MULTIHASH_IDENTITY_PREFIX + _PB_ED25519_PREFIX + public).decode()


@lru_cache(maxsize=4096)
def public_from_node_id(node_id: NodeId) -> bytes:
    """The Ed25519 public key inlined in `node_id`; IdentityError if it is not such a peer id."""
    try:
        raw = base58.b58decode(node_id)
    except ValueError as exc:
        raise IdentityError(f"node id {node_id!r} is not base58") from exc
    prefix = _MULTIHASH_IDENTITY_PREFIX + _PB_ED25519_PREFIX
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise IdentityError(f"node id {node_id!r} is not an Ed25519 libp2p peer id")
    return raw[len(prefix) :]


def is_node_id(value: object) -> bool:
    if not isinstance(value, str) or not 40 <= len(value) <= 60:
        return False
    try:
        public_from_node_id(value)
    except IdentityError:
        return False
    return True


@lru_cache(maxsize=4096)
def _public_key(node_id: NodeId) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(public_from_node_id(node_id))


def verify(node_id: NodeId, data: bytes, signature: bytes) -> bool:
    """True iff `signature` is `node_id`'s Ed25519 signature over `data`. Never raises."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    if not isinstance(node_id, str) or not isinstance(data, (bytes, bytearray)):
        return False
    try:
        _public_key(node_id).verify(signature, data)
    except (InvalidSignature, IdentityError, ValueError, TypeError):
        return False
    return True


class NodeKey:
    """A node's Ed25519 signing key. Its node id is its libp2p peer id."""

    __slots__ = ("_private", "public", "node_id")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public: bytes = private.public_key().public_bytes_raw()
        self.node_id: NodeId = node_id_from_public(self.public)

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """Deterministic key from a 32-byte seed (tests and the simulator)."""
        if len(seed) != 32:
            raise IdentityError(f"an Ed25519 seed has 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def seed(self) -> bytes:
        return self._private.private_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"NodeKey({self.node_id})"

    # -- files -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> NodeKey:
        """Load the key at `path`, refusing one that other users can read."""
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise IdentityError(f"no node key at {path}") from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"node key {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"anyone who reads it can impersonate this node. Fix with: chmod 600 {path}"
            )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read node key {path}: {exc.strerror}") from exc
        if not raw.startswith(KEY_FILE_HEADER):
            raise IdentityError(f"{path} is not a mycelium node key (bad header)")
        try:
            seed = bytes.fromhex(raw[len(KEY_FILE_HEADER) :].decode("ascii").strip())
            return cls.from_seed(seed)
        except (ValueError, UnicodeDecodeError, IdentityError) as exc:
            raise IdentityError(f"node key {path} is corrupt ({exc}); restore it from a backup") from exc

    def save(self, path: Path) -> None:
        """Write the key with mode 0600, atomically and durably."""
        write_private_file(path, KEY_FILE_HEADER + self.seed().hex().encode() + b"\n")

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[NodeKey, bool]:
        """(key, created): load the key at `path`, creating it on first run."""
        if path.exists():
            return cls.load(path), False
        key = cls.generate()
        key.save(path)
        return key, True


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600, fsynced (file and directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- networks


@dataclass(frozen=True, slots=True)
class Genesis:
    """The founding record of a network. Its canonical hash is the network id."""

    name: str
    founder: NodeId
    created_s: int  # unix seconds at creation; part of the hash so two "home" networks differ
    params: dict = field(default_factory=dict)  # consensus/role parameters agreed at genesis
    version: int = 1

    def to_wire(self) -> dict:
        return {
            "v": self.version,
            "name": self.name,
            "founder": self.founder,
            "created_s": self.created_s,
            "params": self.params,
        }

    @classmethod
    def from_wire(cls, obj: object) -> Genesis:
        if not isinstance(obj, dict):
            raise IdentityError("genesis must be a map")
        try:
            g = cls(
                name=obj["name"],
                founder=obj["founder"],
                created_s=obj["created_s"],
                params=obj.get("params", {}),
                version=obj["v"],
            )
        except KeyError as exc:
            raise IdentityError(f"genesis lacks field {exc.args[0]!r}") from exc
        if g.version != 1:
            raise IdentityError(f"genesis version {g.version} is not supported (this build knows 1)")
        if not isinstance(g.name, str) or not 1 <= len(g.name) <= 64:
            raise IdentityError("genesis name must be 1–64 characters")
        if not is_node_id(g.founder):
            raise IdentityError("genesis founder is not a node id")
        if not isinstance(g.created_s, int) or not isinstance(g.params, dict):
            raise IdentityError("genesis created_s must be an integer and params a map")
        try:
            canonical(g.to_wire())  # the network id is its hash: it must have a canonical form
        except EncodingError as exc:
            raise IdentityError(f"genesis has no canonical encoding: {exc}") from exc
        return g

    @property
    def network_id(self) -> str:
        return hash_value(self.to_wire(), person=b"myc-network").hex()


def validate_network_name(name: str) -> str:
    if not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidName(
            f"network name {name!r} must be 1–64 characters of letters, digits, '-', '_' or '.'"
        )
    return name


def create_network(name: str, founder: NodeKey, *, params: dict | None = None) -> tuple[Genesis, bytes]:
    """A new genesis record and its 32-byte network secret."""
    genesis = Genesis(
        name=validate_network_name(name),
        founder=founder.node_id,
        created_s=int(time.time()),
        params=dict(params or {}),
    )
    return genesis, secrets.token_bytes(SECRET_SIZE)


def short_network_id(network_id: str) -> str:
    """First 16 hex digits: used in protocol ids and topic names (isolation rests on the secret MAC)."""
    return network_id[:16]


# --------------------------------------------------------------------------- invites and tokens

TOKEN_PREFIX = "myc1"
TOKEN_VERSION = 1
_TOKEN_CHECKSUM_SIZE = 4
MAX_TOKEN_CHARS = 8192
_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class Invite:
    """An invitation signed by a member. Admission is a consensus operation that checks it
    (valid signature by a member, unexpired, uses left)."""

    invite_id: bytes  # 16 random bytes
    network_id: str
    issuer: NodeId
    expires_s: int  # unix seconds
    uses: int  # how many nodes may join with it
    signature: bytes = b""

    def signed_part(self) -> dict:
        return {
            "id": self.invite_id,
            "net": self.network_id,
            "issuer": self.issuer,
            "exp": self.expires_s,
            "uses": self.uses,
        }

    def signing_bytes(self) -> bytes:
        return b"mycelium-invite-v1" + canonical(self.signed_part())

    def signed_by(self, key: NodeKey) -> Invite:
        unsigned = Invite(self.invite_id, self.network_id, key.node_id, self.expires_s, self.uses)
        return Invite(**{**_invite_fields(unsigned), "signature": key.sign(unsigned.signing_bytes())})

    def verify_signature(self) -> bool:
        return verify(self.issuer, self.signing_bytes(), self.signature)

    def to_wire(self) -> dict:
        return {**self.signed_part(), "sig": self.signature}

    @classmethod
    def from_wire(cls, obj: object) -> Invite:
        if not isinstance(obj, dict):
            raise TokenError("invite must be a map")
        try:
            inv = cls(obj["id"], obj["net"], obj["issuer"], obj["exp"], obj["uses"], obj["sig"])
        except KeyError as exc:
            raise TokenError(f"invite lacks field {exc.args[0]!r}") from exc
        if not (isinstance(inv.invite_id, bytes) and len(inv.invite_id) == 16):
            raise TokenError("invite id must be 16 bytes")
        if not (isinstance(inv.expires_s, int) and isinstance(inv.uses, int) and inv.uses >= 1):
            raise TokenError("invite expiry and uses must be positive integers")
        if isinstance(inv.expires_s, bool) or isinstance(inv.uses, bool) or inv.uses > 1 << 32:
            raise TokenError("invite expiry and uses must be plain integers")
        if not is_node_id(inv.issuer):
            raise TokenError("invite issuer is not a node id")
        if not (isinstance(inv.network_id, str) and len(inv.network_id) == 64):
            raise TokenError("invite network id must be 64 hex characters")
        if not isinstance(inv.signature, bytes):
            raise TokenError("invite signature must be bytes")
        return inv


def _invite_fields(inv: Invite) -> dict:
    return {
        "invite_id": inv.invite_id,
        "network_id": inv.network_id,
        "issuer": inv.issuer,
        "expires_s": inv.expires_s,
        "uses": inv.uses,
    }


def make_invite(key: NodeKey, network_id: str, *, ttl_s: int, uses: int, now_s: int | None = None) -> Invite:
    if ttl_s <= 0:
        raise IdentityError("an invite's time to live must be positive")
    if uses < 1:
        raise IdentityError("an invite must allow at least one use")
    now_s = int(time.time()) if now_s is None else now_s
    return Invite(secrets.token_bytes(16), network_id, key.node_id, now_s + ttl_s, uses).signed_by(key)


@dataclass(frozen=True, slots=True)
class JoinToken:
    """What a new node needs to join: the genesis (so it can check the network id), the network
    secret (to prove membership on every connection), bootstrap addresses and the signed invite."""

    genesis: Genesis
    secret: bytes
    bootstrap: tuple[str, ...]
    invite: Invite

    @property
    def network_id(self) -> str:
        return self.genesis.network_id

    def encode(self) -> str:
        body = canonical(
            {
                "v": TOKEN_VERSION,
                "genesis": self.genesis.to_wire(),
                "secret": self.secret,
                "boot": list(self.bootstrap),
                "invite": self.invite.to_wire(),
            }
        )
        check = digest(body, person=b"myc-token")[:_TOKEN_CHECKSUM_SIZE]
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body + check).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, now_s: int | None = None, expect_network: str | None = None) -> JoinToken:
        """Parse and check a token; TokenError says exactly what is wrong with it."""
        text = text.strip()
        if len(text) > MAX_TOKEN_CHARS:
            raise TokenError(f"token is {len(text)} characters long; a real one is under {MAX_TOKEN_CHARS}")
        if not text.startswith(TOKEN_PREFIX):
            if text[:3] == "myc" and text[3:4].isdigit():
                raise TokenError(
                    f"token version {text[3]} is not supported by this build (it reads {TOKEN_PREFIX}); "
                    "upgrade mycelium"
                )
            raise TokenError(f"not a mycelium join token (it should start with {TOKEN_PREFIX!r})")
        payload = text[len(TOKEN_PREFIX) :]
        if not payload or not set(payload) <= _B64URL_ALPHABET:
            raise TokenError("token has characters outside base64url; was it cut or wrapped when copied?")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (ValueError, TypeError) as exc:
            raise TokenError("token is not valid base64url; was it cut or wrapped when copied?") from exc
        body, check = raw[:-_TOKEN_CHECKSUM_SIZE], raw[-_TOKEN_CHECKSUM_SIZE:]
        if len(raw) <= _TOKEN_CHECKSUM_SIZE or digest(body, person=b"myc-token")[:_TOKEN_CHECKSUM_SIZE] != check:
            raise TokenError("token checksum does not match: it was mistyped or truncated; copy it again")
        try:
            obj = decode(body, max_size=MAX_TOKEN_CHARS)
        except EncodingError as exc:
            raise TokenError(f"token body is malformed: {exc}") from exc
        if not isinstance(obj, dict) or obj.get("v") != TOKEN_VERSION:
            raise TokenError(f"token body version {obj.get('v') if isinstance(obj, dict) else '?'} is not supported")
        try:
            genesis = Genesis.from_wire(obj["genesis"])
            invite = Invite.from_wire(obj["invite"])
            secret = obj["secret"]
            boot = obj["boot"]
        except KeyError as exc:
            raise TokenError(f"token lacks field {exc.args[0]!r}") from exc
        except IdentityError as exc:
            raise TokenError(f"token is malformed: {exc}") from exc
        if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
            raise TokenError("token's network secret has the wrong size")
        if not isinstance(boot, list) or not all(isinstance(a, str) and len(a) < 512 for a in boot):
            raise TokenError("token's bootstrap addresses are malformed")
        token = cls(genesis, secret, tuple(boot), invite)
        if invite.network_id != genesis.network_id:
            raise TokenError("token's invite names another network than its genesis: it was tampered with")
        if not invite.verify_signature():
            raise TokenError("token's invite signature is invalid: it was tampered with or forged")
        if expect_network is not None and token.network_id != expect_network:
            raise TokenError(
                f"token is for network {genesis.name!r} ({short_network_id(token.network_id)}), but this node "
                f"belongs to {short_network_id(expect_network)}; use a separate --state-dir to run a node "
                "for another network"
            )
        now_s = int(time.time()) if now_s is None else now_s
        if invite.expires_s <= now_s:
            ago = now_s - invite.expires_s
            raise TokenError(
                f"token expired {ago} s ago; ask a member for a new one (`mycelium invite --ttl 1h`)"
            )
        return token
