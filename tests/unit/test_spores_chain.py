"""The node's Primary chain (bounded, verified on append) and the catch-up core."""

import dataclasses

import pytest

from mycelium.shell.effects import Core, Send, SetTimer
from mycelium.encoding import canonical
from mycelium.identity import Genesis
from mycelium.spores.certificate import QuorumCertificate, precommit_signing_bytes
from mycelium.spores.chain import (
    ChainConfig,
    NewPrimary,
    PrimaryCatchup,
    PrimaryChain,
    PrimaryLinks,
    PrimaryRequest,
    decode_catchup,
)
from mycelium.spores.primary import CertifiedPrimary, ChainError, Member, PrimarySpore, certify_genesis, genesis_primary
from mycelium.testing.spores import loopback, node_id, node_key
from mycelium.spores.validation import DropReason, NullTrustReporter

GENESIS = Genesis(name="home", founder=node_id(0), created_s=1_700_000_000)


def certify(primary, signers):
    value = primary.hash()
    msg = precommit_signing_bytes(primary.network_id, primary.height, 0, value)
    return QuorumCertificate(primary.height, 0, value, {node_id(i): node_key(i).sign(msg) for i in signers})


def build_links(n):
    g = genesis_primary(GENESIS)
    links = [CertifiedPrimary(g, certify_genesis(g, node_key(0)))]
    members = {node_id(i): Member("sclerotium", 500_000, {}, 1) for i in range(4)}
    for h in range(1, n):
        prev = links[-1].primary
        p = PrimarySpore(prev.network_id, h, 1, prev.hash(), members, params={"h": h})
        signers = [0] if h == 1 else [0, 1, 2]
        links.append(CertifiedPrimary(p, certify(p, signers)))
    return links


LINKS = build_links(12)


def chain_with(n, **config):
    chain = PrimaryChain(GENESIS, LINKS[0], ChainConfig(**config))
    chain.extend(LINKS[1:n])
    return chain


def test_append_verifies_and_history_is_bounded():
    chain = chain_with(12, max_history=5)
    assert chain.height == 11 and chain.oldest_height == 7
    assert chain.get(6) is None and chain.get(9) == LINKS[9]
    assert [l.primary.height for l in chain.links_after(8, 10)] == [9, 10, 11]
    assert [l.primary.height for l in chain.links_after(0, 2)] == [7, 8]


def test_tampered_link_is_refused_with_reason():
    chain = chain_with(3)
    bad = CertifiedPrimary(dataclasses.replace(LINKS[3].primary, params={"h": 99}), LINKS[3].certificate)
    with pytest.raises(ChainError) as err:
        chain.append(bad)
    assert err.value.reason == "certificate"
    assert chain.height == 2


def test_extend_skips_known_links_but_detects_forks():
    chain = chain_with(5)
    assert chain.extend(LINKS[2:7]) == 2
    fork = PrimarySpore(GENESIS.network_id, 3, 1, LINKS[2].primary.hash(), LINKS[3].primary.members, params={"fork": 1})
    with pytest.raises(ChainError, match="fork or a forgery"):
        chain.extend([CertifiedPrimary(fork, certify(fork, [0, 1, 2]))])


def test_resume_from_stored_links():
    chain = PrimaryChain.resume(GENESIS, LINKS[4:9])
    assert chain.oldest_height == 4 and chain.height == 8
    with pytest.raises(ChainError):
        PrimaryChain.resume(GENESIS, [LINKS[4], LINKS[6]])
    with pytest.raises(ChainError, match="no stored Primary"):
        PrimaryChain.resume(GENESIS, [])
    other = Genesis(name="other", founder=node_id(0), created_s=1)
    with pytest.raises(ChainError, match="another network"):
        PrimaryChain.resume(other, LINKS[4:6])


def test_genesis_must_match():
    with pytest.raises(ChainError):
        PrimaryChain(GENESIS, LINKS[1])


def make_core(i, chain):
    core = PrimaryCatchup(node_id(i), chain)
    return core


def test_catchup_is_a_core_and_arms_its_timer():
    core = make_core(0, chain_with(1))
    assert isinstance(core, Core)
    core.set_peers([node_id(1)])
    effects = core.on_tick(0.0)
    assert isinstance(effects[0], Send) and decode_catchup(effects[0].message) == PrimaryRequest(0)
    assert effects[-1] == SetTimer("spores.primary.catchup", ChainConfig().catchup_interval_s)


def test_a_just_admitted_peer_is_asked_at_once_not_at_the_next_tick():
    joiner = PrimaryCatchup(node_id(5), None, genesis=GENESIS)
    assert joiner.on_tick(0.0) == [SetTimer("spores.primary.catchup", ChainConfig().catchup_interval_s)]  # nobody yet
    effects = joiner.on_peer_admitted(node_id(1), [node_id(1)], 0.3)  # long before the timer
    assert [(e.to, decode_catchup(e.message)) for e in effects if isinstance(e, Send)] == [(node_id(1), PrimaryRequest(-1))]
    assert effects[-1] == SetTimer("spores.primary.catchup", 0.3 + ChainConfig().catchup_interval_s)
    assert joiner.peers == (node_id(1),)
    # a peer that is not (or no longer) among the admitted ones, or ourselves, is not asked
    assert joiner.on_peer_admitted(node_id(2), [node_id(1)], 0.4) == []
    assert joiner.on_peer_admitted(node_id(5), [node_id(1), node_id(5)], 0.5) == []


