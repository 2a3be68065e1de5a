"""Issue 9, fuzzing: every wire decoder, fed random bytes, random msgpack values and mutated valid
messages, either returns a value or raises its declared error type — never anything else (a
KeyError/TypeError/AttributeError here is a crash in the daemon) — and in bounded time.

Inputs come in three layers, so the fuzzer gets past the outer checks: raw bytes; canonical msgpack
of random maps; and real, valid messages with one field replaced, dropped or added (and, for bytes
forms, with bits flipped). A shrunk failure becomes a named regression test below.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.consensus.messages import (
    NIL, Commitment, MessageError, Precommit, Proposal, Reveal, parse_message, sign,
)
from mycelium.encoding import EncodingError, canonical, decode, digest
from mycelium.identity import (
    _TOKEN_CHECKSUM_SIZE, TOKEN_PREFIX, IdentityError, JoinToken, NodeKey, create_network, make_invite,
)
from mycelium.mesh.discovery import parse_exchange
from mycelium.mesh.membership import Handshake, HandshakeState, Role
from mycelium.mesh.rpc import BadRequest
from mycelium.encoding import decode as decode_mesh_message
from mycelium.ledger.operations import OperationError, Operation, alive_operation
from mycelium.runtime.manifest import ManifestError, parse_manifest
from mycelium.spores.chain import CatchupMessageError, PrimaryLinks, PrimaryRequest, decode_catchup
from mycelium.spores.entry import EntryError, Entry, EntryType, make_entry
from mycelium.spores.gossip import Delta, Digest, RangeRequest, decode_message, encode_message
from mycelium.spores.gossip import MessageError as GossipError
from mycelium.spores.primary import CertifiedPrimary, PrimaryError, certify_genesis, genesis_primary

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_CALL_S = 2.0  # a decoder that takes longer on a small input is a denial-of-service bug

KEY = NodeKey.from_seed(b"\x11" * 32)
GENESIS, SECRET = create_network("fuzz", KEY)
NET = GENESIS.network_id
H32 = b"\x07" * 32

# --------------------------------------------------------------------------------- strategies
leaves = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
          | st.text(max_size=24) | st.binary(max_size=40))
values = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=12)


@st.composite
def mutated(draw: st.DrawFn, base: Any, depth: int = 0) -> Any:
    """`base` with one change somewhere inside: a value replaced, a key dropped or added."""
    if isinstance(base, dict) and base and depth < 4:
        key = draw(st.sampled_from(sorted(base, key=repr)))
        action = draw(st.sampled_from(["replace", "drop", "add", "recurse"]))
        out = dict(base)
        if action == "replace":
            out[key] = draw(values)
        elif action == "drop":
            del out[key]
        elif action == "add":
            out[draw(st.text(max_size=6))] = draw(values)
        else:
            out[key] = draw(mutated(base[key], depth + 1))
        return out
    if isinstance(base, list) and base and depth < 4:
        i = draw(st.integers(0, len(base) - 1))
        out = list(base)
        out[i] = draw(values | mutated(base[i], depth + 1))
        return out
    return draw(values)


def flipped(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with a few bytes changed, cut short, or extended."""
    def flip(edits: list[tuple[int, int]]) -> bytes:
        buf = bytearray(data)
        for pos, val in edits:
            buf[pos % len(buf)] ^= val or 1
        return bytes(buf)
    return (st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4).map(flip)
            | st.integers(0, len(data) - 1).map(lambda n: data[:n])
            | st.binary(min_size=1, max_size=16).map(lambda tail: data + tail))


def inputs(valid_wire: list[Any]) -> st.SearchStrategy[bytes]:
    """Bytes for a decoder: raw, random msgpack, and valid messages mutated or bit-flipped."""
    structured = st.sampled_from(valid_wire).flatmap(mutated)
    as_bytes = st.one_of(values, structured).map(lambda v: msgpack.packb(v, use_bin_type=True))
    flips = st.sampled_from([canonical(w) for w in valid_wire]).flatmap(flipped)
    return st.one_of(st.binary(max_size=200), as_bytes, flips)


