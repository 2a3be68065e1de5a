"""Network-membership proof, peer blocking and per-peer rate limits — pure, no I/O.

On every new connection both sides prove they know the 32-byte network secret without revealing it:

    initiator → responder   Hello     {v, net, nonce_i}
    responder → initiator   Challenge {nonce_r, mac_r = MAC("responder", transcript)}
    initiator → responder   Proof     {mac_i = MAC("initiator", transcript)}
    responder → initiator   Welcome   (or Refused {why} at any step, by either side)

    transcript = (network id, initiator id, responder id, nonce_i, nonce_r)
    MAC        = keyed BLAKE2b-256(key = secret, person = "myc-membership", canonical([role, *transcript]))

In a --pq network the handshake also runs ML-KEM-768: the Hello carries the initiator's ephemeral
public key `ek`, the Challenge the responder's ciphertext `ct`, and both MACs are keyed with
HKDF-SHA256(ML-KEM shared secret ‖ network secret, info = "myc-membership-kem" ‖ H(ek) ‖ H(ct))
instead of the bare secret, so a proof needs the network secret *and* this handshake's KEM secret,
and neither KEM value can be swapped without the network secret. A PQ Hello or Challenge without
its KEM value is refused (`kem_required`). What this does not do: the libp2p (Noise) session the
handshake runs in stays X25519; see the README's Security section.

Both peer ids come from the authenticated (Noise) connection, so a proof cannot be relayed to a
third party; the role label means a responder's MAC cannot be reflected back as an initiator's; the
responder's fresh nonce means an old transcript cannot be replayed; a `ReplayGuard` additionally
refuses a nonce seen before. Nonces are passed in (the shell draws them from `secrets`), so the
core is deterministic and property-testable.

`PeerGate` turns offenses (failed handshakes, garbage, floods) into blocks with exponential backoff;
`RateLimiter` is a per-peer token bucket. Both take `now` (seconds, caller's clock) as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from mycelium.encoding import EncodingError, canonical
from mycelium.encoding import decode
from mycelium.mesh import membership_kem as kem

HANDSHAKE_VERSION = 1
NONCE_SIZE = 32
MAC_SIZE = 32
MAX_HANDSHAKE_MESSAGE = 2048  # bytes; every honest message is smaller (a PQ Hello: ~1.3 KB)
_MAC_PERSON = b"myc-membership"


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class HandshakeState(Enum):
    START = "start"
    AWAIT_CHALLENGE = "await_challenge"  # initiator sent Hello
    AWAIT_HELLO = "await_hello"  # responder, nothing received yet
    AWAIT_PROOF = "await_proof"  # responder sent Challenge
    AWAIT_VERDICT = "await_verdict"  # initiator sent Proof
    ADMITTED = "admitted"
    FAILED = "failed"


class FailureReason(Enum):
    """Why a peer was not admitted. Values are stable strings (logs, counters, `peers --json`)."""

    WRONG_NETWORK = "wrong_network"  # the peer names another network id
    BAD_PROOF = "bad_proof"  # MAC mismatch: the peer does not know the network secret
    REPLAYED_NONCE = "replayed_nonce"  # a nonce seen before (replay or broken RNG)
    MALFORMED = "malformed"  # undecodable or ill-typed message
    UNEXPECTED_MESSAGE = "unexpected_message"  # a valid message in the wrong state
    VERSION_MISMATCH = "version_mismatch"  # the peer speaks another handshake version
    REFUSED_BY_PEER = "refused_by_peer"  # the other side refused us (see remote_reason)
    TIMEOUT = "timeout"  # (shell) the peer did not answer in time
    NO_PROTOCOL = "no_protocol"  # (shell) the peer does not speak our membership protocol
    STREAM_ERROR = "stream_error"  # (shell) the stream broke mid-handshake
    BLOCKED = "blocked"  # (shell) the peer is in a backoff block
    SCHEME_MISMATCH = "scheme_mismatch"  # one side's network is post-quantum (hybrid), the other's classic
    SECRET_REVOKED = "secret_revoked"  # the peer proves an old generation of the secret (rotated after a removal)
    SECRET_AHEAD = "secret_ahead"  # the peer holds a newer generation than we do: we must catch up first
    KEM_REQUIRED = "kem_required"  # a post-quantum network's Hello or Challenge without its ML-KEM-768 value


class HandshakeError(Exception):
    """Local misuse of the handshake API (our bug, not a peer's fault)."""


def membership_mac(
    secret: bytes, role: Role, network_id: str, initiator: str, responder: str, nonce_i: bytes, nonce_r: bytes
) -> bytes:
    """The MAC one side sends: keyed BLAKE2b over the role label and the whole transcript."""
    if len(secret) != 32:
        raise HandshakeError(f"the network secret has 32 bytes, got {len(secret)}")
    body = canonical([role.value, network_id, initiator, responder, nonce_i, nonce_r])
    return hashlib.blake2b(body, key=secret, digest_size=MAC_SIZE, person=_MAC_PERSON).digest()


class ReplayGuard:
    """Remembers the last `capacity` nonces; a nonce seen twice is refused."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def first_use(self, nonce: bytes) -> bool:
        """True the first time `nonce` is presented (and records it); False on any repeat."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True


class Handshake:
    """One side of the membership handshake on one connection (sans-IO).

    Drive it with `start()` (initiator only) and `receive(bytes)`; each returns the bytes to send,
    or None. Stop when `state` is ADMITTED or FAILED; `failure` then says why. Peer faults never
    raise: they end in FAILED, and the returned bytes (if any) tell the peer why it was refused.
    """

    def __init__(
        self,
        role: Role,
        *,
        secret: bytes,
        network_id: str,
        local: str,
        remote: str,
        nonce: bytes,
        replay_guard: ReplayGuard | None = None,
        post_quantum: bool = False,
        generation: int = 0,
        accepted: dict[int, bytes] | None = None,
        kem_seed: bytes | None = None,
    ) -> None:
        """`secret` is our newest network secret, of `generation` (0 until the first rekey).
        `accepted` (responder): generation → secret this remote may prove; None = {generation: secret}.
        The shell offers the previous generation only to current members, during the rekey overlap.
        `kem_seed` (--pq initiator, 64 bytes): seeds its ephemeral ML-KEM-768 key; drawn here if None."""
        if len(secret) != 32:
            raise HandshakeError(f"the network secret has 32 bytes, got {len(secret)}")
        if len(nonce) != NONCE_SIZE:
            raise HandshakeError(f"a handshake nonce has {NONCE_SIZE} bytes, got {len(nonce)}")
        self.role = role
        self._post_quantum = post_quantum  # our network's signature scheme is hybrid (--pq)
        self._generation = generation
        self._accepted = dict(accepted) if accepted is not None else {generation: secret}
        if not all(len(s) == 32 for s in self._accepted.values()):
            raise HandshakeError("every accepted network secret has 32 bytes")
        self._secret = secret
        self._network_id = network_id
        self._local = local
        self._remote = remote
        self._nonce = nonce
        self._guard = replay_guard if replay_guard is not None else ReplayGuard(64)
        self._guard.first_use(nonce)  # our own nonce coming back is a reflection
        self._peer_nonce: bytes | None = None
        self.state = HandshakeState.START if role is Role.INITIATOR else HandshakeState.AWAIT_HELLO
        self.failure: FailureReason | None = None
        self.remote_reason: str | None = None  # what the peer said when it refused us
        self.peer_generation = generation  # the secret generation this connection is keyed to
        self._kem = None  # (pq initiator) our ephemeral ML-KEM-768 key
        self._mac_key: bytes | None = None  # (pq) set once the KEM ran; the bare secret otherwise
        if post_quantum and role is Role.INITIATOR:
            try:
                self._kem = kem.initiator_key(kem_seed if kem_seed is not None else secrets.token_bytes(kem.KEM_SEED_SIZE))
            except ValueError as exc:
                raise HandshakeError(str(exc)) from exc

    @property
    def done(self) -> bool:
        return self.state in (HandshakeState.ADMITTED, HandshakeState.FAILED)

    def start(self) -> bytes:
        if self.role is not Role.INITIATOR or self.state is not HandshakeState.START:
            raise HandshakeError(f"start() is for an initiator that has not started (state {self.state.value})")
        self.state = HandshakeState.AWAIT_CHALLENGE
        hello = {"m": "hello", "v": HANDSHAKE_VERSION, "net": self._network_id, "n": self._nonce}
        if self._post_quantum:
            hello["pq"] = True  # absent for classic, so classic peers see the Hello they always saw
            hello["ek"] = kem.public(self._kem)
        if self._generation:
            hello["kg"] = self._generation  # absent before the first rekey, as above
        return canonical(hello)

    def fail(self, reason: FailureReason) -> bytes | None:
        """End the handshake (also used by the shell for timeouts); returns a Refused to send."""
        if self.done:
            return None
        self.state = HandshakeState.FAILED
        self.failure = reason
        return canonical({"m": "refused", "why": reason.value})

    def receive(self, data: bytes) -> bytes | None:
        if self.done:
            raise HandshakeError(f"receive() after the handshake ended ({self.state.value})")
        if self.state is HandshakeState.START:
            raise HandshakeError("an initiator must call start() before receive()")
        message = self._parse(data)
        if message is None:
            return self.fail(FailureReason.MALFORMED)
        kind = message.get("m")
        if kind == "refused":
            why = message.get("why")
            self.remote_reason = why if isinstance(why, str) and len(why) <= 64 else "unspecified"
            self.fail(FailureReason.REFUSED_BY_PEER)
            return None
        handler = {
            HandshakeState.AWAIT_HELLO: ("hello", self._on_hello),
            HandshakeState.AWAIT_CHALLENGE: ("challenge", self._on_challenge),
            HandshakeState.AWAIT_PROOF: ("proof", self._on_proof),
            HandshakeState.AWAIT_VERDICT: ("welcome", self._on_welcome),
        }[self.state]
        if kind != handler[0]:
            return self.fail(FailureReason.UNEXPECTED_MESSAGE)
        return handler[1](message)

    # -- steps -----------------------------------------------------------------------------------

    def _on_hello(self, msg: dict) -> bytes | None:
        if msg.get("v") != HANDSHAKE_VERSION:
            return self.fail(FailureReason.VERSION_MISMATCH)
        net, nonce = msg.get("net"), msg.get("n")
        if not isinstance(net, str) or not _is_nonce(nonce):
            return self.fail(FailureReason.MALFORMED)
        if msg.get("pq", False) is not self._post_quantum:
            # the network ids differ too (the genesis hash covers the scheme); say the precise cause
            return self.fail(FailureReason.SCHEME_MISMATCH)
        if net != self._network_id:
            return self.fail(FailureReason.WRONG_NETWORK)
        generation = msg.get("kg", 0)
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            return self.fail(FailureReason.MALFORMED)
        if generation not in self._accepted:
            ahead = generation > max(self._accepted)
            return self.fail(FailureReason.SECRET_AHEAD if ahead else FailureReason.SECRET_REVOKED)
        self._secret = self._accepted[generation]
        self.peer_generation = generation
        challenge: dict = {"m": "challenge", "n": self._nonce}
        if self._post_quantum:
            if "ek" not in msg:
                return self.fail(FailureReason.KEM_REQUIRED)
            answered = kem.respond(self._secret, msg["ek"])
            if answered is None:
                return self.fail(FailureReason.MALFORMED)
            self._mac_key, challenge["ct"] = answered
        if not self._guard.first_use(nonce):
            return self.fail(FailureReason.REPLAYED_NONCE)
        self._peer_nonce = nonce
        self.state = HandshakeState.AWAIT_PROOF
        challenge["mac"] = self._mac(Role.RESPONDER)
        return canonical(challenge)

    def _on_challenge(self, msg: dict) -> bytes | None:
        nonce, mac = msg.get("n"), msg.get("mac")
        if not _is_nonce(nonce) or not _is_mac(mac):
            return self.fail(FailureReason.MALFORMED)
        if self._kem is not None:
            if "ct" not in msg:
                return self.fail(FailureReason.KEM_REQUIRED)
            self._mac_key = kem.finish(self._secret, self._kem, msg["ct"])
            if self._mac_key is None:
                return self.fail(FailureReason.MALFORMED)
        if not self._guard.first_use(nonce):
            return self.fail(FailureReason.REPLAYED_NONCE)
        self._peer_nonce = nonce
        if not hmac.compare_digest(mac, self._mac(Role.RESPONDER)):
            return self.fail(FailureReason.BAD_PROOF)
        self.state = HandshakeState.AWAIT_VERDICT
        return canonical({"m": "proof", "mac": self._mac(Role.INITIATOR)})

    def _on_proof(self, msg: dict) -> bytes | None:
        mac = msg.get("mac")
        if not _is_mac(mac):
            return self.fail(FailureReason.MALFORMED)
        if not hmac.compare_digest(mac, self._mac(Role.INITIATOR)):
            return self.fail(FailureReason.BAD_PROOF)
        self.state = HandshakeState.ADMITTED
        return canonical({"m": "welcome"})

    def _on_welcome(self, msg: dict) -> bytes | None:
        self.state = HandshakeState.ADMITTED
        return None

    def _mac(self, role: Role) -> bytes:
        assert self._peer_nonce is not None
        if self.role is Role.INITIATOR:
            initiator, responder, nonce_i, nonce_r = self._local, self._remote, self._nonce, self._peer_nonce
        else:
            initiator, responder, nonce_i, nonce_r = self._remote, self._local, self._peer_nonce, self._nonce
        key = self._mac_key if self._mac_key is not None else self._secret
        return membership_mac(key, role, self._network_id, initiator, responder, nonce_i, nonce_r)

    @staticmethod
    def _parse(data: bytes) -> dict | None:
        if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_HANDSHAKE_MESSAGE:
            return None
        try:
            message = decode(bytes(data), max_size=MAX_HANDSHAKE_MESSAGE)
        except EncodingError:
            return None
        return message if isinstance(message, dict) else None


def _is_nonce(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == NONCE_SIZE


def _is_mac(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == MAC_SIZE


# --------------------------------------------------------------------------- blocking


class Offense(Enum):
    """Things a peer can do wrong, with how many strikes each costs (see GateConfig.strike_limit)."""

    HANDSHAKE_FAILED = "handshake_failed"  # blocks at once
    GARBAGE = "garbage"  # malformed frame or request on a mycelium protocol
    RATE_LIMITED = "rate_limited"  # a request beyond the peer's token bucket
    UNADMITTED_ACCESS = "unadmitted_access"  # used a mycelium protocol without passing the handshake


@dataclass(frozen=True, slots=True)
class GateConfig:
    strike_limit: int = 10  # strikes that trigger a block; a failed handshake costs all of them
    garbage_strikes: int = 4  # strikes per garbage message: 3 garbage messages → blocked
    rate_limited_strikes: int = 1  # strikes per over-limit request: a sustained flood → blocked
    unadmitted_strikes: int = 2  # strikes per attempt to use a protocol before admission
    first_block_s: float = 30.0  # first block; each further block doubles it …
    max_block_s: float = 3600.0  # … up to this cap: block_s = min(max, first * 2**(blocks - 1))
    forgive_after_s: float = 900.0  # a peer quiet this long (no offense) starts again from zero
    max_tracked_peers: int = 10_000  # memory bound; the least recently offending peers are forgotten

    def strikes(self, offense: Offense) -> int:
        return {
            Offense.HANDSHAKE_FAILED: self.strike_limit,
            Offense.GARBAGE: self.garbage_strikes,
            Offense.RATE_LIMITED: self.rate_limited_strikes,
            Offense.UNADMITTED_ACCESS: self.unadmitted_strikes,
        }[offense]


@dataclass(slots=True)
class _Record:
    strikes: int = 0
    blocks: int = 0  # how many times blocked (drives the backoff)
    blocked_until: float = float("-inf")
    last_offense: float = float("-inf")


@dataclass(frozen=True, slots=True)
class Block:
    """Returned by `PeerGate.record` when an offense starts a block."""

    peer: str
    until: float
    duration_s: float
    blocks: int  # how many times this peer has been blocked, this one included


class PeerGate:
    """Counts offenses per peer and blocks repeat offenders with exponential backoff."""

    def __init__(self, config: GateConfig = GateConfig()) -> None:
        self.config = config
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def record(self, peer: str, offense: Offense, now: float) -> Block | None:
        """Count `offense` by `peer` at `now`; a Block when this pushes the peer over the limit."""
        cfg = self.config
        rec = self._records.pop(peer, None) or _Record()
        self._records[peer] = rec  # most recently offending last
        while len(self._records) > cfg.max_tracked_peers:
            self._records.popitem(last=False)
        if now - rec.last_offense >= cfg.forgive_after_s and now >= rec.blocked_until:
            rec.strikes, rec.blocks = 0, 0
        rec.last_offense = now
        if now < rec.blocked_until:
            return None  # already blocked; the shell drops its traffic anyway
        rec.strikes += cfg.strikes(offense)
        if rec.strikes < cfg.strike_limit:
            return None
        rec.strikes = 0
        rec.blocks += 1
        duration = min(cfg.max_block_s, cfg.first_block_s * 2 ** (rec.blocks - 1))
        rec.blocked_until = now + duration
        return Block(peer, rec.blocked_until, duration, rec.blocks)

    def is_blocked(self, peer: str, now: float) -> bool:
        rec = self._records.get(peer)
        return rec is not None and now < rec.blocked_until

    def blocked_until(self, peer: str) -> float | None:
        rec = self._records.get(peer)
        return rec.blocked_until if rec is not None and rec.blocks else None

    def strikes(self, peer: str) -> int:
        rec = self._records.get(peer)
        return rec.strikes if rec is not None else 0

    def blocked_peers(self, now: float) -> list[str]:
        return [p for p, r in self._records.items() if now < r.blocked_until]


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    rate_per_s: float = 50.0  # sustained inbound requests per second per peer
    burst: float = 100.0  # bucket size: requests a peer may send at once after being quiet
    max_tracked_peers: int = 10_000  # memory bound; the least recently seen buckets are dropped


class RateLimiter:
    """A token bucket per peer: `allow(peer, now)` spends one token (or `cost`) if there is one."""

    def __init__(self, config: RateLimitConfig = RateLimitConfig()) -> None:
        if config.rate_per_s <= 0 or config.burst < 1:
            raise ValueError("a rate limit needs rate_per_s > 0 and burst >= 1")
        self.config = config
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # peer → (tokens, at)

    def allow(self, peer: str, now: float, cost: float = 1.0) -> bool:
        cfg = self.config
        tokens, at = self._buckets.pop(peer, (cfg.burst, now))
        tokens = min(cfg.burst, tokens + max(0.0, now - at) * cfg.rate_per_s)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[peer] = (tokens, max(at, now))
        while len(self._buckets) > cfg.max_tracked_peers:
            self._buckets.popitem(last=False)
        return allowed
