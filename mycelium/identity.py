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

from mycelium import signatures
from mycelium.durable import fsync_dir
from mycelium.encoding import EncodingError, canonical, decode, digest, hash_value
from mycelium.signatures import MAX_SIGNATURE_SIZE, ML_DSA_65_PUBLIC_SIZE, NETWORK_SCHEMES, PQ_KEYS, Scheme

NodeId = str  # a libp2p peer id in base58btc, e.g. "12D3KooW…"

KEY_FILE_HEADER = b"mycelium-node-key-v1\n"
SECRET_SIZE = 32
SIGNATURE_SIZE = 64  # a classic (Ed25519) signature; hybrid ones are larger (see MAX_SIGNATURE_SIZE)
SIGNATURE_SIZES = (SIGNATURE_SIZE, signatures.HYBRID_SIGNATURE_SIZE)  # what wire parsers accept; verify picks one

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


def verify(node_id: NodeId, data: bytes, signature: bytes, network_id: str, *, pq_key: bytes | None = None) -> bool:
    """True iff `signature` is `node_id`'s signature over `data` under `network_id`'s scheme (hybrid:
    both halves, against the node's pinned ML-DSA key, or `pq_key` for a node not pinned yet — a
    joiner). Never raises."""
    if not isinstance(signature, bytes) or not isinstance(node_id, str) or not isinstance(data, (bytes, bytearray)):
        return False
    scheme = NETWORK_SCHEMES.of(network_id)
    if scheme is Scheme.CLASSIC:
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            _public_key(node_id).verify(signature, bytes(data))
        except (InvalidSignature, IdentityError, ValueError, TypeError):
            return False
        return True
    try:
        ed_public = public_from_node_id(node_id)
    except IdentityError:
        return False
    pinned = PQ_KEYS.get(network_id, node_id)
    if pinned is not None and pq_key is not None and pq_key != pinned:
        return False  # a joiner's claimed key must match what is already pinned for it
    return signatures.verify(scheme, ed_public, pinned or pq_key, bytes(data), signature)


def scheme_of(network_id: str) -> Scheme:
    return NETWORK_SCHEMES.of(network_id)


class NodeKey:
    """A node's Ed25519 signing key. Its node id is its libp2p peer id."""

    __slots__ = ("_private", "_pq_private", "public", "node_id")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._pq_private = None  # ML-DSA-65 key, derived from the Ed25519 seed on first use
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
        """A raw Ed25519 signature: for local derivations (deterministic nonces). Anything other
        nodes verify is signed with `sign_for`, which follows the network's scheme."""
        return self._private.sign(data)

    def _pq(self):
        if self._pq_private is None:
            # BLAKE2b of the Ed25519 seed: a quantum adversary recovers the Ed25519 scalar from the
            # public key, not the seed behind it, so the derived ML-DSA key stays secret.
            pq_seed = digest(self.seed(), person=b"myc-ml-dsa-65")[:32]
            self._pq_private = signatures.mldsa_private_from_seed(pq_seed)
        return self._pq_private

    @property
    def pq_public(self) -> bytes:
        """This node's ML-DSA-65 public key (1 952 bytes), the same in every network."""
        return self._pq().public_key().public_bytes_raw()

    def sign_for(self, network_id: str, data: bytes) -> bytes:
        """Sign `data` under `network_id`'s scheme (classic or hybrid)."""
        scheme = NETWORK_SCHEMES.of(network_id)
        return signatures.sign(scheme, self._private, self._pq() if scheme.post_quantum else None, data)

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
    fsync_dir(path.parent)


# --------------------------------------------------------------------------- networks