def check(fn: Callable[[], Any], *declared: type[BaseException]) -> None:
    start = time.monotonic()
    try:
        fn()
    except declared:
        pass  # the declared refusal: fine
    elapsed = time.monotonic() - start
    assert elapsed < MAX_CALL_S, f"decoder took {elapsed:.2f} s on a small input"


# ------------------------------------------------------------------------- valid examples
CONSENSUS = [m.to_wire() for m in (
    sign(Proposal(3, 1, ("op-a", {"k": 1}), H32, 0, KEY.node_id), KEY, NET),
    sign(Commitment(3, 1, H32, KEY.node_id), KEY, NET),
    sign(Reveal(3, 1, H32, b"\x05" * 32, KEY.node_id), KEY, NET),
    sign(Precommit(3, 1, NIL, KEY.node_id), KEY, NET),
)]
ENTRY = make_entry(KEY, NET, EntryType.NODE, {"addrs": ["/ip4/10.0.0.1/tcp/1"], "sw": "0.1", "role": "hypha"},
                   version=5, timestamp_ms=5)
GOSSIP = [msg for msg in (Digest("network", H32, (H32, H32)), RangeRequest("network", (0, 3, 255)),
                          Delta("network", (ENTRY.to_wire(),)))]
GENESIS_PRIMARY = genesis_primary(GENESIS)
CERTIFIED = CertifiedPrimary(GENESIS_PRIMARY, certify_genesis(GENESIS_PRIMARY, KEY))
OPERATION = alive_operation(KEY, NET, now_s=1_700_000_000)


@SETTINGS
@given(inputs(CONSENSUS))
def test_fuzz_consensus_parse_message(data: bytes) -> None:
    check(lambda: parse_message(data), MessageError)


@SETTINGS
@given(inputs([decode(encode_message(m)) for m in GOSSIP]))
def test_fuzz_latent_gossip_decode_message(data: bytes) -> None:
    check(lambda: decode_message(data, max_bytes=1 << 16), GossipError)


@SETTINGS
@given(inputs([decode(PrimaryRequest(4).to_bytes()), decode(PrimaryLinks((CERTIFIED,)).to_bytes())]))
def test_fuzz_chain_decode_catchup(data: bytes) -> None:
    check(lambda: decode_catchup(data), CatchupMessageError)


@SETTINGS
@given(inputs([ENTRY.to_wire()]))
def test_fuzz_entry_from_bytes(data: bytes) -> None:
    check(lambda: Entry.from_bytes(data), EntryError)


@SETTINGS
@given(inputs([CERTIFIED.to_wire()]))
def test_fuzz_certified_primary_from_bytes(data: bytes) -> None:
    check(lambda: CertifiedPrimary.from_bytes(data), PrimaryError)


@SETTINGS
@given(inputs([OPERATION.to_wire()]))
def test_fuzz_operation_from_wire(data: bytes) -> None:
    check(lambda: Operation.from_wire(decode(data)), EncodingError, OperationError)


# ----------------------------------------------------------------------------------- tokens
TOKEN = JoinToken(GENESIS, SECRET, ("/ip4/10.0.0.1/tcp/4001/p2p/" + KEY.node_id,),
                  make_invite(KEY, NET, ttl_s=600, uses=1, now_s=1_700_000_000))
TOKEN_BODY = decode(base64.urlsafe_b64decode(TOKEN.encode()[len(TOKEN_PREFIX):] + "==")[:-_TOKEN_CHECKSUM_SIZE])


def with_checksum(body: bytes) -> str:
    """A token whose checksum is right, so the decoder has to look inside the body."""
    check_ = digest(body, person=b"myc-token")[:_TOKEN_CHECKSUM_SIZE]
    return TOKEN_PREFIX + base64.urlsafe_b64encode(body + check_).decode().rstrip("=")


