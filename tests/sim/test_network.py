"""The network model: latency distributions, loss, duplication, reordering, partitions, slow nodes."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.sim.network import (
    FixedLatency,
    LogNormalLatency,
    Network,
    NetworkConfig,
    SimConfigError,
    UniformLatency,
    latency_from_json,
)
from mycelium.sim.world import World
from tests.sim.cores import Sender

N_MESSAGES = 400


def pair(network: NetworkConfig, seed: int = 1) -> World:
    """Node 0 sends N_MESSAGES numbered messages to node 1 at boot."""
    w = World(["a", "b"], lambda nid, p: Sender(nid, "b" if nid == "a" else None, N_MESSAGES if nid == "a" else 0),
              rng=Random(seed), network=network, boot_jitter_s=0.0)
    w.start()
    w.run_until(100.0)
    return w


def received(w: World) -> list[int]:
    return [m for _, m, _ in w.nodes[1].core.received]


@given(seed=st.integers(0, 2**32), model=st.sampled_from([
    FixedLatency(0.05), UniformLatency(0.01, 0.2), LogNormalLatency(0.05, 0.5, 2.0)]))
@settings(max_examples=100, deadline=None)
def test_latency_samples_are_bounded_and_reproducible(seed, model):
    a = [model.sample(Random(seed)) for _ in range(5)]
    assert a == [model.sample(Random(seed)) for _ in range(5)]
    hi = {FixedLatency: 0.05, UniformLatency: 0.2, LogNormalLatency: 2.0}[type(model)]
    assert all(0 <= d <= hi for d in a)
    assert latency_from_json(model.to_json()) == model


def test_latency_json_errors_name_the_problem():
    with pytest.raises(SimConfigError, match="unknown latency kind"):
        latency_from_json({"kind": "warp"})
    with pytest.raises(SimConfigError, match=">= 0"):
        latency_from_json({"kind": "fixed", "delay_s": -1})


def test_fixed_latency_keeps_order_and_nothing_is_lost():
    w = pair(NetworkConfig(latency=FixedLatency(0.05)))
    assert received(w) == list(range(N_MESSAGES))


def test_loss_drops_about_the_configured_share():
    w = pair(NetworkConfig(latency=FixedLatency(0.05), loss=0.25))
    got = received(w)
    assert w.stats.dropped_loss == N_MESSAGES - len(got)
    assert 0.15 * N_MESSAGES < w.stats.dropped_loss < 0.35 * N_MESSAGES
    assert got == sorted(got)  # loss alone does not reorder


def test_duplication_delivers_some_messages_twice():
    w = pair(NetworkConfig(latency=FixedLatency(0.05), duplicate=0.2))
    got = received(w)
    assert len(got) == N_MESSAGES + w.stats.duplicated
    assert 0.1 * N_MESSAGES < w.stats.duplicated < 0.3 * N_MESSAGES
    assert set(got) == set(range(N_MESSAGES))


def test_reordering_lets_later_messages_overtake():
    w = pair(NetworkConfig(latency=FixedLatency(0.05), reorder=0.3, reorder_delay_s=1.0))
    got = received(w)
    assert sorted(got) == list(range(N_MESSAGES)) and got != sorted(got)


def test_uniform_latency_reorders_by_itself():
    got = received(pair(NetworkConfig(latency=UniformLatency(0.01, 0.5))))
    assert sorted(got) == list(range(N_MESSAGES)) and got != sorted(got)


def test_partition_halves_bridge_and_isolated_node():
    net = Network(NetworkConfig(), 5)
    net.partition([[0, 1, 2], [2, 3]])  # 2 bridges the halves, 4 is in no group: isolated
    assert net.connected(0, 1) and net.connected(0, 2) and net.connected(2, 3)
    assert not net.connected(0, 3) and not net.connected(1, 3)
    assert not any(net.connected(4, i) for i in range(4))
    net.heal()
    assert all(net.connected(i, j) for i in range(5) for j in range(5))
    with pytest.raises(SimConfigError, match="node 9"):
        net.partition([[9]])


def test_partition_drops_at_send_time():
    w = World(["a", "b"], lambda nid, p: Sender(nid, "b" if nid == "a" else None, 10 if nid == "a" else 0),
              rng=Random(1), network=NetworkConfig(latency=FixedLatency(0.05)), boot_jitter_s=0.0)
    w.net.partition([[0], [1]])
    w.start()
    w.run_until(1.0)
    assert received(w) == [] and w.stats.dropped_partition == 10


def test_slow_node_multiplies_latency():
    w = World(["a", "b"], lambda nid, p: Sender(nid, "b" if nid == "a" else None, 1 if nid == "a" else 0),
              rng=Random(1), network=NetworkConfig(latency=FixedLatency(0.05)), boot_jitter_s=0.0)
    w.net.slow[1] = 20.0
    w.start()
    w.run_until(5.0)
    assert w.nodes[1].core.received[0][2] == pytest.approx(1.0)