@dataclass(frozen=True, slots=True)
class Genesis:
    """The founding record of a network. Its canonical hash is the network id."""

    name: str
    founder: NodeId
    created_s: int  # unix seconds at creation; part of the hash so two "home" networks differ
    params: dict = field(default_factory=dict)  # consensus/role parameters agreed at genesis
    version: int = 1
    scheme: Scheme = Scheme.CLASSIC  # fixed for the network's life: it is part of the hashed genesis
    founder_pq_key: bytes = b""  # hybrid networks: the founder's ML-DSA-65 public key

    def __post_init__(self) -> None:
        # Binding here means: wherever this process holds a network's genesis, it verifies that
        # network's signatures under the genesis' scheme (and refuses classic ones if hybrid).
        object.__setattr__(self, "scheme", Scheme(self.scheme))
        try:
            network_id = self.network_id
        except (EncodingError, TypeError):
            return  # no canonical form: from_wire refuses it right after
        NETWORK_SCHEMES.bind(network_id, self.scheme)
        if self.scheme.post_quantum and isinstance(self.founder_pq_key, bytes) \
                and len(self.founder_pq_key) == ML_DSA_65_PUBLIC_SIZE and isinstance(self.founder, str):
            PQ_KEYS.pin(network_id, self.founder, self.founder_pq_key)

    def to_wire(self) -> dict:
        wire = {
            "v": self.version,
            "name": self.name,
            "founder": self.founder,
            "created_s": self.created_s,
            "params": self.params,
        }
        if self.scheme is not Scheme.CLASSIC:  # classic genesis records (and network ids) are unchanged
            wire["scheme"] = self.scheme.value
            wire["pq"] = self.founder_pq_key
        return wire

    @classmethod
    def from_wire(cls, obj: object) -> Genesis:
        if not isinstance(obj, dict):
            raise IdentityError("genesis must be a map")
        raw_scheme = obj.get("scheme", Scheme.CLASSIC.value)
        try:
            scheme = Scheme(raw_scheme)
        except ValueError:
            raise IdentityError(
                f"genesis uses signature scheme {raw_scheme!r}, which this build does not know "
                f"(it knows {', '.join(s.value for s in Scheme)}); upgrade mycelium"
            ) from None
        pq = obj.get("pq", b"")
        if scheme.post_quantum and not (isinstance(pq, bytes) and len(pq) == ML_DSA_65_PUBLIC_SIZE):
            raise IdentityError(f"a post-quantum genesis must carry the founder's {ML_DSA_65_PUBLIC_SIZE}-byte ML-DSA-65 key")
        if not scheme.post_quantum and "pq" in obj:
            raise IdentityError("a classic genesis carries no ML-DSA key")
        try:
            g = cls(
                name=obj["name"],
                founder=obj["founder"],
                created_s=obj["created_s"],
                params=obj.get("params", {}),
                version=obj["v"],
                scheme=scheme,
                founder_pq_key=pq,
            )
        except KeyError as exc:
            raise IdentityError(f"genesis lacks field {exc.args[0]!r}") from exc
        except TypeError as exc:  # unhashable/ill-typed fields make the network id uncomputable
            raise IdentityError(f"genesis is malformed: {exc}") from exc
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


def create_network(name: str, founder: NodeKey, *, params: dict | None = None,
                   pq: bool = False) -> tuple[Genesis, bytes]:
    """A new genesis record and its 32-byte network secret; `pq` makes it a hybrid
    Ed25519 + ML-DSA-65 network, for its whole life."""
    genesis = Genesis(
        name=validate_network_name(name),
        founder=founder.node_id,
        created_s=int(time.time()),
        params=dict(params or {}),
        scheme=Scheme.HYBRID if pq else Scheme.CLASSIC,
        founder_pq_key=founder.pq_public if pq else b"",
    )
    return genesis, secrets.token_bytes(SECRET_SIZE)


def short_network_id(network_id: str) -> str:
    """First 16 hex digits: used in protocol ids and topic names (isolation rests on the secret MAC)."""
    return network_id[:16]


# --------------------------------------------------------------------------- invites and tokens

TOKEN_PREFIX = "myc1"
TOKEN_VERSION = 1
_TOKEN_CHECKSUM_SIZE = 4
MAX_TOKEN_CHARS = 16384  # a post-quantum token carries an ML-DSA key and a hybrid invite signature (~7.5 KB)
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
        return Invite(**{**_invite_fields(unsigned),
                         "signature": key.sign_for(self.network_id, unsigned.signing_bytes())})

    def verify_signature(self) -> bool:
        return verify(self.issuer, self.signing_bytes(), self.signature, self.network_id)

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
    secret_generation: int = 0  # how often the secret was rotated before this token was issued

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
                **({"gen": self.secret_generation} if self.secret_generation else {}),
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
        gen = obj.get("gen", 0)
        if not isinstance(gen, int) or isinstance(gen, bool) or gen < 0:
            raise TokenError("token's secret generation must be a non-negative integer")
        token = cls(genesis, secret, tuple(boot), invite, gen)
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
