"""What a Raspberry Pi gets from PyPI: every dependency of Mycelium resolves for aarch64 (Python 3.11,
glibc 2.36: Raspberry Pi OS / Debian bookworm), and exactly these come as source only.

`fastecdsa==2.3.2` (pinned by libp2p 0.8.1) has no Linux wheel for any CPU, so install.sh needs a C compiler,
Python headers and GMP everywhere, x86_64 included; the other two are pure Python and build with pip alone.

Needs PyPI (https://pypi.org/simple); skips, saying so, only when it cannot be reached at all. One pip
resolution for aarch64 (seconds on a quiet machine), plus one index page per source-only package.
The armv7 (32-bit) check is slower (one index page per dependency) and runs with --slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration import wheel_coverage as wc

REPO = Path(__file__).resolve().parents[2]
# requirement -> needs a C compiler to build (fastecdsa's version is libp2p 0.8.1's pin). install.sh's fallback (test_install_build_fallback.py) handles any
# such package; this list is what the README states, so a change here is a change to document.
# zfec (storage's erasure code) at its newest release has no wheel for CPython 3.11 on Linux either:
# it needs a C compiler (no GMP), which the fastecdsa build needs anyway.
SOURCE_ONLY = {"fastecdsa==2.3.2": True, "python-baseconv": False, "varint": False, "zfec": True}
NAMES = {r.split("==")[0]: c for r, c in SOURCE_ONLY.items()}
# At the versions arm64 resolves to, these have no armv7l wheel on PyPI (Raspberry Pi OS 32-bit would
# compile all of them; its default extra index piwheels.org may have some, but is unreachable from here).
ARMV7_SOURCE_ONLY = {"aioquic", "cbor2", "cffi", "coincurve", "fastecdsa", "lru-dict", "miniupnpc", "mmh3", "msgpack",
                     "psutil", "pycryptodome", "pylsqpack", "pynacl", "python-baseconv", "pyyaml", "varint"}


@pytest.fixture(scope="module")
def pypi():
    why = wc.pypi_reachable()
    if why:
        pytest.skip(f"needs PyPI to check which wheels exist: {why}")


@pytest.fixture(scope="module")
def arm64(pypi, tmp_path_factory):
    reqs = wc.mycelium_requirements(REPO / "pyproject.toml")
    # The known source-only packages get placeholders up front (saves one pip round each); any other
    # package without an aarch64 wheel is still discovered and fails the assertion below.
    return wc.coverage("aarch64", reqs, tmp_path_factory.mktemp("arm64"), known_source_only=tuple(SOURCE_ONLY))


def test_every_dependency_resolves_for_aarch64_and_only_these_are_built(arm64):
    print("\n" + wc.describe(arm64))
    assert set(arm64.source_only) == set(NAMES), wc.describe(arm64)
    assert {n for n, compiled in NAMES.items() if compiled} == arm64.needs_compiler(), wc.describe(arm64)
    assert "libp2p" in arm64.wheels and "cryptography" in arm64.wheels  # the resolution really ran
    assert arm64.source_only["fastecdsa"].version == "2.3.2"


@pytest.mark.parametrize("machine", ["aarch64", "x86_64"])
def test_the_source_only_packages_really_have_no_wheel(arm64, machine):
    # The placeholders above were given, not discovered: check PyPI has no wheel for them, on arm64 and
    # on x86_64 too (so install.sh's build-tools check matters on a laptop as well).
    for name, s in arm64.source_only.items():
        assert wc.wheels_for(name, s.version, machine) == [], f"{name}=={s.version} has a {machine} wheel now"


@pytest.mark.slow
def test_armv7_needs_many_more_builds(arm64, tmp_path):
    pins = {**arm64.wheels, **{n: s.version for n, s in arm64.source_only.items()}}
    pins.pop("mycelium", None)
    missing = {str(wc.canonicalize_name(n)) for n in wc.missing_wheels(pins, "armv7l")}
    (tmp_path / "armv7.json").write_text(json.dumps(sorted(missing)))
    print(f"\narmv7l: {len(missing)} of {len(pins)} dependencies have no wheel on PyPI: {', '.join(sorted(missing))}")
    assert missing == ARMV7_SOURCE_ONLY
