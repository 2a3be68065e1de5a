"""The world's event loop: ordering, timers, boot, crash/restart, clocks, outputs, codec."""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

import pytest

from mycelium.shell.effects import Broadcast, Send, SetTimer
from mycelium.sim.network import FixedLatency, NetworkConfig, SimConfigError
from mycelium.sim.world import World
from tests.sim.cores import Recorder, Sender, Ticker

FIXED = NetworkConfig(latency=FixedLatency(0.1))


def world_of(make, n=3, **kw):
    kw.setdefault("network", FIXED)
    kw.setdefault("boot_jitter_s", 0.0)
    return World([f"n{i}" for i in range(n)], make, rng=Random(1), **kw)


def test_same_instant_events_run_in_scheduling_order():
    w = world_of(lambda nid, p: Sender(nid, "n1" if nid == "n0" else None, 5 if nid == "n0" else 0), n=2)
    w.start()
    w.run_until(1.0)
    assert [m for _, m, _ in w.nodes[1].core.received] == [0, 1, 2, 3, 4]
    assert w.nodes[1].core.received[0][2] == pytest.approx(0.1)


def test_distinct_ids_required():
    with pytest.raises(SimConfigError, match="distinct"):
        World(["a", "a"], Recorder, rng=Random(1))


def test_broadcast_reaches_every_other_node_once():
    w = world_of(lambda nid, p: Sender(nid, None, 1 if nid == "n0" else 0), n=4)
    w.start()
    w.run_until(1.0)
    assert [len(n.core.received) for n in w.nodes] == [0, 1, 1, 1]
    assert w.stats.sent == 3 and w.stats.delivered == 3


def test_send_to_unknown_peer_is_counted_not_crashed():
    w = world_of(lambda nid, p: Sender(nid, "nobody", 2), n=1)
    w.start()
    w.run_until(1.0)
    assert w.stats.dropped_unknown_peer == 2


def test_timers_fire_on_local_time_and_replace_by_name():
    cores = {}

    def make(nid, p):
        cores[nid] = Recorder(nid)
        cores[nid].script = [[SetTimer("a", 5.0), SetTimer("a", 3.0), SetTimer("b", 4.0)]]
        return cores[nid]

    w = world_of(make, n=1)
    w.start()
    w.run_until(10.0)
    assert cores["n0"].ticks == [0.0, 3.0, 4.0]  # boot, then "a" at 3 (replaced 5), then "b"
    assert w.now == 10.0


def test_clock_jump_shifts_now_and_reschedules_timers():
    w = world_of(lambda nid, p: Ticker(nid, 10.0), n=1)
    w.start()
    w.run_until(15.0)  # ticks at 0 and 10; next due at local 20
    w.jump_clock(0, 3.0)  # local = virtual + 3: the local-20 timer is due at virtual 17
    w.run_until(16.9)
    assert w.nodes[0].core.ticks == [0.0, 10.0]
    w.run_until(17.5)
    assert w.nodes[0].core.ticks == [0.0, 10.0, 20.0]
    assert w.local_now(0) == 20.5
    w.jump_clock(0, 100.0)  # past every deadline: the pending timer fires at once
    w.run_until(17.5)
    assert w.nodes[0].core.ticks == [0.0, 10.0, 20.0, 120.5]


def test_clock_origin_offsets_every_node():
    w = world_of(lambda nid, p: Ticker(nid), n=2, clock_origin_s=1000.0)
    w.start()
    w.run_until(0.0)
    assert [n.core.ticks for n in w.nodes] == [[1000.0], [1000.0]]


def test_crash_drops_messages_and_timers_restart_restores_persisted_state():
    def make(nid, persisted):
        core = Recorder(nid, persisted)
        core.script = [[SetTimer("t", 5.0)]]
        return core

    w = world_of(make, n=2)
    w.start()
    w.run_until(1.0)
    w.nodes[1].core.state = 42
    w.crash(1)
    assert not w.nodes[1].up and w.stats.crashes == 1
    w.send(0, 1, "lost")
    w.run_until(6.0)  # the message and the timer at 5 die with the node
    assert w.stats.dropped_down == 1
    w.restart(1)
    w.run_until(7.0)
    core = w.nodes[1].core
    assert core.persisted_in == 42 and core.ticks[0] == 6.0  # rebuilt from persisted state, booted again
    w.crash(1)
    w.restart(1, wipe=True)
    assert w.nodes[1].core.persisted_in is None


