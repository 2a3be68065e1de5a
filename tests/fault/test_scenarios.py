"""Issue 9: real daemons under faults. Four validators (one with a skewed clock), each in its own network
namespace; after every scenario all nodes agree on the Primary chain (the history checker has seen no
two hashes at one height, on any node, at any time) and no node's head went back (nothing lost).

Tests run in file order on one shared testnet and each leaves it healed; see conftest.py.
"""

from __future__ import annotations

import json
import time
import warnings

import pytest

from mycelium.api import protocol
from tests.fault.conftest import SKEW_S, SKEWED_NODE, require_netns
from tests.testnet.cluster import wait_seconds
from tests.testnet.history import wait_for
from tests.testnet.netns import netem_unavailable_reason

pytestmark = pytest.mark.integration
ALL = [0, 1, 2, 3]


def _latent(d) -> dict:  # type: ignore[no-untyped-def]
    [scope] = [s for s in d.api(protocol.SPORES + "?kind=latent")["latent"] if s["scope"] == "network"]
    return scope


def _admitted_peers(d) -> set[str]:  # type: ignore[no-untyped-def]
    return {p["node_id"] for p in d.api(protocol.PEERS)["peers"] if p["connected"] and p["admitted"]}


def test_nodes_in_separate_namespaces_find_each_other_via_bootstrap(testnet):
    statuses = testnet.statuses()
    ids = {i: s["node_id"] for i, s in statuses.items()}
    for i, s in statuses.items():
        assert all(a.startswith(f"/ip4/{testnet.nodes[i].address}/") for a in s["addresses"]), s["addresses"]
        assert sorted(s["validators"]) == sorted(ids.values())
        # the joiners only had the founder's address (from the token): the rest came from discovery
        wait_for(lambda: _admitted_peers(testnet.nodes[i]) >= set(ids.values()) - {ids[i]}, timeout=30,
                 what=f"n{i} to be connected to and admitted by the three others")
    # the skewed node's clock really is ahead (its peers' last_seen is stamped with its wall clock) ...
    res = testnet.nodes[SKEWED_NODE].cli("peers", "--json")
    ahead = max(p["last_seen"] or 0 for p in json.loads(res.stdout)["peers"]) - time.time()
    assert SKEW_S - 4 < ahead < SKEW_S + 2, f"n{SKEWED_NODE}'s clock is {ahead:.1f} s ahead, not ~{SKEW_S}"
    # ... and its own Latent entries are accepted (its skew is within tolerance): none dropped
    founder = _latent(testnet.nodes[0])
    assert founder["by_author"].get(ids[SKEWED_NODE], 0) >= 1, founder
    assert "clock_skew" not in founder["dropped"], founder["dropped"]
    assert SKEW_S < 30  # the tolerance (mycelium.spores.validation.DEFAULT_MAX_CLOCK_SKEW_MS)
    testnet.history.check()


def test_validator_crash_and_restart(testnet):
    before = testnet.heights(ALL)
    testnet.kill(1)
    testnet.wait_progress([0, 2, 3], beyond=max(before.values()) + 2)  # 3 of 4 is a quorum
    testnet.restart(1)
    top = max(testnet.heights([0, 2, 3]).values())
    testnet.wait_progress([1], beyond=top, timeout_s=60)  # caught up past what it missed
    assert testnet.heights([1])[1] > before[1], "the restarted validator lost committed heights"
    testnet.wait_converged()
    testnet.history.check()


def test_paused_validator_and_a_throttled_link(testnet):
    before = max(testnet.heights(ALL).values())
    testnet.pause(2)
    if testnet.net is not None:
        testnet.net.throttle(1, rate_kbit=256)  # meanwhile a slow uplink on another validator
    try:
        testnet.wait_progress([0, 1, 3], beyond=before + 3)  # a quorum of three, one of them slow
    finally:
        if testnet.net is not None:
            testnet.net.unthrottle(1)
        testnet.resume(2)
    testnet.wait_progress([2], beyond=before + 3, timeout_s=60)
    testnet.wait_converged()
    testnet.history.check()


