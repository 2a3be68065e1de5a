"""Buffer sizes for a replication stream, from the latency profile (pure).

Two figures per backup:

- the **window**: bytes sent but not yet acknowledged. To keep a path of round-trip time `rtt_s` and
  bandwidth `bandwidth_Bps` busy it must hold at least one bandwidth-delay product; we keep two
  (`window = max(min_window_bytes, 2 * bandwidth_Bps * rtt_s)`) so an ack's own delay never idles the link.
- the **backlog limit**: bytes cut into epochs but not yet acknowledged by the slowest backup, past
  which the emergency mode acts. It bounds how far a backup may fall behind in time:
  `backlog = max(window, bandwidth_Bps * max_lag_s)`, never above `max_backlog_bytes` (memory on the primary).

`lan` and `wan` are presets; `auto` measures RTT (and the channel's throughput) and applies the formulas.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BufferSizes:
    window_bytes: int          # in flight per backup
    backlog_limit_bytes: int   # pending (cut, unacknowledged) before the emergency mode acts


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    name: str
    rtt_s: float               # assumed round trip (measured for `auto`)
    bandwidth_Bps: float       # assumed channel throughput, bytes/s (measured for `auto`)
    max_lag_s: float = 2.0     # how far behind in time a backup may fall before the emergency mode
    min_window_bytes: int = 1 * MiB
    max_backlog_bytes: int = 512 * MiB

    @staticmethod
    def lan() -> "LatencyProfile":
        return LatencyProfile("lan", rtt_s=0.001, bandwidth_Bps=100 * MiB)

    @staticmethod
    def wan() -> "LatencyProfile":
        return LatencyProfile("wan", rtt_s=0.060, bandwidth_Bps=10 * MiB, max_lag_s=5.0)

    @staticmethod
    def auto(rtt_s: float, bandwidth_Bps: float) -> "LatencyProfile":
        if rtt_s <= 0 or bandwidth_Bps <= 0:
            raise ValueError(f"auto profile needs a measured RTT and bandwidth > 0, got {rtt_s}, {bandwidth_Bps}")
        return LatencyProfile("auto", rtt_s=rtt_s, bandwidth_Bps=bandwidth_Bps)

    def sizes(self) -> BufferSizes:
        window = max(self.min_window_bytes, int(2 * self.bandwidth_Bps * self.rtt_s))
        backlog = min(self.max_backlog_bytes, max(window, int(self.bandwidth_Bps * self.max_lag_s)))
        return BufferSizes(window_bytes=min(window, backlog), backlog_limit_bytes=backlog)


def profile_from_manifest(value: str | None, measured_rtt_s: float | None = None,
                          measured_Bps: float | None = None) -> LatencyProfile:
    """`lan` (default), `wan`, or `auto` (needs the measured figures; falls back to `lan` without them)."""
    if value in (None, "lan"):
        return LatencyProfile.lan()
    if value == "wan":
        return LatencyProfile.wan()
    if value == "auto":
        if measured_rtt_s and measured_Bps:
            return LatencyProfile.auto(measured_rtt_s, measured_Bps)
        return LatencyProfile.lan()
    raise ValueError(f"latency: {value!r} is not one of lan, wan, auto")


def sizes_for_backups(value: str | None, backup_rtts_ms: list[float | None]) -> tuple[BufferSizes, str]:
    """The buffer sizes of an Endophyte's replication, and how they were chosen (shown in `services`).
    `auto` takes the slowest backup's measured ping round trip (the mesh's `latency_ms`) with the LAN
    preset's bandwidth (a throughput is known only once the stream runs); while no backup has been
    pinged yet it uses the LAN sizes and says so."""
    if value == "auto":
        measured = [r for r in backup_rtts_ms if r is not None and r > 0]
        if measured:
            rtt_s = max(measured) / 1000
            return LatencyProfile.auto(rtt_s, LatencyProfile.lan().bandwidth_Bps).sizes(), f"auto (rtt {rtt_s * 1000:.1f} ms)"
        return LatencyProfile.lan().sizes(), "auto (no rtt measured yet: lan)"
    return profile_from_manifest(value).sizes(), value or "lan"
