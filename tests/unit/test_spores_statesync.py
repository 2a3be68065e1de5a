"""State sync (mycelium.spores.statesync): genesis → each validator-set change → a recent head,
verified with the validators of the epoch before; anything else is refused with a reason."""

import dataclasses

import pytest

from mycelium.spores.chain import ChainConfig, PrimaryChain, SyncProof, decode_catchup
from mycelium.spores.primary import CertifiedPrimary, ChainError, Member, PrimarySpore, certify_genesis, genesis_primary
from mycelium.spores.statesync import SyncProgress
from mycelium.testing.spores import node_id
from tests.unit.test_spores_chain import GENESIS, certify

# epochs: 0 = {founder 0} at genesis; 1 = {0,1,2,3} from height 1; 2 = {4,5,6,7} from height 20
SETS = {0: [0], 1: [0, 1, 2, 3], 2: [4, 5, 6, 7]}


def _members(ids):
    return {node_id(i): Member("sclerotium", 500_000, {}, 1) for i in ids}


def build(n):
    g = genesis_primary(GENESIS)
    links = [CertifiedPrimary(g, certify_genesis(g, node_key0()))]
    for h in range(1, n):
        prev = links[-1].primary
        epoch = 1 if h < 20 else 2
        p = PrimarySpore(prev.network_id, h, epoch, prev.hash(), _members(SETS[epoch]), params={"h": h})
        signers = [node for node in SETS[prev.epoch]][: max(1, len(SETS[prev.epoch]) * 2 // 3 + 1)]
        links.append(CertifiedPrimary(p, certify(p, signers)))
    return links


def node_key0():
    from mycelium.testing.spores import node_key

    return node_key(0)


LINKS = build(40)


def pruned_chain(history=5):
    chain = PrimaryChain(GENESIS, LINKS[0], ChainConfig(max_history=history))
    chain.extend(LINKS[1:])
    return chain


def test_the_chain_keeps_every_epoch_link_beyond_its_window():
    chain = pruned_chain()
    assert chain.oldest_height == 35
    assert sorted(chain.epoch_links) == [0, 1, 2]
    assert [chain.epoch_links[e].primary.height for e in (0, 1, 2)] == [0, 1, 20]


def test_a_joiner_verifies_genesis_each_change_and_the_head_in_one_page():
    proof = decode_catchup(pruned_chain().sync_proof(-1, 16).to_bytes())  # through the wire format
    progress = SyncProgress(GENESIS)
    progress.verify(proof)
    assert progress.head.primary.height == 39 and progress.trusted_epoch == 2


def test_proofs_come_in_pages_when_there_are_many_epochs():
    chain = pruned_chain()
    progress = SyncProgress(GENESIS)
    progress.verify(chain.sync_proof(-1, 2))
    assert progress.head is None and progress.trusted_epoch == 1
    progress.verify(chain.sync_proof(progress.trusted_epoch, 2))
    assert progress.head is not None and progress.head.primary.height == 39


def test_a_forged_head_or_a_skipped_epoch_is_refused():
    chain = pruned_chain()
    good = chain.sync_proof(-1, 16)
    forged = CertifiedPrimary(dataclasses.replace(good.head.primary, params={"h": 999}), good.head.certificate)
    with pytest.raises(ChainError) as err:
        SyncProgress(GENESIS).verify(SyncProof(good.epoch_links, forged))
    assert err.value.reason == "certificate"
    with pytest.raises(ChainError) as err:  # epoch 1 missing: epoch 2 cannot be checked against genesis
        SyncProgress(GENESIS).verify(SyncProof((good.epoch_links[0], good.epoch_links[2]), good.head))
    assert err.value.reason == "epoch"
    # a head certified by the new validators but presented as the first link of epoch 2 (wrong signers)
    fake = PrimarySpore(GENESIS.network_id, 20, 2, b"\x00" * 32, _members(SETS[2]), params={"fake": 1})
    fake_link = CertifiedPrimary(fake, certify(fake, SETS[2][:3]))
    with pytest.raises(ChainError):
        SyncProgress(GENESIS).verify(SyncProof((good.epoch_links[0], good.epoch_links[1], fake_link), None))
    with pytest.raises(ChainError, match="genesis"):
        SyncProgress(GENESIS).verify(SyncProof(good.epoch_links[1:], good.head))
