"""Server choice (pure), the join token, and K3s's generated config (golden files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, strategies as st

from mycelium.identity import NodeKey
from mycelium.roles.profile import Reachability
from mycelium.runtime.k3s.config import NodeFiles, NodePaths, install_files, k8s_node_name
from mycelium.runtime.k3s.plan import Datastore, K3sMode, plan_cluster
from mycelium.runtime.k3s.token import cluster_token, write_token_file
from mycelium.spores.primary import Member, PrimarySpore, ZERO_HASH
from tests.profiles import make_profile

GOLDEN = Path(__file__).parent / "golden" / "k3s"
NODES = [NodeKey.from_seed(bytes([i]) * 32).node_id for i in range(1, 12)]
NET = "ab" * 32
STABLE = make_profile().to_wire()
WIFI_LAPTOP = make_profile(battery_present=True, reachability=Reachability.RELAY).to_wire()


def primary(roles: dict[str, str], profiles: dict[str, dict] | None = None, params: dict | None = None) -> PrimarySpore:
    members = {n: Member(role, 500_000, {}, i, (profiles or {}).get(n, STABLE))
               for i, (n, role) in enumerate(roles.items())}
    return PrimarySpore(NET, 7, 0, ZERO_HASH, members, params=params or {})


def alive_all(p):
    return {n: True for n in p.members}


def test_one_server_on_sqlite_by_default_agents_on_the_rest_none_on_hyphae():
    p = primary({NODES[0]: "sclerotium", NODES[1]: "rhizomorph", NODES[2]: "hypha"})
    plan = plan_cluster(p, alive_all(p))
    assert plan.datastore is Datastore.SQLITE and plan.servers == (NODES[0],)
    assert [plan.of(n).mode for n in NODES[:3]] == [K3sMode.SERVER, K3sMode.AGENT, K3sMode.NONE]
    assert plan.server_url == f"https://{plan.of(NODES[0]).address}:6443"
    assert plan.of(NODES[9]).mode is K3sMode.NONE


def test_two_sclerotia_stay_on_one_sqlite_server_the_other_is_an_agent():
    p = primary({NODES[0]: "sclerotium", NODES[1]: "sclerotium"})
    plan = plan_cluster(p, alive_all(p))
    assert plan.datastore is Datastore.SQLITE and plan.servers == (NODES[0],)
    assert plan.of(NODES[1]).mode is K3sMode.AGENT


def test_etcd_only_with_three_stable_sclerotia():
    roles = {n: "sclerotium" for n in NODES[:4]}
    p = primary(roles, {NODES[1]: WIFI_LAPTOP})
    plan = plan_cluster(p, alive_all(p))
    assert plan.datastore is Datastore.ETCD and plan.servers == (NODES[0], NODES[2], NODES[3])
    assert plan.of(NODES[1]).mode is K3sMode.AGENT  # on battery / relayed: not an etcd member
    shaky = primary(roles, {NODES[1]: WIFI_LAPTOP, NODES[2]: WIFI_LAPTOP})
    assert plan_cluster(shaky, alive_all(shaky)).datastore is Datastore.SQLITE
    opted_out = primary(roles, params={"k3s_allow_etcd": False})
    assert plan_cluster(opted_out, alive_all(opted_out)).servers == (NODES[0],)


def test_a_dead_server_is_replaced_by_the_next_sclerotium():
    p = primary({NODES[0]: "sclerotium", NODES[1]: "sclerotium", NODES[2]: "rhizomorph"})
    plan = plan_cluster(p, {NODES[0]: False, NODES[1]: True, NODES[2]: True})
    assert plan.servers == (NODES[1],) and plan.of(NODES[0]).mode is K3sMode.NONE
    assert plan.server_url.endswith(f"{plan.of(NODES[1]).address}:6443")


@given(st.lists(st.sampled_from(["sclerotium", "rhizomorph", "hypha"]), min_size=1, max_size=10),
       st.lists(st.booleans(), min_size=10, max_size=10))
def test_plan_invariants(roles, alive):
    p = primary(dict(zip(NODES, roles)))
    live = dict(zip(NODES, alive))
    plan = plan_cluster(p, live)
    assert plan == plan_cluster(p, live)  # deterministic
    for n in plan.servers:
        assert p.members[n].role == "sclerotium" and live[n]
    assert len(plan.servers) in ((1, 3) if plan.datastore is Datastore.ETCD else (0, 1))
    if any(r == "sclerotium" and live[n] for n, r in zip(NODES, roles)):
        assert plan.servers, "a live sclerotium exists, so there is a server"
    for n, r in zip(NODES, roles):
        if r == "hypha" or not live[n]:
            assert plan.of(n).mode is K3sMode.NONE


def test_token_is_derived_per_network_and_kept_0600(tmp_path):
    secret = bytes(range(32))
    t = cluster_token(secret, NET)
    assert t == cluster_token(secret, NET) and t.startswith("myc1-") and len(t) == 69
    assert t != cluster_token(secret, "cd" * 32) and t != cluster_token(bytes(32), NET)
    assert secret.hex() not in t
    assert write_token_file(tmp_path / "token", t) and not write_token_file(tmp_path / "token", t)
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600


def _render(case: str):
    roles = {NODES[0]: "sclerotium", NODES[1]: "rhizomorph"} if case != "etcd" else {n: "sclerotium" for n in NODES[:3]}
    p = primary(roles)
    plan = plan_cluster(p, alive_all(p))
    node = {"server": NODES[0], "agent": NODES[1], "etcd": NODES[1]}[case]
    return NodeFiles.render(plan, node, p.members[node].role, NodePaths(Path("/var/lib/mycelium/k3s")))


@pytest.mark.parametrize("case", ["server", "agent", "etcd"])
def test_generated_config_matches_golden_file(case):
    files = _render(case)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("MYCELIUM_UPDATE_GOLDEN"):
        golden.write_text(files.config)
    assert files.config == golden.read_text(), f"regenerate with MYCELIUM_UPDATE_GOLDEN=1 if intended: {golden}"
    parsed = yaml.safe_load(files.config)
    assert "token" not in parsed, "the token must only be in the 0600 token file"
    if case != "agent":
        assert parsed["disable"] == ["traefik", "servicelb", "local-storage", "metrics-server"]
        assert parsed["flannel-backend"] == "none" and parsed["disable-network-policy"] is True
    assert parsed["node-ip"].startswith("10.99.") and parsed["node-name"] == k8s_node_name(NODES[0 if case == "server" else 1])
    cni = json.loads(files.cni)
    assert cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"].startswith("10.42.")


def test_hostile_values_cannot_inject_yaml_keys(tmp_path):
    files = _render("agent")
    assert yaml.safe_load(files.config)["data-dir"] == "/var/lib/mycelium/k3s/data"
    p = primary({NODES[0]: "sclerotium"})
    plan = plan_cluster(p, alive_all(p))
    evil = NodeFiles.render(plan, NODES[0], "sclerotium\ntoken: stolen", NodePaths(tmp_path / "x\ny: 1"))
    parsed = yaml.safe_load(evil.config)
    assert "token" not in parsed and "y" not in parsed


def test_install_writes_only_on_change(tmp_path):
    files = _render("server")
    paths = NodePaths(tmp_path / "k3s")
    assert install_files(files, paths) and not install_files(files, paths)
    assert paths.config.stat().st_mode & 0o777 == 0o600 and paths.cni_conf.exists()
