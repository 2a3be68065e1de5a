"""Typed node configuration: documented defaults, then `config.toml` in the state dir, then
environment, then command-line flags (each layer overrides the one before).

File layout (every key optional; unknown keys are errors naming the key and the file):

    [node]
    listen = ["/ip4/0.0.0.0/tcp/4701"]
    max_role = "sclerotium"
    [log]
    level = "info"

Environment: `MYCELIUM_STATE_DIR` sets the state dir; any field can be set as
`MYCELIUM__<SECTION>__<FIELD>` (e.g. `MYCELIUM__NODE__MAX_ROLE=hypha`; lists are comma-separated).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DEFAULT_PORT = 4701  # TCP port the mesh listens on; falls back to an ephemeral port (with a warning) if taken
ROLES = ("sclerotium", "rhizomorph", "hypha")  # strongest first
LOG_LEVELS = ("debug", "info", "warning", "error")
# The one default of each knob that is a [node] setting, a network parameter (ledger.governance.PARAMS;
# a founder writes its [node] values into the genesis) and a component's config field at once:
HEARTBEAT_S = 10  # consensus.config.ConsensusConfig.heartbeat_interval_s
DEAD_AFTER_S = 30  # the role rule and placement (ledger)
READ_ONLY_AFTER_S = 30  # roles.readonly.ReadOnlyConfig.enter_after_s


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and where it came from."""


def default_state_dir() -> Path:
    """/var/lib/mycelium as root, otherwise $XDG_DATA_HOME/mycelium (~/.local/share/mycelium)."""
    env = os.environ.get("MYCELIUM_STATE_DIR")
    if env:
        return Path(env).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/mycelium")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "mycelium"


