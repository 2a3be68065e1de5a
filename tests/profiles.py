"""One builder for the capability profiles tests need (each test overrides what matters to it)."""

from mycelium.roles.profile import GIB, CapabilityProfile, Reachability


def make_profile(**overrides) -> CapabilityProfile:
    """A plausible always-on board: 4 cores, 8 GiB, plugged in, reached directly. Override any field."""
    fields = dict(
        cores=4,
        ram_total_bytes=8 * GIB,
        ram_available_bytes=4 * GIB,
        disk_free_bytes=100 * GIB,
        arch="x86_64",
        battery_present=False,
        on_battery=False,
        uptime_s=86_400,
        load_1m_milli=300,
        reachability=Reachability.DIRECT,
    )
    fields.update(overrides)
    return CapabilityProfile(**fields)
