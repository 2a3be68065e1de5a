"""JSON-ready spore reports and Latent snapshots."""

import json

import pytest

from mycelium.encoding import EncodingError
from mycelium.identity import Genesis
from mycelium.spores.entry import EntryType, MalformedEntry
from mycelium.spores.latent import LatentStore
from mycelium.spores.primary import CertifiedPrimary, certify_genesis, genesis_primary
from mycelium.spores.report import spores_report
from mycelium.spores.seed import make_seed
from mycelium.testing.spores import node_id, node_key, signed_entry
from mycelium.spores.validation import DropCounter, DropReason

GENESIS = Genesis(name="home", founder=node_id(0), created_s=1_700_000_000)


def test_report_is_json_and_names_what_matters():
    g = genesis_primary(GENESIS)
    link = CertifiedPrimary(g, certify_genesis(g, node_key(0)))
    seed = make_seed(node_key(1), GENESIS.network_id, link, [node_id(2)], [], created_ms=5)
    store = LatentStore()
    store.merge_entry(signed_entry(1, EntryType.NODE, 1))
    drops = DropCounter()
    drops.count(DropReason.BAD_SIGNATURE)
    report = spores_report(link, [seed], [(store, drops)])
    json.dumps(report)  # plain data only
    assert report["primary"]["hash"] == g.hash().hex() and report["primary"]["validators"] == [node_id(0)]
    assert report["primary"]["certificate"]["signers"] == [node_id(0)]
    assert report["seeds"][0]["holder"] == node_id(1)
    assert report["latent"][0]["dropped"] == {"bad_signature": 1}
    assert report["latent"][0]["digest"] == store.digest().hex()
    assert set(spores_report(link, kind="primary")) == {"primary"}
    assert spores_report(None, kind="primary") == {"primary": None}
    with pytest.raises(ValueError, match="unknown spore kind"):
        spores_report(None, kind="seeds")


def test_latent_snapshot_round_trip():
    store = LatentStore()
    store.merge_entries([signed_entry(i, EntryType.HEALTH, 100 + i, subject=i + 1) for i in range(5)])
    back = LatentStore.restore(store.snapshot())
    assert back.digest() == store.digest() and back.entries() == store.entries()
    with pytest.raises(EncodingError):
        LatentStore.restore(b"\xc1")
    with pytest.raises(EncodingError):
        LatentStore.restore(b"\x90")
    with pytest.raises(MalformedEntry):
        LatentStore.restore(b"\x82\xa2sc\xa7network\xa1e\x91\x01")
