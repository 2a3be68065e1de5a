"""Issue 16 × 19 with real daemons: volumes survive a rotation of the network secret. Three nodes
store a file; an admin removes one node, the secret rotates; the remaining members read the file
back byte-identical (its chunks are under the generation-0 key, recovered from the Primary's sealed
past), and a file written after the rotation is sealed under a key no secret the removed node holds
opens; a member restarted after the rotation (only the new secret on disk) still reads the old file."""

from __future__ import annotations

import json
import os

import pytest

from mycelium.storage.network import load_membership
from mycelium.storage.sealing import SealError, VolumeKey
from mycelium.storage.shares import ShareStore
from tests.integration.daemons import Daemon, wait_until

pytestmark = pytest.mark.integration

FAST = {"MYCELIUM__NODE__HEARTBEAT_S": "1", "MYCELIUM__NODE__DEAD_AFTER_S": "20",
        "MYCELIUM__NODE__READ_ONLY_AFTER_S": "10", "MYCELIUM__STORAGE__INVENTORY_INTERVAL_S": "1"}


def ok(res) -> str:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stdout}\n{res.stderr}"
    return res.stdout


def js(d: Daemon, *args: str) -> dict:
    return json.loads(ok(d.cli(*args, "--json")))


def share_ids(d: Daemon) -> set[str]:
    root = d.state_dir / "shares"
    return {f.name for f in root.glob("*/*") if not f.name.endswith(".tmp")} if root.exists() else set()


def test_files_written_before_a_rotation_read_back_after_it_and_the_removed_node_opens_nothing_new(daemons, tmp_path):
    founder, member, victim = nodes = [daemons.new() for _ in range(3)]
    try:
        ok(founder.up(env=FAST))
        ok(founder.cli("network", "create", "spores"))
        wait_until(lambda: founder.status()["epoch"] >= 1, timeout=60, what="the founder's first height")
        token = js(founder, "invite", "--uses", "2")["token"]
        for d in (member, victim):
            ok(d.up("--join", token, env=FAST))
        wait_until(lambda: len(js(founder, "storage", "status")["devices"]) == 3, timeout=240, interval=1,
                   what="all 3 nodes to be storage devices")

        before = tmp_path / "before.bin"
        before.write_bytes(os.urandom(3 << 20) + b"written at generation 0")
        put = js(founder, "storage", "put", str(before), "--volume", "vault")
        assert put["chunks"] == 4 and (put["k"], put["n"]) == (1, 3)

        victim_id = victim.status()["node_id"]
        ok(founder.cli("remove", victim_id))
        wait_until(lambda: all(js(d, "network", "show")["secret_generation_here"] == 1 for d in (founder, member)),
                   timeout=120, interval=0.5, what="both remaining members to hold secret generation 1")
        wait_until(lambda: len(js(founder, "storage", "status")["devices"]) == 2, timeout=60, interval=0.5,
                   what="the removed node to leave the storage devices")
        for d in (founder, member):
            st = js(d, "storage", "status")
            assert st["key_generations"] == [0, 1], st["key_generations"]
            back = tmp_path / f"back-{d.state_dir.name}.bin"
            ok(d.cli("storage", "get", "before.bin", "--volume", "vault", "-o", str(back), timeout=120))
            assert back.read_bytes() == before.read_bytes()

        # written after the rotation: sealed under generation 1, on the two members only
        held = {d: share_ids(d) for d in (founder, member)}
        after = tmp_path / "after.bin"
        after.write_bytes(b"written at generation 1 " + os.urandom(1000))
        put = js(founder, "storage", "put", str(after), "--volume", "vault")
        assert (put["k"], put["n"]) == (1, 2)
        back = tmp_path / "after-back.bin"
        wait_until(lambda: member.cli("storage", "get", "after.bin", "--volume", "vault", "-o", str(back)).returncode == 0,
                   timeout=60, interval=0.5, what="the other member to read the new file")
        assert back.read_bytes() == after.read_bytes()
        assert victim.cli("storage", "get", "after.bin", "--volume", "vault", "-o", str(back)).returncode != 0

        # every new share is a whole sealed chunk (replication): the member's generation-1 key opens
        # the file's chunk, and no secret the removed node holds opens any of them
        net = load_membership(founder.state_dir / "network.key").network_id
        gen1 = load_membership(founder.state_dir / "network.key").secret
        victim_secret = load_membership(victim.state_dir / "network.key").secret
        assert load_membership(victim.state_dir / "network.key").secret_generation == 0
        new = share_ids(founder) - held[founder]
        assert new and not (share_ids(victim) & new)
        store, opened = ShareStore(founder.state_dir / "shares"), []
        for sid in new:
            sealed = store.get(bytes.fromhex(sid)).data
            with pytest.raises(SealError):
                VolumeKey.derive(victim_secret, net, "vault").open(sealed)
            opened.append(VolumeKey.derive(gen1, net, "vault", generation=1).open(sealed))
        assert after.read_bytes() in opened

        # a restarted member holds only the new secret on disk: the old file still reads back
        ok(member.cli("down", timeout=60))
        ok(member.up(env=FAST))
        again = tmp_path / "again.bin"
        wait_until(lambda: member.cli("storage", "get", "before.bin", "--volume", "vault", "-o", str(again),
                                      timeout=120).returncode == 0, timeout=120, interval=1,
                   what="the restarted member to read the file written before the rotation")
        assert again.read_bytes() == before.read_bytes()
        assert js(member, "storage", "status")["key_generations"] == [0, 1]
    finally:
        for d in nodes:
            d.cli("down", timeout=30)
