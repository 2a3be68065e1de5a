"""The overlay's pure core: address plan from the Primary's members, the desired peer set."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from mycelium.identity import NodeKey
from mycelium.overlay.addressing import OverlayConfig, assign_addresses, preferred_slot
from mycelium.overlay.keys import OverlayKey, OverlayKeyError
from mycelium.overlay.peers import Announcement, desired_overlay, parse_announcement, OverlayEntryError

NODES = [NodeKey.from_seed(bytes([i]) * 32).node_id for i in range(1, 40)]
SMALL = OverlayConfig(cluster_cidr="10.42.0.0/16", pod_prefix_len=19)  # 8 slots: collisions are common


def members(nodes, start=0):
    return [(n, start + i) for i, n in enumerate(nodes)]


@given(st.lists(st.sampled_from(NODES), unique=True, max_size=20), st.randoms())
def test_plan_is_a_function_of_the_member_set_not_its_order(nodes, rnd):
    shuffled = members(nodes)
    rnd.shuffle(shuffled)
    assert assign_addresses(shuffled, SMALL) == assign_addresses(members(nodes), SMALL)


@given(st.lists(st.sampled_from(NODES), unique=True, max_size=20))
def test_addresses_and_pod_blocks_are_unique_and_inside_their_cidrs(nodes):
    plan = assign_addresses(members(nodes), SMALL)
    placed = list(plan.by_node.values())
    assert len(placed) == min(len(nodes), SMALL.slots)
    assert len(plan.unplaced) == max(0, len(nodes) - SMALL.slots)  # the bound is reached and reported
    assert len({a.address for a in placed}) == len(placed) == len({a.pod_cidr for a in placed})
    for a in placed:
        assert ipaddress.ip_address(a.address) in ipaddress.ip_network(SMALL.overlay_cidr)
        assert ipaddress.ip_network(a.pod_cidr).subnet_of(ipaddress.ip_network(SMALL.cluster_cidr))


@given(st.lists(st.sampled_from(NODES), unique=True, min_size=1, max_size=7), st.sampled_from(NODES))
def test_a_joiner_never_moves_an_earlier_member(nodes, joiner):
    if joiner in nodes:
        return
    before = assign_addresses(members(nodes), SMALL)
    after = assign_addresses(members(nodes) + [(joiner, 1000)], SMALL)
    for node in nodes:
        assert after.get(node) == before.get(node)


def test_collision_goes_to_the_next_free_slot_in_join_order():
    slots = SMALL.slots
    by_slot: dict[int, list[str]] = {}
    for n in NODES:
        by_slot.setdefault(preferred_slot(n, slots), []).append(n)
    first, second = next(v for v in by_slot.values() if len(v) >= 2)[:2]
    plan = assign_addresses([(second, 5), (first, 3)], SMALL)
    assert plan.get(first).slot == preferred_slot(first, slots)  # joined earlier: keeps its slot
    assert plan.get(second).slot == (preferred_slot(first, slots) + 1) % slots
    swapped = assign_addresses([(second, 3), (first, 5)], SMALL)
    assert swapped.get(second).slot == preferred_slot(second, slots)


def test_default_plan_matches_k3s_defaults():
    cfg = OverlayConfig()
    assert cfg.slots == 256
    assert cfg.address_of_slot(0) == "10.99.0.1" and cfg.pod_cidr_of_slot(0) == "10.42.0.0/24"
    assert cfg.pod_cidr_of_slot(255) == "10.42.255.0/24"


def test_overlapping_cidrs_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        OverlayConfig(overlay_cidr="10.42.0.0/16")


def ann(i: int, endpoint: str = "") -> dict:
    return Announcement(bytes([i]) * 32, endpoint).to_body()


def test_desired_peers_are_every_other_member_with_a_valid_entry():
    nodes = NODES[:4]
    plan = assign_addresses(members(nodes))
    bodies = {nodes[0]: ann(1, "10.0.0.1:51871"), nodes[1]: ann(2, "10.0.0.2:51871"),
              nodes[2]: {"pub": b"short", "endpoint": ""}}
    d = desired_overlay(nodes[0], plan, bodies)
    assert d.address == plan.get(nodes[0]).address and d.pod_cidr == plan.get(nodes[0]).pod_cidr
    assert [p.node for p in d.peers] == [nodes[1]]
    peer = d.peers[0]
    assert peer.allowed_ips == (f"{plan.get(nodes[1]).address}/32", plan.get(nodes[1]).pod_cidr)
    assert peer.endpoint == "10.0.0.2:51871" and d.routes() == (plan.get(nodes[1]).pod_cidr,)
    assert dict(d.skipped) == {nodes[2]: "overlay public key must be 32 bytes", nodes[3]: "no overlay entry yet"}


def test_a_node_that_left_the_primary_is_no_peer_even_with_a_latent_entry():
    nodes = NODES[:3]
    bodies = {n: ann(i + 1) for i, n in enumerate(nodes)}
    plan = assign_addresses(members(nodes[:2]))  # nodes[2] left
    d = desired_overlay(nodes[0], plan, bodies)
    assert [p.node for p in d.peers] == [nodes[1]]
    assert desired_overlay(nodes[2], plan, bodies) is None  # not a member: no overlay at all


def test_two_members_with_one_key_get_no_peer():
    nodes = NODES[:3]
    plan = assign_addresses(members(nodes))
    d = desired_overlay(nodes[0], plan, {nodes[1]: ann(9), nodes[2]: ann(9)})
    assert d.peers == () and all("shared" in why for _, why in d.skipped)


@pytest.mark.parametrize("body", [
    None, {}, {"pub": bytes(32)}, {"pub": bytes(32), "endpoint": "nohost"}, {"pub": bytes(32), "endpoint": "1.2.3.4:0"},
    {"pub": bytes(32), "endpoint": "x" * 65}, {"pub": "a" * 32, "endpoint": ""}, {"pub": bytes(32), "endpoint": "h:1", "x": 1},
])
def test_malformed_announcements_are_refused(body):
    with pytest.raises(OverlayEntryError):
        parse_announcement(body)


def test_ipv6_endpoint_is_accepted():
    assert parse_announcement({"pub": bytes(32), "endpoint": "[fd00::1]:51871"}).endpoint == "[fd00::1]:51871"


def test_overlay_key_is_created_0600_and_reloaded(tmp_path):
    key = OverlayKey.load_or_create(tmp_path)
    assert (tmp_path / "overlay.key").stat().st_mode & 0o777 == 0o600
    assert OverlayKey.load_or_create(tmp_path) == key and len(key.public) == 32
    (tmp_path / "overlay.key").chmod(0o644)
    with pytest.raises(OverlayKeyError, match="chmod 600"):
        OverlayKey.load_or_create(tmp_path)


@given(st.lists(st.sampled_from(NODES), unique=True, min_size=1, max_size=12),
       st.lists(st.sampled_from(NODES), unique=True, max_size=12), st.data())
def test_peers_are_exactly_the_other_members_with_an_entry(members_, announced, data):
    me = data.draw(st.sampled_from(members_))
    plan = assign_addresses(members(members_), SMALL)
    bodies = {n: ann(NODES.index(n) + 1) for n in announced}
    d = desired_overlay(me, plan, bodies, SMALL)
    if me not in plan.by_node:
        assert d is None
        return
    expected = {n for n in plan.by_node if n != me and n in bodies}
    assert {p.node for p in d.peers} == expected  # non-members (left, or never admitted) are never peers
    assert {n for n, _ in d.skipped} == set(plan.by_node) - expected - {me}
    for p in d.peers:
        assert p.allowed_ips == (f"{plan.get(p.node).address}/32", plan.get(p.node).pod_cidr)