@dataclass(frozen=True, slots=True)
class NodeSection:
    listen: tuple[str, ...] = (f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",)  # mesh listen multiaddrs
    bootstrap: tuple[str, ...] = ()  # extra bootstrap multiaddrs (joined networks also use the token's)
    max_role: str = "sclerotium"  # operator's cap: sclerotium > rhizomorph > hypha
    mdns: bool = True  # find peers of the same network on the LAN by mDNS
    heartbeat_s: int = HEARTBEAT_S  # an (empty) height is decided at least this often, keeping liveness current
    # Network parameter, fixed when this node founds a network: a member silent this long (in the
    # Primary's clock) counts as dead — its validator seat and its replicas move. Shorter reacts
    # faster; longer rides out reboots and flaky Wi-Fi without reshuffling.
    dead_after_s: int = DEAD_AFTER_S
    read_only_after_s: int = READ_ONLY_AFTER_S  # no quorum of validators reachable this long → read-only mode
    ping_interval_s: int = 15  # peers are pinged this often; 3 failures in a row drop an unresponsive one
    labels: tuple[str, ...] = ()  # "key=value" labels that service selectors can match


@dataclass(frozen=True, slots=True)
class LogSection:
    level: str = "info"  # debug | info | warning | error
    json: bool | None = None  # None = JSON when stdout is not a terminal, human-readable on a TTY


@dataclass(frozen=True, slots=True)
class StorageSection:
    # Silence before a lost device's shares are rebuilt elsewhere: shorter repairs sooner after a
    # real loss, longer rides out reboots without moving data (Tahoe/Garage practice: minutes).
    grace_s: int = 60
    inventory_interval_s: int = 5  # devices are asked what they hold this often (repair reacts within it)
    repair_mib_per_s: int = 32  # repair traffic cap, reads + writes; the rest of the link is for users
    scrub_mib_per_s: int = 8  # local re-hash rate of the scrub
    scrub_pause_s: int = 600  # rest between two full scrub passes
    ack_extra: int = 1  # a put waits for k + ack_extra fsynced shares per chunk on distinct devices
    gc_grace_s: int = 3600  # a share no volume references is deleted after this long (longer than any put)


@dataclass(frozen=True, slots=True)
class K3sSection:
    # written by `install.sh --k3s`; false = services run on the embedded process runtime only
    enabled: bool = False
    binary: str = ""  # path of the k3s binary ("" = none found: the node says so in `mycelium status`)
    # how long a starting k3s may take to become ready before the node reports the process runtime
    # (and keeps waiting): a Pi 4 needs 60-120 s from cold, a laptop ~20 s
    ready_timeout_s: int = 180
    manager_image: str = ""  # the in-cluster manager's image; "" = ghcr.io/mycelium-network/manager:<version>
    # the WireGuard interface of the overlay; unique per machine (wireguard-go's control socket
    # /var/run/wireguard/<name>.sock is shared by every network namespace)
    overlay_interface: str = "myc-wg0"


@dataclass(frozen=True, slots=True)
class ReleaseSection:
    # self-upgrade (mycelium.release): false = this node never switches by itself (upgrade by hand)
    auto_upgrade: bool = True
    # after switching, the new version must pass its health check within this long, or the node
    # goes back to the previous version by itself and the release is marked failed network-wide
    health_timeout_s: int = 120


@dataclass(frozen=True, slots=True)
class Config:
    state_dir: Path
    node: NodeSection = field(default_factory=NodeSection)
    log: LogSection = field(default_factory=LogSection)
    storage: StorageSection = field(default_factory=StorageSection)
    k3s: K3sSection = field(default_factory=K3sSection)
    release: ReleaseSection = field(default_factory=ReleaseSection)

    # -- derived paths (all inside the state dir, so several nodes can run side by side) ---------
    @property
    def key_path(self) -> Path:
        return self.state_dir / "node.key"

    @property
    def network_path(self) -> Path:
        return self.state_dir / "network.key"

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "daemon.lock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "daemon.log"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "config.toml"


_SECTIONS: dict[str, type] = {"node": NodeSection, "log": LogSection, "storage": StorageSection, "k3s": K3sSection,
                             "release": ReleaseSection}


def _coerce(section: str, name: str, raw: Any, ftype: Any, origin: str) -> Any:
    where = f"{section}.{name} in {origin}"
    text = isinstance(raw, str)
    if ftype in ("tuple[str, ...]",):
        if text:
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(raw, tuple):
            raw = list(raw)
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(f"{where}: expected a list of strings, got {raw!r}")
        return tuple(raw)
    if ftype in ("bool", "bool | None"):
        if text:
            lowered = raw.lower()
            if ftype == "bool | None" and lowered in ("", "auto"):
                return None
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if ftype == "int":
        if text:
            try:
                raw = int(raw)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {raw!r}") from None
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise ConfigError(f"{where}: expected a non-negative integer, got {raw!r}")
        return raw
    if ftype == "str":
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {raw!r}")
        return raw
    raise AssertionError(f"unhandled config type {ftype}")  # our bug: a field type without a parser


def _apply(sections: dict[str, dict[str, Any]], data: Mapping[str, Any], origin: str) -> None:
    for sname, values in data.items():
        if sname not in _SECTIONS:
            raise ConfigError(f"unknown section [{sname}] in {origin} (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{sname}] in {origin} must be a table")
        fields = {f.name: f for f in dataclasses.fields(_SECTIONS[sname])}
        for key, raw in values.items():
            if key not in fields:
                raise ConfigError(
                    f"unknown key {sname}.{key} in {origin} (known in [{sname}]: {', '.join(fields)})"
                )
            sections[sname][key] = _coerce(sname, key, raw, fields[key].type, origin)


def _validate(cfg: Config) -> None:
    if cfg.node.max_role not in ROLES:
        raise ConfigError(f"node.max_role must be one of {', '.join(ROLES)}, got {cfg.node.max_role!r}")
    if cfg.log.level not in LOG_LEVELS:
        raise ConfigError(f"log.level must be one of {', '.join(LOG_LEVELS)}, got {cfg.log.level!r}")
    if not cfg.node.listen:
        raise ConfigError("node.listen needs at least one multiaddr")
    for addr in (*cfg.node.listen, *cfg.node.bootstrap):
        if not addr.startswith("/"):
            raise ConfigError(f"{addr!r} is not a multiaddr (e.g. /ip4/0.0.0.0/tcp/{DEFAULT_PORT})")
    for label in cfg.node.labels:
        if "=" not in label:
            raise ConfigError(f"label {label!r} must look like key=value")


def load_config(
    state_dir: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults ← state_dir/config.toml ← MYCELIUM__SECTION__FIELD env ← `overrides` (flags)."""
    env = os.environ if env is None else env
    state_dir = (state_dir or default_state_dir()).expanduser().absolute()
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}

    path = state_dir / "config.toml"
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}; fix or remove it") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        _apply(sections, data, str(path))

    env_data: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if name.startswith("MYCELIUM__"):
            parts = name[len("MYCELIUM__") :].lower().split("__")
            if len(parts) != 2:
                raise ConfigError(f"environment variable {name} must look like MYCELIUM__SECTION__FIELD")
            env_data.setdefault(parts[0], {})[parts[1]] = value
    _apply(sections, env_data, "the environment")

    if overrides:
        _apply(sections, {s: {k: v for k, v in vals.items() if v is not None} for s, vals in overrides.items()}, "flags")

    cfg = Config(
        state_dir=state_dir,
        node=NodeSection(**sections["node"]),
        log=LogSection(**sections["log"]),
        storage=StorageSection(**sections["storage"]),
        k3s=K3sSection(**sections["k3s"]),
        release=ReleaseSection(**sections["release"]),
    )
    _validate(cfg)
    return cfg
