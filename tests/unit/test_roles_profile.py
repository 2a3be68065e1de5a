"""Capability profile: wire form, validation, the republish rule, and the psutil probe on this machine."""

from __future__ import annotations

import os
import platform
from dataclasses import replace
from types import SimpleNamespace

import psutil
import pytest

from mycelium.encoding import canonical, decode
from mycelium.roles import probe as probe_module
from mycelium.roles.probe import probe
from mycelium.roles.profile import (
    GIB,
    MIB,
    CapabilityProfile,
    ProfileError,
    Reachability,
    RepublishConfig,
    changed_enough,
)
from tests.profiles import make_profile


def profile(**kw) -> CapabilityProfile:
    return make_profile(**{"arch": "aarch64", "battery_present": True, "uptime_s": 3600, "load_1m_milli": 1250,
                           "reachability": Reachability.RELAY, **kw})


# --------------------------------------------------------------------------- wire form


def test_wire_round_trip_through_canonical_bytes():
    p = profile()
    assert CapabilityProfile.from_wire(decode(canonical(p.to_wire()))) == p
    assert p.to_wire()["load_m"] == 1250 and p.to_wire()["reach"] == "relay"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda w: w.update(v=2), "version 2 is not supported"),
        (lambda w: w.update(v=True), "version True is not supported"),
        (lambda w: w.pop("cores"), "lacks cores"),
        (lambda w: w.update(extra=1), "unknown fields 'extra'"),
        (lambda w: w.update(cores=0), r"cores = 0 is outside"),
        (lambda w: w.update(cores=True), "cores must be an integer"),
        (lambda w: w.update(ram=-1), "ram_total_bytes = -1"),
        (lambda w: w.update(load_m=1.5), "load_1m_milli must be an integer"),
        (lambda w: w.update(arch="x86 64; rm -rf"), "arch"),
        (lambda w: w.update(arch=""), "arch"),
        (lambda w: w.update(reach="satellite"), "reachability 'satellite'"),
        (lambda w: w.update(bat=False, on_bat=True), "without a battery cannot run on battery"),
        (lambda w: w.update(on_bat=1), "must be booleans"),
    ],
)
def test_from_wire_refuses_malformed_profiles(mutate, message):
    wire = profile().to_wire()
    mutate(wire)
    with pytest.raises(ProfileError, match=message):
        CapabilityProfile.from_wire(wire)


def test_from_wire_refuses_non_maps():
    with pytest.raises(ProfileError, match="must be a map"):
        CapabilityProfile.from_wire([1, 2])


# --------------------------------------------------------------------------- republish rule


def test_first_profile_is_always_published():
    assert changed_enough(None, profile())


def test_small_fluctuations_are_not_republished():
    old = profile()
    new = replace(
        old,
        ram_available_bytes=old.ram_available_bytes - 512 * MIB,  # 6% of 8 GiB
        disk_free_bytes=old.disk_free_bytes - 5 * GIB,  # 5%
        load_1m_milli=old.load_1m_milli + 1000,  # +0.25 per core on 4 cores
        uptime_s=old.uptime_s + 600,
    )
    assert not changed_enough(old, new)


@pytest.mark.parametrize(
    "change",
    [
        dict(on_battery=True),
        dict(reachability=Reachability.DIRECT),
        dict(cores=8),
        dict(ram_total_bytes=16 * GIB),
        dict(arch="x86_64"),
        dict(ram_available_bytes=3 * GIB),  # 1 GiB = 12.5% of total
        dict(disk_free_bytes=89 * GIB),  # 11%
        dict(load_1m_milli=3250),  # +0.5 per core
        dict(uptime_s=10),  # rebooted
    ],
)
def test_meaningful_changes_are_republished(change):
    old = profile()
    assert changed_enough(old, replace(old, **change))


def test_tiny_disk_needs_a_whole_gib_to_republish():
    old = profile(disk_free_bytes=2 * GIB)
    assert not changed_enough(old, replace(old, disk_free_bytes=2 * GIB - 600 * MIB))  # 30% but < 1 GiB
    assert changed_enough(old, replace(old, disk_free_bytes=1 * GIB))
    strict = RepublishConfig(disk_free_step_min_bytes=0)
    assert changed_enough(old, replace(old, disk_free_bytes=2 * GIB - 600 * MIB), strict)


# --------------------------------------------------------------------------- probe (this machine)


def test_probe_on_this_machine_gives_sane_fields(tmp_path):
    p = probe(tmp_path, "direct")
    assert p.cores == (psutil.cpu_count(logical=True) or 1) >= 1
    assert 64 * MIB < p.ram_total_bytes
    assert 0 <= p.ram_available_bytes <= p.ram_total_bytes
    assert 0 < p.disk_free_bytes <= psutil.disk_usage(str(tmp_path)).total
    assert p.arch and p.arch == p.arch.lower()
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert p.arch == "x86_64"
    assert 0 < p.uptime_s < 10 * 365 * 86400
    assert abs(p.load_1m_milli - os.getloadavg()[0] * 1000) < 2000
    assert p.reachability is Reachability.DIRECT
    assert not (p.on_battery and not p.battery_present)
    assert CapabilityProfile.from_wire(decode(canonical(p.to_wire()))) == p


def test_probe_measures_where_a_missing_state_dir_will_live(tmp_path):
    p = probe(tmp_path / "not" / "yet" / "created", Reachability.UNKNOWN)
    assert p.disk_free_bytes > 0
    assert not (tmp_path / "not").exists()  # probing creates nothing


def test_probe_refuses_an_unknown_reachability(tmp_path):
    with pytest.raises(ValueError):
        probe(tmp_path, "teleport")


@pytest.mark.parametrize(
    "sensor, expected",
    [
        (None, (False, False)),  # psutil has no sensors_battery on this platform
        (lambda: None, (False, False)),  # no battery
        (lambda: SimpleNamespace(percent=80, secsleft=100, power_plugged=True), (True, False)),
        (lambda: SimpleNamespace(percent=80, secsleft=100, power_plugged=False), (True, True)),
        (lambda: SimpleNamespace(percent=80, secsleft=100, power_plugged=None), (True, True)),
        (lambda: SimpleNamespace(percent=100, secsleft=100, power_plugged=None), (True, False)),
    ],
)
def test_battery_sensor_variants(monkeypatch, tmp_path, sensor, expected):
    if sensor is None:
        monkeypatch.delattr(psutil, "sensors_battery", raising=False)
    else:
        monkeypatch.setattr(psutil, "sensors_battery", sensor)
    p = probe(tmp_path, "relay")
    assert (p.battery_present, p.on_battery) == expected


def test_broken_battery_sensor_does_not_fail_the_probe(monkeypatch, tmp_path):
    def broken():
        raise OSError("no such file: /sys/class/power_supply/BAT0/status")

    monkeypatch.setattr(psutil, "sensors_battery", broken)
    assert probe(tmp_path, "relay").battery_present is False


def test_missing_load_average_reports_idle(monkeypatch, tmp_path):
    def missing():
        raise OSError("no loadavg")

    monkeypatch.setattr(psutil, "getloadavg", missing)
    monkeypatch.setattr(os, "getloadavg", missing)
    assert probe(tmp_path, "relay").load_1m_milli == 0


def test_arch_spellings_are_normalised(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "AMD64")
    assert probe_module._arch() == "x86_64"
    monkeypatch.setattr(platform, "machine", lambda: "")
    assert probe_module._arch() == "unknown"