def test_minority_partition_decides_nothing_and_rejoins(testnet):
    require_netns(testnet)
    start = testnet.heights(ALL)
    testnet.partition([0, 1, 2], [3])
    try:
        cut = testnet.heights([3])[3]
        testnet.wait_progress([0, 1, 2], beyond=max(start.values()) + 3)  # the majority goes on
        # read-only after FAST_ENV's 4 s without a quorum, checked every watch interval: 10 s is ample
        testnet.observed["minority_read_only"] = _wait_read_only(testnet.nodes[3], timeout_s=30)
        st = testnet.nodes[3].status()
        assert st["epoch"] <= cut + 1, f"a minority of one decided heights {cut}..{st['epoch']} alone"
        assert not any(s["read_only"] for s in testnet.statuses([0, 1, 2]).values())
    finally:
        testnet.heal()
    testnet.wait_progress([3], beyond=max(testnet.heights([0, 1, 2]).values()), timeout_s=60)
    wait_for(lambda: not testnet.nodes[3].status()["read_only"], timeout=30, what="read-only mode to end")
    testnet.wait_converged()
    testnet.history.check()


def _wait_read_only(d, timeout_s: float) -> dict | None:  # type: ignore[no-untyped-def]
    try:
        return wait_for(lambda: (s := d.status())["read_only"] and s, timeout=timeout_s, what="read-only mode")
    except AssertionError:
        return None


def test_cut_off_minority_entered_read_only_mode(testnet):
    """A silently partitioned node (packets dropped, no RST) drops its unresponsive peers after a
    few failed pings, sees no quorum and enters read-only mode (and leaves it after the heal: see
    test_minority_partition_decides_nothing_and_rejoins)."""
    require_netns(testnet)
    st = testnet.observed.get("minority_read_only")
    assert st is not None, "the node cut off from every validator never entered read-only mode"
    assert st["read_only_reason"]


@pytest.mark.slow  # ~40 s: after the heal, TCP retransmission backoff and grown round timeouts must pass
def test_even_split_decides_nothing_then_heals(testnet):
    require_netns(testnet)
    testnet.partition([0, 1], [2, 3])
    try:
        cut = testnet.heights(ALL)
        wait_seconds(5)  # a height a second with a quorum; two of four is none
        now = testnet.heights(ALL)
        assert all(now[i] <= cut[i] + 1 for i in ALL), f"a half without quorum decided: {cut} -> {now}"
    finally:
        testnet.heal()
    testnet.wait_progress(ALL, beyond=max(now.values()) + 2, timeout_s=90)
    testnet.wait_converged()
    testnet.history.check()


def test_added_latency_and_loss(testnet):
    require_netns(testnet)
    reason = netem_unavailable_reason()
    if reason:
        pytest.skip(reason)
    before = max(testnet.heights(ALL).values())
    testnet.net.delay(0, delay_ms=80, loss_pct=5)
    try:
        testnet.wait_progress(ALL, beyond=before + 3, timeout_s=60)
    finally:
        testnet.net.unthrottle(0)  # removes the root qdisc, netem included
    testnet.history.check()


def test_graceful_restart_of_every_other_node_then_the_founder(testnet):
    """`mycelium down` then `up` on n2, n3 and the founder n0 in turn (n1 was killed and restarted
    above), the next one as soon as the last caught up."""
    for i in (2, 3, 0):
        others = [j for j in ALL if j != i]
        before = testnet.heights([i])[i]
        testnet.stop_gracefully(i)
        assert testnet.nodes[i].pid() is None
        testnet.restart(i)
        started = time.monotonic()
        top = max(testnet.heights(others).values())
        testnet.wait_progress([i], beyond=max(top, before), timeout_s=120)
        took = time.monotonic() - started
        if took > SLOW_REJOIN_S:
            # Known weakness (see the report of issue 9): a node without bootstrap addresses (the
            # founder) does not redial the members it knew; it waits for their redial backoff.
            warnings.warn(f"n{i} took {took:.0f} s to rejoin after a graceful restart", stacklevel=1)
    testnet.wait_converged()
    assert all(len(s["validators"]) == 4 for s in testnet.statuses().values())
    testnet.history.check()


SLOW_REJOIN_S = 20