def test_a_pushed_link_past_a_gap_asks_for_the_gap_and_is_not_a_fault():
    reports = []

    class Rec(NullTrustReporter):
        def report_invalid(self, sender, entry, reason):
            reports.append(reason)

    core = PrimaryCatchup(node_id(5), chain_with(3), reporter=Rec())  # holds heights 0..2
    effects = core.on_message(node_id(1), PrimaryLinks((LINKS[5],)).to_bytes(), 0.0)
    assert [(e.to, decode_catchup(e.message)) for e in effects] == [(node_id(1), PrimaryRequest(2))]
    assert core.height == 2 and reports == [] and not core.rejected
    effects = core.on_message(node_id(1), PrimaryLinks((LINKS[3],)).to_bytes(), 0.0)  # the next one is taken
    assert [e.link for e in effects if isinstance(e, NewPrimary)] == [LINKS[3]] and core.height == 3
    assert core.on_message(node_id(2), PrimaryLinks((LINKS[3],)).to_bytes(), 0.0) == []  # a second copy: ignored


def test_a_joiner_without_a_chain_starts_from_the_genesis_primary_of_the_answer():
    joiner = PrimaryCatchup(node_id(5), None, genesis=GENESIS)
    joiner.set_peers([node_id(1)])
    first = joiner.on_tick(0.0)
    assert decode_catchup(first[0].message) == PrimaryRequest(-1)
    assert joiner.on_message(node_id(1), PrimaryRequest(0).to_bytes(), 0.0) == []  # nothing to serve yet
    effects = joiner.on_message(node_id(1), PrimaryLinks(tuple(LINKS[:4])).to_bytes(), 0.0)
    assert [e.link for e in effects if isinstance(e, NewPrimary)] == LINKS[:4]
    assert joiner.chain.height == 3 and joiner.chain.genesis == GENESIS


def test_a_joiner_refuses_a_chain_that_does_not_start_at_its_genesis():
    other = build_links(3)  # same shape, but certified for another founder's network below
    joiner = PrimaryCatchup(node_id(5), None, genesis=dataclasses.replace(GENESIS, name="other"))
    assert joiner.on_message(node_id(1), PrimaryLinks(tuple(other)).to_bytes(), 0.0) == []
    assert joiner.chain is None and sum(joiner.rejected.values()) == 1
    with pytest.raises(ValueError, match="genesis"):
        PrimaryCatchup(node_id(5), None)


def test_a_behind_node_catches_up_in_pages():
    ahead = make_core(1, chain_with(12))
    behind = make_core(5, chain_with(1, max_links_per_message=4))
    ahead.set_peers([node_id(5)])
    behind.set_peers([node_id(1)])
    seen = []
    loopback({node_id(1): ahead, node_id(5): behind}, on_output=lambda w, node, e: seen.append(e)).run_until(0.0)
    assert behind.chain.height == 11
    assert behind.chain.primary.hash() == ahead.chain.primary.hash()
    assert [e.link.primary.height for e in seen if isinstance(e, NewPrimary)] == list(range(1, 12))


def test_tampered_answer_is_refused_and_reported():
    reports = []

    class Rec:
        def report_invalid(self, sender, author, reason):
            reports.append((sender, reason))

    core = PrimaryCatchup(node_id(5), chain_with(2), reporter=Rec())
    bad = CertifiedPrimary(dataclasses.replace(LINKS[3].primary, params={"x": 1}), LINKS[3].certificate)
    effects = core.on_message(node_id(1), PrimaryLinks((LINKS[2], bad, LINKS[4])).to_bytes(), 1.0)
    assert [e.link for e in effects if isinstance(e, NewPrimary)] == [LINKS[2]]
    assert core.chain.height == 2 and core.rejected == {"certificate": 1}
    assert reports == [(node_id(1), DropReason.BAD_PRIMARY)]


@pytest.mark.parametrize(
    "message,reason",
    [
        (b"\xc1", DropReason.MALFORMED),
        (canonical({"v": 9, "t": 1, "after": 0}), DropReason.UNSUPPORTED_VERSION),
        (canonical({"v": 1, "t": 7}), DropReason.UNKNOWN_TYPE),
        (canonical({"v": 1, "t": 1, "after": "x"}), DropReason.MALFORMED),
        (canonical({"v": 1, "t": 2, "links": [{"primary": {}, "qc": {}}]}), DropReason.MALFORMED),
        ("text", DropReason.MALFORMED),
    ],
)
def test_garbage_is_dropped_and_counted(message, reason):
    core = make_core(0, chain_with(1))
    assert core.on_message(node_id(1), message, 1.0) == []
    assert core.drops[reason] == 1


def test_request_beyond_head_gets_no_answer():
    core = make_core(0, chain_with(3))
    assert core.on_message(node_id(1), PrimaryRequest(2).to_bytes(), 1.0) == []
    answer = core.on_message(node_id(1), PrimaryRequest(0), 1.0)
    assert len(decode_catchup(answer[0].message).links) == 2
