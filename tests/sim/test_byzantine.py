"""Byzantine wrappers rewrite a core's effects generically, with protocol hooks where needed."""

from __future__ import annotations

from random import Random

import pytest

from mycelium.shell.effects import Broadcast, Send, SetTimer
from mycelium.sim.byzantine import ByzantineHooks, available_behaviours, make_wrapper
from mycelium.sim.network import SimConfigError
from tests.sim.cores import Recorder

PEERS = [f"p{i}" for i in range(10)]
HOOKS = ByzantineHooks(mutate=lambda author, m, rng: ("lie", author, m))


def wrapped(behaviour, options=None, hooks=HOOKS, effects=None):
    inner = Recorder("me", {"kept": 1})
    inner.script = [effects if effects is not None else [Broadcast("b"), Send("p1", "s"), SetTimer("t", 1.0)]]
    core = make_wrapper(behaviour, "me", PEERS, Random(5), hooks, options or {})(inner)
    return core, inner


def test_wrappers_pass_inputs_through_and_keep_persistence():
    core, inner = wrapped("withhold")
    assert core.on_message("p1", "hello", 2.0) == []
    assert inner.received == [("p1", "hello", 2.0)]
    assert core.persist() == {"kept": 1} and core.inner_core is inner


def test_withhold_drops_listed_types_only_and_keeps_timers():
    core, _ = wrapped("withhold")
    assert core.on_tick(0.0) == [SetTimer("t", 1.0)]
    core, _ = wrapped("withhold", {"types": ["int"]}, effects=[Send("p1", 1), Send("p1", "x")])
    assert core.on_tick(0.0) == [Send("p1", "x")]


def test_withhold_uses_the_protocol_classifier():
    hooks = ByzantineHooks(classify=lambda m: "Reveal" if m.startswith("R") else "Commit")
    core, _ = wrapped("withhold", {"types": ["Reveal"]}, hooks, [Send("p1", "R1"), Send("p1", "C1")])
    assert core.on_tick(0.0) == [Send("p1", "C1")]


def test_equivocate_sends_two_versions_to_different_peers():
    core, _ = wrapped("equivocate", effects=[Broadcast("b")])
    out = core.on_tick(0.0)
    assert sorted(e.to for e in out) == sorted(PEERS)  # every peer gets exactly one version
    assert {e.message for e in out} == {"b", ("lie", "me", "b")}


def test_lie_mutates_every_message_at_probability_one():
    core, _ = wrapped("lie", {"probability": 1.0}, effects=[Broadcast("b"), Send("p2", "s")])
    assert core.on_tick(0.0) == [Broadcast(("lie", "me", "b")), Send("p2", ("lie", "me", "s"))]


def test_copy_replaces_own_output_with_an_observed_message_of_the_same_type():
    core, _ = wrapped("copy", effects=[Send("p1", "mine"), Send("p1", 7)])
    core.on_message("p3", "theirs", 0.0)
    assert core.on_tick(1.0) == [Send("p1", "theirs"), Send("p1", 7)]  # no int seen: sent as is
    adopting = ByzantineHooks(adopt=lambda author, own, seen, rng: f"{seen} signed by {author}")
    core, _ = wrapped("copy", hooks=adopting, effects=[Broadcast("mine")])
    core.on_message("p3", "theirs", 0.0)
    assert core.on_tick(1.0) == [Broadcast("theirs signed by me")]


def test_garbage_replaces_messages_with_random_bytes_reproducibly():
    a, _ = wrapped("garbage", {"probability": 1.0, "max_bytes": 16})
    b, _ = wrapped("garbage", {"probability": 1.0, "max_bytes": 16})
    out = a.on_tick(0.0)
    assert out == b.on_tick(0.0)
    assert all(isinstance(e.message, bytes) and len(e.message) <= 16 for e in out if not isinstance(e, SetTimer))


def test_unknown_behaviour_option_or_missing_hook_is_rejected():
    with pytest.raises(SimConfigError, match="unknown Byzantine behaviour"):
        make_wrapper("sulk", "me", PEERS, Random(1), HOOKS, {})
    with pytest.raises(SimConfigError, match="takes options"):
        make_wrapper("copy", "me", PEERS, Random(1), HOOKS, {"probability": 1})
    with pytest.raises(SimConfigError, match="mutate hook"):
        make_wrapper("equivocate", "me", PEERS, Random(1), ByzantineHooks(), {})
    assert available_behaviours(ByzantineHooks()) == ["copy", "withhold", "garbage"]


def test_types_limit_any_behaviour_to_the_listed_messages():
    hooks = ByzantineHooks(mutate=HOOKS.mutate, classify=lambda m: "Proposal" if m.startswith("P") else "Vote")
    core, _ = wrapped("equivocate", {"types": ["Proposal"]}, hooks, [Broadcast("P1"), Broadcast("V1")])
    out = core.on_tick(0.0)
    assert out[-1] == Broadcast("V1")  # the vote went out as the honest core sent it
    assert sorted(e.to for e in out[:-1]) == sorted(PEERS) and {e.message for e in out[:-1]} == {"P1", ("lie", "me", "P1")}


def test_garbage_with_keep_sends_the_real_message_then_protocol_junk():
    hooks = ByzantineHooks(junk=lambda author, m, rng: ("junk", author, m))
    core, _ = wrapped("garbage", {"probability": 1.0, "keep": True}, hooks, [Send("p1", "s"), Broadcast("b")])
    assert core.on_tick(0.0) == [Send("p1", "s"), Send("p1", ("junk", "me", "s")), Broadcast("b"),
                                 Broadcast(("junk", "me", "b"))]
    core, _ = wrapped("garbage", {"probability": 1.0}, effects=[Send("p1", "s")])
    [only] = core.on_tick(0.0)
    assert only.to == "p1" and isinstance(only.message, bytes)  # no hook: random bytes instead
