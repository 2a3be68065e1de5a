"""What a service is, once its manifest has been read: frozen, integer-only, canonical on the wire.

`ServiceSpec.to_wire()` is the form that goes into consensus operations and the Primary: plain dicts,
lists, strings and integers (cpu in millicores, memory in bytes, durations in milliseconds), so
`mycelium.encoding.canonical()` accepts it and every node hashes it identically. `from_wire()` is
strict: a Primary is trusted, but a malformed operation from a peer must be rejected, never crash us.
Quantity parsing ("500m", "256Mi", "10s") lives here too, so the manifest loader and the wire agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from mycelium.encoding import hash_value

WIRE_VERSION = 1  # bump (and keep reading the old one) when the wire form of a ServiceSpec changes
ELIGIBLE_ROLES = ("sclerotium", "rhizomorph")  # hyphae never run workloads
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # service names (same rule as the schema)

# Defaults for fields a manifest leaves out. Each trades something; change them with care, they are
# part of what every node computes (a changed default changes placements of existing manifests only
# when they are re-deployed, because the wire form stores the resolved value).
DEFAULT_CPU_MILLICORES = 100  # reserved per replica; small so a laptop fits many services
DEFAULT_MEMORY_BYTES = 256 * 2**20  # reserved per replica; also the RLIMIT_AS fallback, so not tiny
DEFAULT_HEALTH_PERIOD_MS = 10_000  # time between probes; shorter = faster detection, more load
DEFAULT_HEALTH_TIMEOUT_MS = 2_000  # a probe slower than this counts as a failure
DEFAULT_BACKOFF_INITIAL_MS = 1_000  # first restart delay; then × factor per quick failure
DEFAULT_BACKOFF_MAX_MS = 60_000  # restart delays never exceed this
DEFAULT_BACKOFF_FACTOR = 2
DEFAULT_CRASH_LOOP_AFTER = 5  # this many quick consecutive failures = state crash_loop
DEFAULT_MIN_UPTIME_MS = 10_000  # a run shorter than this is a "quick" failure (backoff grows)


class SpecError(ValueError):
    """A quantity or wire value is malformed; the message says what was expected."""


# --------------------------------------------------------------------------- quantities

_MEMORY_UNITS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_MAX_INT = 2**63 - 1


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise SpecError(f"{text!r} is not a number") from exc


def _whole(value: Decimal, what: str, original: Any) -> int:
    if value != value.to_integral_value() or not 0 <= value <= _MAX_INT:
        raise SpecError(f"{original!r} is not a whole number of {what} between 0 and 2^63-1")
    return int(value)


def parse_cpu(value: Any) -> int:
    """Cores (1, 0.5, "2") or millicores ("500m") -> millicores."""
    if isinstance(value, bool):
        raise SpecError(f"{value!r} is not a CPU quantity")
    if isinstance(value, (int, float)):
        return _whole(_decimal(repr(value)) * 1000, "millicores", value)
    if isinstance(value, str) and (m := re.fullmatch(r"([0-9]+)m", value)):
        return _whole(Decimal(m.group(1)), "millicores", value)
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
        return _whole(Decimal(value) * 1000, "millicores", value)
    raise SpecError(f"{value!r} is not a CPU quantity such as \"500m\" or 2")


def parse_memory(value: Any) -> int:
    """Bytes (1048576) or "256Mi", "1Gi", "500M" -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _whole(Decimal(value), "bytes", value)
    if isinstance(value, str) and (m := re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti|k|K|M|G|T)?", value)):
        return _whole(Decimal(m.group(1)) * _MEMORY_UNITS[m.group(2) or ""], "bytes", value)
    raise SpecError(f"{value!r} is not a memory quantity such as \"256Mi\" or 1048576")


