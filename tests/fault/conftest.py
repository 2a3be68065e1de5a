"""One shared 4-validator testnet for the whole tests/fault package (forming it costs ~20-30 s), in network namespaces where
permitted, on loopback otherwise; tests that need namespaces skip with the reason on loopback.
Every test leaves the testnet healed and running, and checks the history (no fork, nothing lost)."""

from __future__ import annotations

import pytest

from tests.testnet.cluster import Testnet
from tests.testnet.faults import clock_skew_env
from tests.testnet.netns import netns_unavailable_reason

SKEWED_NODE = 3  # runs with its wall clock ahead, within the Latent tolerance (30 s)
SKEW_S = 8.0


@pytest.fixture(scope="package")
def testnet(tmp_path_factory):
    reason = netns_unavailable_reason()
    skew = clock_skew_env(SKEW_S, tmp_path_factory.mktemp("skew"))
    with Testnet(4, netns=reason is None, spare=2, node_env={SKEWED_NODE: skew}) as net:
        net.netns_reason = reason
        net.form(validators=4, timeout_s=150)
        yield net


def require_netns(net: Testnet) -> None:
    if net.net is None:
        pytest.skip(f"needs network namespaces: {net.netns_reason}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that form a testnet of their own run first in tests/fault, before the package's shared
    testnet exists: two testnets at once are eight daemons on a two-core box."""
    own = [item for item in items if "slashing_testnet" in getattr(item, "fixturenames", ())]
    if not own:
        return
    first = next(k for k, item in enumerate(items) if item.nodeid.startswith("tests/fault/"))
    rest = [item for item in items if item not in own]
    items[:] = rest[:first] + own + rest[first:]