tokens = st.one_of(
    st.text(max_size=120),
    st.text(max_size=80).map(lambda t: TOKEN_PREFIX + t),
    flipped(TOKEN.encode().encode()).map(lambda b: b.decode("latin-1")),
    inputs([TOKEN_BODY]).map(with_checksum),
)


@SETTINGS
@given(tokens)
def test_fuzz_join_token_decode(text: str) -> None:
    check(lambda: JoinToken.decode(text, now_s=1_700_000_100), IdentityError)


# ------------------------------------------------------------------------------------ mesh
@SETTINGS
@given(st.sampled_from([Role.RESPONDER, Role.INITIATOR]),
       st.lists(inputs([{"m": "hello", "v": 1, "net": NET, "n": H32},
                        {"m": "challenge", "v": 1, "n": H32, "mac": H32},
                        {"m": "proof", "mac": H32}, {"m": "welcome"}, {"m": "refused", "why": "x"}]),
                min_size=1, max_size=4))
def test_fuzz_membership_handshake_never_raises_on_peer_bytes(role: Role, frames: list[bytes]) -> None:
    hs = Handshake(role, secret=SECRET, network_id=NET, local=KEY.node_id, remote="peer", nonce=b"\x01" * 32)
    if role is Role.INITIATOR:
        hs.start()
    for frame in frames:
        if hs.done:
            break
        check(lambda: hs.receive(frame))  # peer faults end in FAILED, never an exception
    assert hs.state in HandshakeState
    if hs.state is HandshakeState.FAILED:
        assert hs.failure is not None


@SETTINGS
@given(inputs([[{"id": KEY.node_id, "addrs": ["/ip4/10.0.0.1/tcp/1"]}]]))
def test_fuzz_peer_exchange_and_mesh_wire(data: bytes) -> None:
    check(lambda: parse_exchange(data, 16), BadRequest)
    check(lambda: decode_mesh_message(data, max_size=1 << 16), EncodingError)


# -------------------------------------------------------------------------------- manifests
MANIFEST = """\
apiVersion: mycelium/v1
kind: Endomycete
name: web
spec:
  command: [python3, -m, http.server]
  replicas: 2
  ports:
    - {name: http, port: 0}
"""
yaml_junk = st.text(alphabet=st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \n\tabc012")), max_size=120)


@SETTINGS
@given(st.one_of(st.text(max_size=200), yaml_junk,
                 st.tuples(st.integers(0, len(MANIFEST)), yaml_junk).map(lambda t: MANIFEST[: t[0]] + t[1] + MANIFEST[t[0]:])))
def test_fuzz_parse_manifest(text: str) -> None:
    check(lambda: parse_manifest(text, "fuzz.yaml"), ManifestError)


def test_manifest_seed_is_valid() -> None:
    """The mutation seeds must be valid, or the fuzzers above only ever test the first check."""
    parse_manifest(MANIFEST, "seed.yaml")
    for wire in CONSENSUS:
        parse_message(canonical(wire))
    for m in GOSSIP:
        decode_message(encode_message(m), max_bytes=1 << 16)
    assert Entry.from_bytes(ENTRY.to_bytes()) == ENTRY
    assert CertifiedPrimary.from_bytes(CERTIFIED.to_bytes()) == CERTIFIED
    assert Operation.from_wire(decode(canonical(OPERATION.to_wire()))) == OPERATION
    assert JoinToken.decode(with_checksum(canonical(TOKEN_BODY)), now_s=1_700_000_100).network_id == NET
    assert parse_exchange(canonical([{"id": KEY.node_id, "addrs": ["/ip4/10.0.0.1/tcp/1"]}]), 16)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x91\xc0", b"\xdf\xff\xff\xff\xff"])
def test_known_awkward_bytes(data: bytes) -> None:
    check(lambda: parse_message(data), MessageError)
    check(lambda: decode_message(data, max_bytes=64), GossipError)
    check(lambda: decode_catchup(data), CatchupMessageError)
    check(lambda: Entry.from_bytes(data), EntryError)
    check(lambda: CertifiedPrimary.from_bytes(data), PrimaryError)
