"""Volume declarations, leases and roots through the ledger's deterministic apply."""

from __future__ import annotations

import pytest

from mycelium.identity import Genesis, NodeKey, make_invite
from mycelium.ledger.operations import OpType, apply_batch, clock_operation, join_operation, profile_operation, sign_operation
from mycelium.storage import chunks, volumes
from mycelium.storage.catalog import VolumeRoot
from mycelium.storage.erasure import Scheme
from mycelium.storage.sealing import VolumeKey
from mycelium.spores.primary import genesis_primary
from tests.profiles import make_profile

T0 = 1_800_000_000


def _setup():
    founder = NodeKey.from_seed(b"\x07" * 32)
    other = NodeKey.from_seed(b"\x08" * 32)
    g = Genesis(name="t", founder=founder.node_id, created_s=T0, params={"admins": [founder.node_id], "dead_after_s": 30})
    p = genesis_primary(g)
    prof = make_profile(cores=4)
    p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=T0).to_wire(),
                        profile_operation(founder, p.network_id, prof, "sclerotium", now_s=T0).to_wire()])
    inv = make_invite(founder, p.network_id, ttl_s=3600, uses=1, now_s=T0)
    p = apply_batch(p, [join_operation(other, p.network_id, inv, prof, "rhizomorph", now_s=T0).to_wire()])
    return founder, other, p


def _vol(key, p, now, **body):
    return sign_operation(key, p.network_id, OpType.VOLUME, body, now_s=now).to_wire()


def _root(writer, seq):
    ref, _ = chunks.prepare(VolumeKey.derive(b"s" * 32, "n", "data"), b"index", Scheme(1, 1))
    return VolumeRoot("data", seq, writer.node_id, (ref,)).to_wire()


def test_declare_lease_root_and_the_single_writer_rule():
    founder, other, p = _setup()
    p = apply_batch(p, [_vol(other, p, T0, action="declare", name="data")])  # not an admin: skipped
    assert volumes.VOLUMES not in p.params
    p = apply_batch(p, [_vol(founder, p, T0, action="declare", name="data"),
                        _vol(other, p, T0, action="lease", name="data")])
    vol = p.params["volumes"]["data"]
    assert vol["lease"] == other.node_id and vol["lease_until_s"] == T0 + volumes.LEASE_S
    # the founder cannot commit without the lease, nor take it without force
    p2 = apply_batch(p, [_vol(founder, p, T0, action="lease", name="data"),
                         _vol(founder, p, T0, action="root", name="data", root=_root(founder, 1), expect_seq=0)])
    assert p2.params["volumes"]["data"]["lease"] == other.node_id and p2.params["volumes"]["data"]["root"] is None
    # the holder commits seq 1; a stale second commit (expect 0 again) is refused
    p = apply_batch(p, [_vol(other, p, T0, action="root", name="data", root=_root(other, 1), expect_seq=0),
                        _vol(other, p, T0, action="root", name="data", root=_root(other, 1), expect_seq=0)])
    assert VolumeRoot.from_wire(p.params["volumes"]["data"]["root"]).seq == 1
    # an admin forces the lease over: the old writer's next commit is refused
    p = apply_batch(p, [_vol(founder, p, T0, action="lease", name="data", force=True),
                        _vol(other, p, T0, action="root", name="data", root=_root(other, 2), expect_seq=1)])
    assert p.params["volumes"]["data"]["lease"] == founder.node_id
    assert VolumeRoot.from_wire(p.params["volumes"]["data"]["root"]).seq == 1


def test_an_expired_lease_can_be_taken():
    founder, other, p = _setup()
    p = apply_batch(p, [_vol(founder, p, T0, action="declare", name="data"), _vol(other, p, T0, action="lease", name="data")])
    later = T0 + volumes.LEASE_S + 1
    p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=later).to_wire(),
                        _vol(founder, p, later, action="lease", name="data")])
    assert p.params["volumes"]["data"]["lease"] == founder.node_id


def test_bad_names_and_the_volume_bound():
    founder, _, p = _setup()
    p = apply_batch(p, [_vol(founder, p, T0, action="declare", name="Bad Name")])
    assert volumes.VOLUMES not in p.params
    many = {f"v{i}": {} for i in range(volumes.MAX_VOLUMES)}
    with pytest.raises(volumes.VolumeOpError, match="limit"):
        volumes.check(founder.node_id, {"action": "declare", "name": "one-more"}, many, admins=[founder.node_id],
                      members=p.members, now_s=T0)