def test_pending_boot_of_an_earlier_life_is_ignored():
    w = world_of(lambda nid, p: Ticker(nid), n=1, boot_jitter_s=1.0)
    w.start()
    w.crash(0)
    w.restart(0)
    w.run_until(5.0)
    assert w.stats.boots == 1


def test_protocol_outputs_are_counted_and_handed_over():
    @dataclass(frozen=True)
    class Decided:
        value: int

    seen = []
    w = world_of(lambda nid, p: Recorder(nid), n=1, on_output=lambda w, node, e: seen.append((node.id, e)))
    w.start()
    w.nodes[0].core.script = [[Decided(7)]]
    w.run_until(1.0)
    assert seen == [("n0", Decided(7))] and w.stats.outputs == {"Decided": 1}


def test_outputs_by_type_go_to_their_handler_and_the_rest_to_on_output():
    @dataclass(frozen=True)
    class Decided:
        value: int

    @dataclass(frozen=True)
    class Other:
        pass

    decided, rest = [], []
    w = world_of(lambda nid, p: Recorder(nid), n=1, outputs={Decided: lambda w, node, e: decided.append(e.value)},
                 on_output=lambda w, node, e: rest.append(e))
    w.start()
    w.nodes[0].core.script = [[Decided(1), Other(), Decided(2)]]
    w.run_until(1.0)
    assert decided == [1, 2] and rest == [Other()] and w.stats.outputs == {"Decided": 2, "Other": 1}


def test_a_test_can_tap_the_wire_and_deliver_held_messages_in_its_own_order():
    held = NetworkConfig(latency=FixedLatency(1e9))  # nothing arrives on its own
    tapped = []
    w = world_of(lambda nid, p: Sender(nid, "n1" if nid == "n0" else None, 3 if nid == "n0" else 0), n=2,
                 network=held, tap=lambda src, dst, m: tapped.append((src, dst, m)))
    w.start()
    w.run_until(1.0)
    assert tapped == [(0, 1, 0), (0, 1, 1), (0, 1, 2)] and w.in_flight() == 3 and w.nodes[1].core.received == []
    w.deliver_one(2)
    w.deliver_one(0, drop=True)
    assert [m for _, m, _ in w.nodes[1].core.received] == [2] and w.in_flight() == 1
    assert w.stats.dropped_loss == 1
    w.apply(1, [Send("n0", "hi")])  # effects a test got from a core directly, through the same wire
    assert w.in_flight() == 2


class IntCodec:
    def encode(self, message):
        return str(message).encode()

    def decode(self, data):
        return int(data.decode())  # ValueError for junk


def test_codec_encodes_on_send_and_counts_undecodable_bytes():
    w = world_of(lambda nid, p: Recorder(nid), n=2, codec=IntCodec())
    w.start()
    w.nodes[0].core.script = [[Send("n1", 5), Send("n1", b"junk"), Broadcast(6)]]
    w.run_until(1.0)
    assert [m for _, m, _ in w.nodes[1].core.received] == [5, 6]
    assert w.stats.undecodable == 1


def test_scheduled_calls_run_at_their_time_and_can_be_cancelled():
    w = world_of(lambda nid, p: Recorder(nid), n=1)
    ran = []
    w.schedule(2.0, lambda w_: ran.append(w_.now))
    w.schedule(4.0, lambda w_: ran.append(w_.now))
    w.run_until(3.0)
    w.cancel_calls()
    w.run_until(5.0)
    assert ran == [2.0]


def test_safety_checkers_run_every_k_events():
    w = world_of(lambda nid, p: Ticker(nid, 1.0), n=1, check_every=5)
    calls = []
    w.checkers.append(lambda w_: calls.append(w_.stats.events))
    w.start()
    w.run_until(19.5)  # 20 events: boot + 19 timers
    assert calls == [5, 10, 15, 20]