def parse_duration_ms(value: Any) -> int:
    """Whole seconds (10) or "500ms", "1.5s", "2m", "1h" -> milliseconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _whole(Decimal(value) * 1000, "milliseconds", value)
    if isinstance(value, str) and (m := re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", value)):
        return _whole(_decimal(m.group(1)) * _DURATION_UNITS[m.group(2)], "milliseconds", value)
    raise SpecError(f"{value!r} is not a duration such as \"10s\" or \"500ms\"")


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True, slots=True)
class FileSpec:
    path: str  # relative to the instance's working directory
    content: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class VolumeMount:
    name: str  # a volume of the distributed store (storage/volumes.py names)
    path: str  # a directory relative to the instance's working directory


@dataclass(frozen=True, slots=True)
class PortSpec:
    name: str
    port: int  # 0 = the runtime picks a free port and passes it as $PORT / $MYCELIUM_PORT_<NAME>


@dataclass(frozen=True, slots=True)
class Selector:
    roles: tuple[str, ...] = ()  # empty = any role that runs workloads
    labels: tuple[tuple[str, str], ...] = ()  # every (key, value) must match the node's labels
    nodes: tuple[str, ...] = ()  # empty = any node id


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_millicores: int = DEFAULT_CPU_MILLICORES
    memory_bytes: int = DEFAULT_MEMORY_BYTES


@dataclass(frozen=True, slots=True)
class HealthCheck:
    kind: Literal["exec", "tcp", "http"]
    command: tuple[str, ...] = ()  # exec
    port: str | int = 0  # tcp/http: a port name from the spec, or a number
    path: str = "/"  # http
    period_ms: int = DEFAULT_HEALTH_PERIOD_MS
    timeout_ms: int = DEFAULT_HEALTH_TIMEOUT_MS
    initial_delay_ms: int = 0
    success_threshold: int = 1  # consecutive successes before "healthy"
    failure_threshold: int = 3  # consecutive failures before "unhealthy"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    policy: Literal["always", "on-failure", "never"] = "always"
    backoff_initial_ms: int = DEFAULT_BACKOFF_INITIAL_MS
    backoff_max_ms: int = DEFAULT_BACKOFF_MAX_MS
    backoff_factor: int = DEFAULT_BACKOFF_FACTOR
    crash_loop_after: int = DEFAULT_CRASH_LOOP_AFTER
    min_uptime_ms: int = DEFAULT_MIN_UPTIME_MS

    def backoff_ms(self, quick_failures: int) -> int:
        """Delay before the next start after `quick_failures` (≥ 1) quick consecutive failures:
        min(max, initial × factor^(quick_failures − 1))."""
        exponent = max(0, min(quick_failures - 1, 64))
        return min(self.backoff_max_ms, self.backoff_initial_ms * self.backoff_factor**exponent)


@dataclass(frozen=True, slots=True)
class UpdateStrategy:
    strategy: Literal["rolling"] = "rolling"
    max_unavailable: int = 1  # replicas (network-wide) that may be down at once during an update


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A deployable Endomycete. Build it with `load_manifest()` or `from_wire()`."""

    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # sorted by name
    files: tuple[FileSpec, ...] = ()
    image: str | None = None  # reserved for the k3s driver
    replicas: int | Literal["all"] = 1
    selector: Selector = field(default_factory=Selector)
    resources: Resources = field(default_factory=Resources)
    ports: tuple[PortSpec, ...] = ()
    health: HealthCheck | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    update: UpdateStrategy = field(default_factory=UpdateStrategy)
    labels: tuple[tuple[str, str], ...] = ()
    volumes: tuple[VolumeMount, ...] = ()  # FUSE-mounted store volumes (storage/workload_mounts.py)

    def to_wire(self) -> dict[str, Any]:
        """Plain data with integers only; canonical-encodable."""
        volumes = {"volumes": [{"name": v.name, "path": v.path} for v in self.volumes]} if self.volumes else {}
        return {**volumes,
            "v": WIRE_VERSION,
            "kind": "Endomycete",
            "name": self.name,
            "labels": dict(self.labels),
            "command": list(self.command),
            "args": list(self.args),
            "env": dict(self.env),
            "files": [{"path": f.path, "content": f.content, "mode": f.mode} for f in self.files],
            "image": self.image,
            "replicas": self.replicas,
            "selector": {"roles": list(self.selector.roles), "labels": dict(self.selector.labels),
                         "nodes": list(self.selector.nodes)},
            "resources": {"cpu_millicores": self.resources.cpu_millicores,
                          "memory_bytes": self.resources.memory_bytes},
            "ports": [{"name": p.name, "port": p.port} for p in self.ports],
            "health": None if self.health is None else {
                "kind": self.health.kind, "command": list(self.health.command),
                "port": self.health.port, "path": self.health.path,
                "period_ms": self.health.period_ms, "timeout_ms": self.health.timeout_ms,
                "initial_delay_ms": self.health.initial_delay_ms,
                "success_threshold": self.health.success_threshold,
                "failure_threshold": self.health.failure_threshold},
            "restart": {"policy": self.restart.policy,
                        "backoff_initial_ms": self.restart.backoff_initial_ms,
                        "backoff_max_ms": self.restart.backoff_max_ms,
                        "backoff_factor": self.restart.backoff_factor,
                        "crash_loop_after": self.restart.crash_loop_after,
                        "min_uptime_ms": self.restart.min_uptime_ms},
            "update": {"strategy": self.update.strategy,
                       "max_unavailable": self.update.max_unavailable},
        }

    def version(self) -> str:
        """A short digest of the whole spec: instances of an older version get rolled."""
        return hash_value(self.to_wire(), person=b"mycelium-svc").hex()[:16]

    @classmethod
    def from_wire(cls, wire: Any) -> ServiceSpec:
        """Strictly rebuild a spec; SpecError (never another exception) for anything malformed."""
        try:
            return _from_wire(wire)
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"malformed service spec on the wire: {exc!r}") from exc


