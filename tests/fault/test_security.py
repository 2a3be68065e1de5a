"""Issue 9, security: a node with the wrong network key; an admitted attacker (it holds the real
network secret) that sends garbage on every rpc, replays captured signed consensus messages, gossips
tampered and forged Latent entries, and — holding a validator's key — equivocates. The daemons keep
serving and deciding, drop and count what they can see, and never fork.

Runs on the module's shared testnet (conftest.py); the attacker and the stranger live in the spare
namespaces (or on loopback where namespaces are not permitted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mycelium.api import protocol
from mycelium.identity import SECRET_SIZE
from mycelium.storage.network import load_membership, save_membership
from tests.testnet.history import wait_for

pytestmark = pytest.mark.integration
ALL = [0, 1, 2, 3]
REPO = Path(__file__).resolve().parents[2]
BYZANTINE = 2  # the validator whose key the attacker holds


def _latent_drops(d) -> dict:  # type: ignore[no-untyped-def]
    [scope] = [s for s in d.api(protocol.SPORES + "?kind=latent")["latent"] if s["scope"] == "network"]
    return scope["dropped"]


def _peers(d) -> dict:  # type: ignore[no-untyped-def]
    return d.api(protocol.PEERS)


def test_admitted_attacker_garbage_replays_tampered_spores_and_equivocation(testnet):
    nodes = testnet.nodes
    prefix, address = testnet.spare_slot(0)
    peers = [s["addresses"][0] for s in testnet.statuses().values()]
    ids = {i: s["node_id"] for i, s in testnet.statuses().items()}
    before = max(testnet.heights(ALL).values())
    res = subprocess.run([*prefix, sys.executable, "-m", "tests.fault.injector",
                          "--network-key", str(nodes[0].state_dir / "network.key"), "--listen", address,
                          "--validator-key", str(nodes[BYZANTINE].state_dir / "node.key"),
                          *[a for p in peers for a in ("--peer", p)]],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["admitted_by"] == 4, summary
    assert summary["captured_consensus"] >= 4, f"no consensus traffic captured to replay: {summary}"
    assert summary["tampered_entries"] >= 1, summary

    # garbage operations are refused with a reason, not crashed on
    assert any(k.startswith("submit:refused") for k in summary["answers"]), summary["answers"]
    # the daemons keep serving and deciding
    testnet.wait_progress(ALL, beyond=before + 3, timeout_s=60)
    # tampered entries fail their signature, forged ones come from a non-member: dropped and counted
    drops = [_latent_drops(nodes[i]) for i in ALL]
    assert all(d.get("bad_signature", 0) >= 1 for d in drops), (drops, summary)
    assert all(d.get("unknown_member", 0) + d.get("bad_signature", 0) >= 2 for d in drops), (drops, summary)
    # the honest validators caught the equivocation and recorded evidence against its signer
    byz = ids[BYZANTINE]

    def without_evidence() -> list[int]:
        return [i for i in ALL if i != BYZANTINE
                and not any("misbehaviour evidence" in line and byz in line for line in nodes[i].log().splitlines())]

    try:
        wait_for(lambda: not without_evidence(), timeout=20, what="equivocation evidence")
    except AssertionError:
        raise AssertionError(f"honest validators {without_evidence()} logged no equivocation evidence against "
                             f"n{BYZANTINE}; injector summary: {summary}") from None
    testnet.wait_converged()
    testnet.history.check()


def test_node_with_the_wrong_network_key_is_refused_and_counted(testnet):
    founder = testnet.nodes[0]
    real = load_membership(founder.state_dir / "network.key")
    stranger = testnet.extra_daemon("wrongkey", k=1)
    stranger.state_dir.mkdir(parents=True, mode=0o700)
    # same genesis (network id, protocol ids, topics), but not the secret
    save_membership(stranger.state_dir / "network.key",
                    type(real)(genesis=real.genesis, secret=bytes(SECRET_SIZE), bootstrap=()))
    failed_before = _peers(founder)["counters"].get("handshake_failed", 0)
    res = stranger.up("--bootstrap", founder.status()["addresses"][0])
    assert res.returncode == 0, res.stderr + stranger.log()
    stranger_id = stranger.status()["node_id"]

    def refused() -> bool:
        rows = {p["node_id"]: p for p in _peers(founder)["peers"]}
        row = rows.get(stranger_id)
        return row is not None and not row["admitted"] and bool(row["failure"])

    wait_for(refused, timeout=30, what="the founder to record the stranger's failed membership proof")
    counters = _peers(founder)["counters"]
    assert counters["handshake_failed"] > failed_before, counters
    st = stranger.status()
    assert not st["admitted"] and st["network_id"] == real.network_id
    assert all(s["members"] == 4 for s in testnet.statuses().values())
    stranger.kill()
    testnet.history.check()
