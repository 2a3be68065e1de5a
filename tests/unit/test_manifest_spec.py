"""Quantities normalise to integers; the wire form is strict; the shipped examples validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical, decode
from mycelium.runtime.manifest import load_deployable
from mycelium.runtime.spec import (
    RestartPolicy, ServiceSpec, SpecError, parse_cpu, parse_duration_ms, parse_memory,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("text,millicores", [("500m", 500), ("2", 2000), ("0.25", 250), (1, 1000),
                                             (0.5, 500), ("0", 0)])
def test_cpu(text, millicores):
    assert parse_cpu(text) == millicores


@pytest.mark.parametrize("text,size", [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6),
                                       ("1k", 1000), (4096, 4096), ("12", 12)])
def test_memory(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text,ms", [("500ms", 500), ("10s", 10_000), ("1.5s", 1500), ("2m", 120_000),
                                     ("1h", 3_600_000), (3, 3000)])
def test_duration(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["5x", "0.0001", True, "-1", "1.5m"])
def test_bad_cpu(bad):
    with pytest.raises(SpecError):
        parse_cpu(bad)


@pytest.mark.parametrize("bad", ["1.5Gi", "256MB", True, -1, 2**64, "1e3"])
def test_bad_memory(bad):
    with pytest.raises(SpecError):
        parse_memory(bad)


def test_backoff_grows_and_caps():
    policy = RestartPolicy(backoff_initial_ms=100, backoff_max_ms=1000, backoff_factor=2)
    assert [policy.backoff_ms(n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert policy.backoff_ms(10**6) == 1000


@pytest.mark.parametrize("name", ["static-web.yaml", "echo.yaml"])
def test_examples_validate(name):
    spec = load_deployable(EXAMPLES / name)
    assert spec.command and spec.ports and spec.health is not None
    assert ServiceSpec.from_wire(decode(canonical(spec.to_wire()))) == spec


def test_echo_example_carries_its_server_script():
    spec = load_deployable(EXAMPLES / "echo.yaml")
    assert spec.replicas == 2
    assert [f.path for f in spec.files] == ["echo_server.py"]
    assert "ThreadingHTTPServer" in spec.files[0].content


GOOD_WIRE = ServiceSpec(name="web", command=("true",)).to_wire()


def _mutations():
    yield {**GOOD_WIRE, "v": 99}
    yield {**GOOD_WIRE, "replicas": -1}
    yield {**GOOD_WIRE, "replicas": True}
    yield {**GOOD_WIRE, "replicas": "some"}
    yield {**GOOD_WIRE, "command": "true"}
    yield {**GOOD_WIRE, "resources": {"cpu_millicores": 1.5, "memory_bytes": 1}}
    yield {**GOOD_WIRE, "selector": {"roles": ["hypha"], "labels": {}, "nodes": []}}
    yield {k: v for k, v in GOOD_WIRE.items() if k != "ports"}
    yield [GOOD_WIRE]
    yield {**GOOD_WIRE, "restart": {**GOOD_WIRE["restart"], "policy": "maybe"}}
    yield {**GOOD_WIRE, "name": "../etc"}
    yield {**GOOD_WIRE, "ports": [{"name": "http", "port": 70000}]}
    yield {**GOOD_WIRE, "files": [{"path": "../x", "content": "", "mode": 420}]}


@pytest.mark.parametrize("wire", list(_mutations()))
def test_from_wire_rejects_malformed_specs_with_spec_error(wire):
    with pytest.raises(SpecError):
        ServiceSpec.from_wire(wire)


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4),
                    max_leaves=20))
def test_from_wire_never_crashes_on_garbage(garbage):
    try:
        ServiceSpec.from_wire(garbage)
    except SpecError:
        pass  # the one allowed outcome for garbage besides a valid spec