def _typed(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise SpecError(f"malformed service spec on the wire: {what} is {value!r}")
    return value


def _nat(value: Any, what: str, low: int = 0) -> int:
    _typed(value, int, what)
    if not low <= value <= _MAX_INT:
        raise SpecError(f"malformed service spec on the wire: {what} = {value} is out of range")
    return value


def _strs(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_typed(v, str, what) for v in _typed(value, list, what))


def _str_map(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    items = _typed(value, dict, what).items()
    return tuple(sorted((_typed(k, str, what), _typed(v, str, what)) for k, v in items))


def _from_wire(w: Any) -> ServiceSpec:
    _typed(w, dict, "the spec")
    if w.get("v") != WIRE_VERSION or w.get("kind") != "Endomycete":
        raise SpecError(f"unsupported service spec version {w.get('v')!r} / kind {w.get('kind')!r}")
    h = w["health"]
    health = None if h is None else HealthCheck(
        kind=_typed(h["kind"], str, "health.kind"), command=_strs(h["command"], "health.command"),
        port=_typed(h["port"], (str, int), "health.port"), path=_typed(h["path"], str, "health.path"),
        period_ms=_nat(h["period_ms"], "health.period_ms"),
        timeout_ms=_nat(h["timeout_ms"], "health.timeout_ms"),
        initial_delay_ms=_nat(h["initial_delay_ms"], "health.initial_delay_ms"),
        success_threshold=_nat(h["success_threshold"], "health.success_threshold", 1),
        failure_threshold=_nat(h["failure_threshold"], "health.failure_threshold", 1))
    if health is not None and health.kind not in ("exec", "tcp", "http"):
        raise SpecError(f"malformed service spec on the wire: health.kind {health.kind!r}")
    r, u, s, res = w["restart"], w["update"], w["selector"], w["resources"]
    replicas = w["replicas"]
    if replicas != "all":
        _nat(replicas, "replicas")
    if r["policy"] not in ("always", "on-failure", "never") or u["strategy"] != "rolling":
        raise SpecError("malformed service spec on the wire: restart.policy or update.strategy")
    roles = _strs(s["roles"], "selector.roles")
    if not set(roles) <= set(ELIGIBLE_ROLES):
        raise SpecError(f"malformed service spec on the wire: selector.roles {roles!r}")
    image = w["image"]
    if not DNS_LABEL.fullmatch(_typed(w["name"], str, "name")):
        raise SpecError(f"malformed service spec on the wire: name {w['name']!r} is not a DNS label")
    for p in _typed(w["ports"], list, "ports"):
        if _nat(p["port"], "ports.port") > 65535:
            raise SpecError(f"malformed service spec on the wire: port {p['port']} is out of range")
    for f in _typed(w["files"], list, "files"):
        path = _typed(f["path"], str, "files.path")
        if path.startswith("/") or ".." in path.split("/"):
            raise SpecError(f"malformed service spec on the wire: file path {path!r} leaves the working directory")
    volumes = tuple(VolumeMount(_typed(v["name"], str, "volumes.name"), _typed(v["path"], str, "volumes.path"))
                    for v in _typed(w.get("volumes", []), list, "volumes"))
    for v in volumes:
        if not VOLUME_NAME.fullmatch(v.name) or not volume_path_ok(v.path):
            raise SpecError(f"malformed service spec on the wire: volume {v.name!r} at {v.path!r}")
    return ServiceSpec(
        name=_typed(w["name"], str, "name"),
        labels=_str_map(w["labels"], "labels"),
        command=_strs(w["command"], "command"),
        args=_strs(w["args"], "args"),
        env=_str_map(w["env"], "env"),
        files=tuple(FileSpec(_typed(f["path"], str, "files.path"),
                             _typed(f["content"], str, "files.content"),
                             _nat(f["mode"], "files.mode")) for f in _typed(w["files"], list, "files")),
        image=None if image is None else _typed(image, str, "image"),
        replicas=replicas,
        selector=Selector(roles, _str_map(s["labels"], "selector.labels"),
                          _strs(s["nodes"], "selector.nodes")),
        resources=Resources(_nat(res["cpu_millicores"], "resources.cpu_millicores"),
                            _nat(res["memory_bytes"], "resources.memory_bytes")),
        ports=tuple(PortSpec(_typed(p["name"], str, "ports.name"),
                             _nat(p["port"], "ports.port")) for p in _typed(w["ports"], list, "ports")),
        health=health,
        restart=RestartPolicy(r["policy"], _nat(r["backoff_initial_ms"], "restart.backoff_initial_ms"),
                              _nat(r["backoff_max_ms"], "restart.backoff_max_ms"),
                              _nat(r["backoff_factor"], "restart.backoff_factor", 1),
                              _nat(r["crash_loop_after"], "restart.crash_loop_after", 1),
                              _nat(r["min_uptime_ms"], "restart.min_uptime_ms")),
        update=UpdateStrategy("rolling", _nat(u["max_unavailable"], "update.max_unavailable", 1)),
        volumes=volumes,
    )


VOLUME_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")  # = storage.volumes' rule


def volume_path_ok(path: str) -> bool:
    """A mount directory inside the working directory: relative, no empty, '.' or '..' parts."""
    return bool(path) and len(path) <= 255 and all(p not in ("", ".", "..") for p in path.split("/"))


@dataclass(frozen=True, slots=True)
class EndophyteSpec:
    """A schema-valid Endophyte (RAM-replicated VM/process). Not deployable yet: see check_deployable."""

    name: str
    spec: dict[str, Any] = field(hash=False)  # the manifest's spec with quantities normalised
    source: str = field(default="<string>", compare=False)  # the file it came from, for messages
    kind: str = field(default="Endophyte", compare=False)

    def version(self) -> str:
        from mycelium.encoding import hash_value

        return hash_value({"name": self.name, "spec": self.spec}).hex()[:12]
