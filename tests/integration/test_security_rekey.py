"""Issue 19 with real daemons: a 4-node post-quantum network decides, joins and deploys; an admin
removes one node (a real process that keeps running with the old secret) and the network secret
rotates — every member then refuses it and it reads no further Primaries or gossip. Governance
commands with wrong arguments give a clear error and change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.integration.daemons import agree_at_common_height, wait_moving, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "static-web.yaml")
FAST = {"MYCELIUM__NODE__HEARTBEAT_S": "1", "MYCELIUM__NODE__DEAD_AFTER_S": "20",
        "MYCELIUM__NODE__READ_ONLY_AFTER_S": "10"}


def _json(d, *args):
    res = d.cli(*args, "--json")
    assert res.returncode == 0, f"{args} failed ({res.returncode}): {res.stderr}"
    return json.loads(res.stdout)


def _peers(d):
    return {p["node_id"]: p for p in _json(d, "peers")["peers"]}


def _stop_replicas(root: Path) -> None:
    for p in psutil.process_iter(["cwd"]):
        try:
            if p.info["cwd"] and p.info["cwd"].startswith(str(root)):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def test_pq_network_removal_rotates_the_secret_and_locks_the_node_out(daemons):
    nodes = [daemons.new() for _ in range(4)]
    founder, members, victim = nodes[0], nodes[:3], nodes[3]
    try:
        assert founder.up(env=FAST).returncode == 0
        res = founder.cli("network", "create", "pq-home", "--pq")
        assert res.returncode == 0 and "post-quantum" in res.stdout, res.stderr
        wait_until(lambda: founder.status()["epoch"] >= 1, timeout=60, what="the first PQ height")
        # four nodes, four PQ validators (3f+1 with f = 1): hybrid votes and certificates between
        # four processes; `network set` is exercised on a parameter that leaves them so
        res = founder.cli("network", "set", "max_validators=4")
        assert res.returncode == 0, res.stderr
        wait_until(lambda: _json(founder, "network", "show")["params"]["max_validators"] == 4, timeout=30,
                   what="max_validators=4 to be decided")
        token = _json(founder, "invite", "--uses", "3")["token"]
        for d in nodes[1:]:
            res = d.up("--join", token, env=FAST)
            assert res.returncode == 0, res.stderr + d.log()
        wait_until(lambda: all(d.status()["admitted"] for d in nodes) and founder.status()["members"] == 4,
                   timeout=120, interval=0.5, what="all four nodes to be admitted into the PQ network")
        wait_until(lambda: len(founder.status()["validators"]) == 4, timeout=120, interval=0.5,
                   what="all four nodes to become validators")
        show = _json(founder, "network", "show")
        assert show["post_quantum"] and show["signature_scheme"] == "ed25519+ml-dsa-65"
        assert show["secret_generation"] == 0

        # decides and deploys under the hybrid scheme
        res = founder.cli("deploy", EXAMPLE)
        assert res.returncode == 0, res.stderr
        # a 4-validator PQ network on a loaded 2-core box decides slowly: fail only when no height moves
        wait_moving(lambda: tuple((s["epoch"], s["services"]) for s in (d.status() for d in nodes)),
                    lambda seen: all(services == 1 for _, services in seen), stall_s=60,
                    what="the deploy to be decided on every node")

        # bad input: a clear error, nothing changes
        before = _json(founder, "network", "show")
        for args, words in [
            (("network", "set", "heartbeat_s=0"), "heartbeat_s must be an integer in [1, 3600]"),
            (("network", "set", "colour=3"), "unknown network parameter"),
            (("network", "set", "heartbeat_s"), "is not KEY=VALUE"),
            (("network", "set", "heartbeat_s=fast"), "must be an integer"),
            (("network", "set", "dead_after_s=6", "heartbeat_s=5"), "at least twice"),
            (("admin", "add", "12D3KooWnobody"), "no member"),
            (("admin", "remove", founder.status()["node_id"]), "last admin"),
            (("invite", "revoke", "xyz"), "32 hex digits"),
            (("remove", "zzzzzzzz"), "no member"),
            (("remove", founder.status()["node_id"]), "cannot remove itself"),
        ]:
            res = founder.cli(*args)
            assert res.returncode != 0 and words in res.stderr, (args, res.returncode, res.stderr)
        victim_id = victim.status()["node_id"]
        res = nodes[1].cli("remove", victim_id)  # not an admin
        assert res.returncode != 0 and "not an admin" in res.stderr, res.stderr
        after = _json(founder, "network", "show")
        assert {k: after[k] for k in ("admins", "params", "secret_generation", "invites_revoked")} == \
               {k: before[k] for k in ("admins", "params", "secret_generation", "invites_revoked")}

        # an admin removes the victim: the secret rotates through consensus
        res = founder.cli("remove", victim_id[:20])
        assert res.returncode == 0, res.stderr
        wait_until(lambda: all(_json(d, "network", "show")["secret_generation_here"] == 1 for d in members),
                   timeout=90, interval=0.5, what="every remaining member to hold secret generation 1")
        assert all(d.status()["members"] == 3 for d in members)
        height_at_rekey = max(d.status()["epoch"] for d in members)
        victim_height = victim.status()["epoch"]

        # within the overlap every member closes the victim's connection and refuses it from then on
        def victim_refused_everywhere():
            return all(not _peers(d).get(victim_id, {"admitted": False})["admitted"] for d in members)
        wait_until(victim_refused_everywhere, timeout=60, interval=0.5,
                   what="every member to drop the removed node")
        wait_until(lambda: min(d.status()["epoch"] for d in members) >= height_at_rekey + 5, timeout=60,
                   interval=0.5, what="the remaining members to keep deciding")
        assert victim.status()["epoch"] <= max(victim_height, height_at_rekey) + 1, \
            "the removed node still receives Primaries"
        assert not any(p["admitted"] for p in _peers(victim).values()), "the removed node is still admitted somewhere"
        wait_until(lambda: agree_at_common_height(members), timeout=30, interval=0.3,
                   what="one identical Primary on the remaining members")
        log = "".join(d.log() for d in members)
        assert "secret_revoked" in log or "mesh.secret.rotated" in log
    finally:
        for d in nodes:
            d.cli("down", timeout=30)
        _stop_replicas(daemons.root)
