import base64
import os
import time

import pytest

NET = "ab" * 32  # a classic network id (never bound to a genesis here)

from mycelium.identity import (
    IdentityError,
    JoinToken,
    NodeKey,
    TokenError,
    create_network,
    is_node_id,
    make_invite,
    public_from_node_id,
    verify,
)


def test_node_id_is_the_libp2p_peer_id():
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    key = NodeKey.generate()
    libp2p_key = Ed25519PrivateKey.from_bytes(key.seed())
    assert ID.from_pubkey(libp2p_key.get_public_key()).to_base58() == key.node_id
    assert public_from_node_id(key.node_id) == key.public


def test_signatures_verify_only_for_their_signer_and_data():
    a, b = NodeKey.generate(), NodeKey.generate()
    sig = a.sign(b"hello")
    assert verify(a.node_id, b"hello", sig, NET)
    assert not verify(a.node_id, b"hellO", sig, NET)
    assert not verify(b.node_id, b"hello", sig, NET)
    assert not verify("not-a-node-id", b"hello", sig, NET)
    assert not verify(a.node_id, b"hello", sig[:-1], NET)
    assert not is_node_id("12D3KooWnope")


def test_key_file_round_trip_and_mode(tmp_path):
    path = tmp_path / "node.key"
    key, created = NodeKey.load_or_create(path)
    assert created and (path.stat().st_mode & 0o777) == 0o600
    again, created = NodeKey.load_or_create(path)
    assert not created and again.node_id == key.node_id


def test_world_readable_key_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match=f"chmod 600 {path}"):
        NodeKey.load(path)


def test_corrupt_key_is_refused(tmp_path):
    path = tmp_path / "node.key"
    NodeKey.generate().save(path)
    path.write_bytes(path.read_bytes()[:-10] + b"zz\n")
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="corrupt"):
        NodeKey.load(path)


def _token(ttl_s=3600, now_s=None, name="home"):
    founder = NodeKey.generate()
    genesis, secret = create_network(name, founder)
    inv = make_invite(founder, genesis.network_id, ttl_s=ttl_s, uses=1, now_s=now_s)
    return JoinToken(genesis, secret, ("/ip4/127.0.0.1/tcp/4701/p2p/" + founder.node_id,), inv)


def test_token_round_trip():
    tok = _token()
    back = JoinToken.decode(tok.encode())
    assert back == tok
    assert back.network_id == tok.genesis.network_id


def test_two_networks_with_one_name_have_different_ids():
    assert _token(name="home").network_id != _token(name="home").network_id


def test_expired_token_says_so():
    tok = _token(ttl_s=60, now_s=int(time.time()) - 120)
    with pytest.raises(TokenError, match="expired"):
        JoinToken.decode(tok.encode())


def test_token_for_another_network_is_refused():
    tok = _token()
    with pytest.raises(TokenError, match="another|belongs to"):
        JoinToken.decode(tok.encode(), expect_network="ab" * 32)


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda t: "", "not a mycelium join token"),
        (lambda t: "hello world", "not a mycelium join token"),
        (lambda t: "myc9" + t[4:], "version 9"),
        (lambda t: t[:-5], "checksum|base64"),
        (lambda t: t[:40], "checksum|base64"),
        (lambda t: t[:30] + ("A" if t[30] != "A" else "B") + t[31:], "checksum"),
        (lambda t: t + "!!!", "base64|checksum"),
        (lambda t: "myc1" + "A" * 17000, "characters long"),
    ],
)
def test_malformed_tokens_are_rejected_with_a_reason(mangle, reason):
    with pytest.raises(TokenError, match=reason):
        JoinToken.decode(mangle(_token().encode()))


def test_a_forged_invite_with_a_valid_checksum_is_refused():
    """An attacker who re-encodes a token (fixing the checksum) still cannot alter the signed invite."""
    from dataclasses import replace

    tok = _token()
    forged = replace(tok, invite=replace(tok.invite, uses=1000))
    with pytest.raises(TokenError, match="signature"):
        JoinToken.decode(forged.encode())


def test_token_body_that_is_not_msgpack_is_refused():
    from mycelium.encoding import digest

    body = b"\xc1\xc1\xc1"
    raw = body + digest(body, person=b"myc-token")[:4]
    text = "myc1" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(TokenError, match="malformed"):
        JoinToken.decode(text)
