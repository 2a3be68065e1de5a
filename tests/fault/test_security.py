"""Issue 9, security: a node with the wrong network key; an admitted attacker (it holds the real
network secret) that sends garbage on every rpc, replays captured signed consensus messages, gossips
tampered and forged Latent entries, and — holding a validator's key — equivocates. The daemons keep
serving and deciding, drop and count what they can see, and never fork. The equivocation slashes that
validator (issue 19): it is removed and the network secret rotates without it, so that test runs on a
testnet of its own (the package's shared one must stay whole for the others).

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
from mycelium.testing.deadlines import stretched
from mycelium.identity import SECRET_SIZE
from mycelium.storage.network import load_membership, save_membership
from tests.integration.daemons import agree_at_common_height, wait_moving
from tests.testnet import cluster
from tests.testnet.history import wait_for
from tests.testnet.netns import netns_unavailable_reason

pytestmark = pytest.mark.integration
ALL = [0, 1, 2, 3]
REPO = Path(__file__).resolve().parents[2]
BYZANTINE = 2  # the validator whose key the attacker holds


def _latent_drops(d) -> dict:  # type: ignore[no-untyped-def]
    [scope] = [s for s in d.api(protocol.SPORES + "?kind=latent")["latent"] if s["scope"] == "network"]
    return scope["dropped"]


def _peers(d) -> dict:  # type: ignore[no-untyped-def]
    return d.api(protocol.PEERS)


HONEST = [i for i in ALL if i != BYZANTINE]


@pytest.fixture
def slashing_testnet():
    """A 4-validator testnet of this test's own: the attack below ends with one member slashed. Tests
    using it run first in tests/fault (its conftest), before the package's testnet is formed."""
    reason = netns_unavailable_reason()
    with cluster.Testnet(4, netns=reason is None, spare=1) as net:
        net.netns_reason = reason
        net.form(validators=4, timeout_s=150)
        yield net


def _show(d) -> dict:  # type: ignore[no-untyped-def]
    res = d.cli("network", "show", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _inject(testnet, *extra: str) -> dict:  # type: ignore[no-untyped-def]
    prefix, address = testnet.spare_slot(0)
    peers = [s["addresses"][0] for s in testnet.statuses().values()]
    res = subprocess.run([*prefix, sys.executable, "-m", "tests.fault.injector",
                          "--network-key", str(testnet.nodes[0].state_dir / "network.key"), "--listen", address,
                          *extra, *[a for p in peers for a in ("--peer", p)]],
                         capture_output=True, text=True, timeout=stretched(120), cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.splitlines()[-1])


def test_admitted_attacker_garbage_replays_tampered_spores_and_equivocation(slashing_testnet):
    testnet = slashing_testnet
    nodes = testnet.nodes
    ids = {i: s["node_id"] for i, s in testnet.statuses().items()}
    before = max(testnet.heights(ALL).values())
    summary = _inject(testnet)
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
    # then, holding a validator's key, it equivocates (a second attacker process: the slashing that
    # follows rotates the secret and cuts it off, so nothing else is measured after it). Its votes
    # count only while their height is being decided, which on a busy box it may miss: it tries again,
    # as an attacker would, until an honest validator has caught it (at most 3 tries); the slashing
    # below then shows the evidence decided and applied by every honest member.
    byz = ids[BYZANTINE]

    def without_evidence() -> list[int]:
        return [i for i in ALL if i != BYZANTINE
                and not any("misbehaviour evidence" in line and byz in line for line in nodes[i].log().splitlines())]

    def slashed_somewhere() -> bool:
        return any(byz not in s["validators"] for s in testnet.statuses(HONEST).values() if s)

    def caught() -> bool:
        return len(without_evidence()) < len(HONEST) or slashed_somewhere()

    tries: list = []
    for _ in range(3):
        if caught():  # the last try's evidence was decided after its wait ended
            break
        summary = _inject(testnet, "--validator-key", str(nodes[BYZANTINE].state_dir / "node.key"), "--equivocate-only")
        if summary["admitted_by"] == 0 and caught():
            break  # refused because the slashing already rotated the secret: checked below
        assert summary["admitted_by"] >= 1 and summary["equivocated"]["validator"] == byz, (summary, tries)
        tries.append(summary["equivocated"]["heights"])
        try:
            wait_for(caught, timeout=30, what="equivocation evidence")
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(f"honest validators {without_evidence()} logged no equivocation evidence against "
                             f"n{BYZANTINE} after {len(tries)} tries at heights {tries}; last summary: {summary}")

    # slashing: the evidence is decided, the validator removed, and the secret rotates without it
    def honest_view() -> list[tuple]:
        return [(s["members"], byz in s["validators"], _show(nodes[i])["secret_generation_here"])
                for i, s in testnet.statuses(HONEST).items() if s]
    try:
        wait_moving(honest_view, lambda v: len(v) == 3 and all(x == (3, False, 1) for x in v), stall_s=90,
                    what=f"n{BYZANTINE} slashed out and every honest member on secret generation 1")
    except AssertionError as exc:
        words = ("evidence", "refused", "rekey", "own operation")
        seen = [f"n{i}: {line[:400]}" for i in HONEST for line in nodes[i].log().splitlines()
                if any(w in line for w in words)]
        raise AssertionError(f"{exc}\nheights {testnet.heights(ALL)}; what the honest logs say:\n"
                             + "\n".join(seen[-40:])) from None
    # within the overlap every honest member drops its connection, and it gets nothing further
    wait_moving(lambda: [p["node_id"] for i in HONEST for p in _peers(nodes[i])["peers"] if p["admitted"]],
                lambda admitted: byz not in admitted, stall_s=60,
                what=f"every honest member to drop the slashed n{BYZANTINE}")
    stuck_at = testnet.heights([BYZANTINE])[BYZANTINE]
    rotated_at = max(testnet.heights(HONEST).values())
    testnet.wait_progress(HONEST, beyond=rotated_at + 3, timeout_s=60)
    assert testnet.heights([BYZANTINE])[BYZANTINE] <= max(stuck_at, rotated_at) + 1, "the slashed node still follows"
    wait_for(lambda: agree_at_common_height([nodes[i] for i in HONEST]), timeout=60,
             what="one identical Primary on the honest members")
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
