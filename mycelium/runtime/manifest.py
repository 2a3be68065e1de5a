"""Spore manifests: YAML in, a validated `ServiceSpec` out, or every problem with file, line and field.

    apiVersion: mycelium/v1
    kind: Endomycete
    name: static-web
    spec:
      command: [python3, -m, http.server]
      ports: [{name: http, port: 0}]

Validation has two layers: the JSON Schema shipped next to this module (`manifest.schema.json`, types,
enums, patterns, unknown fields) and the cross-field checks JSON Schema cannot express (port names
unique, a health check names an existing port, backoff initial ≤ max). Line numbers come from
PyYAML's node tree (`compose`), which keeps a mark for every key and value.
`kind: Endophyte` passes `load_manifest`; `check_deployable` (the local check/runner) takes Endomycetes only,
and the deploy route sends Endophytes (process or VM) to the ledger as leases (mycelium.ram.leases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mycelium.runtime.spec import (
    EndophyteSpec, FileSpec, HealthCheck, PortSpec, Resources, RestartPolicy, Selector, ServiceSpec,
    SpecError, UpdateStrategy, VolumeMount, parse_cpu, parse_duration_ms, parse_memory, volume_path_ok,
)

Path_ = tuple[str | int, ...]
MAX_MANIFEST_BYTES = 1 << 20  # a manifest bigger than this is a mistake (a binary, a log file)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem has no place in the file
    field: str  # e.g. "spec.ports[1].port"; "" for the whole document
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(document)'}: {self.message}"


class ManifestError(ValueError):
    """The manifest is not valid; `problems` lists every problem found (file, line, field, message)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(f"invalid manifest ({len(problems)} problem{'s' * (len(problems) != 1)}):\n  {lines}")


def field_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    text = resources.files("mycelium.runtime").joinpath("manifest.schema.json").read_text()
    return json.loads(text)


# --------------------------------------------------------------------------- YAML with line numbers


class _Located:
    """The plain value of a YAML document plus the line of every key/item, by path."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.problems: list[Problem] = []
        self.nodes = 0  # YAML nodes converted so far

    def line(self, path: Path_) -> int:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 0

    def problem(self, path: Path_, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.file, self.line(path) if line is None else line,
                                     field_path(path), message))


MAX_NODES = 100_000  # YAML aliases can expand exponentially ("billion laughs"); a manifest is small
MAX_DEPTH = 32


class _TooBig(Exception):
    pass


def _plain(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, loc: _Located) -> Any:
    loc.nodes += 1
    if loc.nodes > MAX_NODES or len(path) > MAX_DEPTH:
        raise _TooBig(f"the document expands to more than {MAX_NODES} values or {MAX_DEPTH} levels "
                      "(YAML aliases?); expected a small manifest")
    loc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<) become ordinary entries
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                loc.problem(path, f"expected a text key, got {key!r}", key_node.start_mark.line + 1)
                continue
            if key in out:
                loc.problem(path + (key,), "duplicate key (the same field is given twice)",
                            key_node.start_mark.line + 1)
            loc.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _plain(loader, value_node, path + (key,), loc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(loader, item, path + (i,), loc) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, int, float, type(None))):
        value = str(value)  # dates, timestamps, !!binary: let the schema call them strings or wrong
    return value


def _parse_yaml(text: str, loc: _Located) -> Any:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters before any parsing
        loc.problem((), f"not valid YAML: {exc}", 0)
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            loc.problem((), "the file is empty; expected a manifest (apiVersion, kind, name, spec)", 1)
            return None
        return _plain(loader, node, (), loc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or str(exc)
        if "expected a single document" in str(exc):
            reason = "several YAML documents in one file; put one manifest per file"
        loc.problem((), f"not valid YAML: {reason}", mark.line + 1 if mark else 0)
    except _TooBig as exc:
        loc.problem((), str(exc), 0)
    except yaml.YAMLError as exc:
        loc.problem((), f"not valid YAML: {exc}", 0)
    finally:
        loader.dispose()
    return None


# --------------------------------------------------------------------------- schema errors -> problems


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problems(doc: Any, loc: _Located) -> None:
    validator = jsonschema.Draft202012Validator(manifest_schema())
    seen: set[tuple[str, str]] = set()
    for err in sorted(validator.iter_errors(doc), key=lambda e: (loc.line(tuple(e.absolute_path)),
                                                                 list(map(str, e.absolute_path)))):
        path: Path_ = tuple(err.absolute_path)
        expected = err.schema.get("x-expected") if isinstance(err.schema, dict) else None
        kind = err.validator
        if kind == "additionalProperties" and err.validator_value is False:
            allowed = sorted(err.schema.get("properties", {}))
            for extra in sorted(set(err.instance) - set(allowed)):
                _add(loc, seen, path + (extra,), f"unknown field {extra!r}; expected one of: {', '.join(allowed)}")
            continue
        if kind == "required":
            for missing in err.validator_value:
                if missing not in err.instance:
                    _add(loc, seen, path + (missing,), "missing required field", loc.line(path))
            continue
        if "propertyNames" in err.relative_schema_path and isinstance(err.instance, str):
            path = path + (err.instance,)
            _add(loc, seen, path, f"bad name {err.instance!r}; expected {expected or 'a valid name'}")
            continue
        if expected:
            message = f"expected {expected}, got {_describe(err.instance)}"
        elif kind == "enum":
            choices = ", ".join(json.dumps(c) for c in err.validator_value)
            message = f"expected one of {choices}, got {_describe(err.instance)}"
        elif kind == "type":
            message = f"expected {err.validator_value}, got {_describe(err.instance)}"
        else:
            message = err.message
        _add(loc, seen, path, message)


def _add(loc: _Located, seen: set[tuple[str, str]], path: Path_, message: str, line: int | None = None) -> None:
    key = (field_path(path), message)
    if key not in seen:
        seen.add(key)
        loc.problem(path, message, line)


# --------------------------------------------------------------------------- building the spec


def _spec_from_doc(doc: dict[str, Any], loc: _Located) -> ServiceSpec:
    s = doc["spec"]
    at = ("spec",)
    if not s.get("command") and not s.get("image"):
        loc.problem(at + ("command",), "missing required field: the process runtime needs a command "
                    "(e.g. command: [python3, -m, http.server])")
    ports = tuple(PortSpec(p["name"], p["port"]) for p in s.get("ports", []))
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(ports):
        if port.name in names:
            loc.problem(at + ("ports", i, "name"), f"duplicate port name {port.name!r}; expected unique names")
        if port.port and port.port in numbers:
            loc.problem(at + ("ports", i, "port"), f"port {port.port} is listed twice; expected unique ports")
        names.add(port.name)
        numbers.add(port.port)
    health = _health(s.get("health"), names, loc)
    restart = _restart(s.get("restart", {}), loc)
    res = s.get("resources", {})
    sel = s.get("selector", {})
    update = s.get("update", {})
    try:
        resources_ = Resources(
            parse_cpu(res["cpu"]) if "cpu" in res else Resources().cpu_millicores,
            parse_memory(res["memory"]) if "memory" in res else Resources().memory_bytes)
    except SpecError as exc:
        loc.problem(at + ("resources",), str(exc))
        resources_ = Resources()
    command = s.get("command", ())
    files = _files(s.get("files", []), loc)
    volumes = _volumes(s.get("volumes", []), files, loc)
    return ServiceSpec(
        name=doc["name"],
        labels=tuple(sorted(doc.get("labels", {}).items())),
        command=(command,) if isinstance(command, str) else tuple(command),
        args=tuple(s.get("args", ())),
        env=tuple(sorted(s.get("env", {}).items())),
        files=files,
        volumes=volumes,
        image=s.get("image"),
        replicas=s.get("replicas", 1),
        selector=Selector(tuple(sorted(set(sel.get("roles", ())))),
                          tuple(sorted(sel.get("labels", {}).items())),
                          tuple(sorted(set(sel.get("nodes", ()))))),
        resources=resources_,
        ports=ports,
        health=health,
        restart=restart,
        update=UpdateStrategy("rolling", update.get("maxUnavailable", 1)),
    )


def _volumes(vols: list[dict[str, Any]], files: tuple[FileSpec, ...], loc: _Located) -> tuple[VolumeMount, ...]:
    out = []
    for i, v in enumerate(vols):
        at = ("spec", "volumes", i)
        if not volume_path_ok(v["path"]):
            loc.problem(at + ("path",), f"mount path {v['path']!r} has an empty, '.' or '..' part; expected a "
                        "relative directory such as \"data\"")
        clash = [f.path for f in files if f.path == v["path"] or f.path.startswith(v["path"] + "/")]
        if clash:
            loc.problem(at + ("path",), f"spec.files writes {clash[0]!r} inside the mount path {v['path']!r}; "
                        "put working files outside the volume (or put them into the volume with `mycelium storage put`)")
        out.append(VolumeMount(v["name"], v["path"]))
    return tuple(out)


MAX_FILE_BYTES = 256 * 1024  # a working file travels inside consensus operations: keep it small


def _files(files: list[dict[str, Any]], loc: _Located) -> tuple[FileSpec, ...]:
    out = []
    for i, f in enumerate(files):
        at: Path_ = ("spec", "files", i)
        if ("content" in f) == ("source" in f):
            loc.problem(at, "expected exactly one of content (the text) or source (a file next to the manifest)")
            continue
        content = f.get("content")
        if content is None:
            source = Path(loc.file).parent / f["source"]
            try:
                content = source.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                loc.problem(at + ("source",), f"cannot read {source}: {exc}; expected a UTF-8 text file "
                            "relative to the manifest")
                continue
        if len(content.encode()) > MAX_FILE_BYTES:
            loc.problem(at, f"file is larger than {MAX_FILE_BYTES} bytes; expected a small config or script")
            continue
        out.append(FileSpec(f["path"], content, f.get("mode", 0o644)))
    return tuple(out)


def _duration(block: dict[str, Any], key: str, default: int, path: Path_, loc: _Located) -> int:
    if key not in block:
        return default
    try:
        return parse_duration_ms(block[key])
    except SpecError as exc:
        loc.problem(path + (key,), str(exc))
        return default


def _health(h: dict[str, Any] | None, port_names: set[str], loc: _Located) -> HealthCheck | None:
    if h is None:
        return None
    at: Path_ = ("spec", "health")
    kinds = [k for k in ("exec", "tcp", "http") if k in h]
    if len(kinds) != 1:
        loc.problem(at, f"expected exactly one of exec, tcp, http; got {', '.join(kinds) or 'none'}")
        return None
    kind = kinds[0]
    probe = h[kind]
    port = probe.get("port", 0)
    if isinstance(port, str) and port not in port_names:
        loc.problem(at + (kind, "port"), f"no port named {port!r} in spec.ports; expected one of: "
                    f"{', '.join(sorted(port_names)) or '(none declared)'}")
    command = probe.get("command", ())
    d = HealthCheck("exec")
    return HealthCheck(
        kind=kind, command=(command,) if isinstance(command, str) else tuple(command), port=port,
        path=probe.get("path", "/"),
        period_ms=_duration(h, "period", d.period_ms, at, loc),
        timeout_ms=_duration(h, "timeout", d.timeout_ms, at, loc),
        initial_delay_ms=_duration(h, "initialDelay", 0, at, loc),
        success_threshold=h.get("successThreshold", d.success_threshold),
        failure_threshold=h.get("failureThreshold", d.failure_threshold))


def _restart(r: dict[str, Any], loc: _Located) -> RestartPolicy:
    at: Path_ = ("spec", "restart")
    d = RestartPolicy()
    b = r.get("backoff", {})
    initial = _duration(b, "initial", d.backoff_initial_ms, at + ("backoff",), loc)
    maximum = _duration(b, "max", max(d.backoff_max_ms, initial), at + ("backoff",), loc)
    if initial > maximum:
        loc.problem(at + ("backoff", "max"), f"backoff max ({maximum} ms) is below initial ({initial} ms); "
                    "expected max ≥ initial")
    return RestartPolicy(
        policy=r.get("policy", d.policy), backoff_initial_ms=initial, backoff_max_ms=maximum,
        backoff_factor=b.get("factor", d.backoff_factor),
        crash_loop_after=r.get("crashLoopAfter", d.crash_loop_after),
        min_uptime_ms=_duration(r, "minUptime", d.min_uptime_ms, at, loc))


def _endophyte_from_doc(doc: dict[str, Any], loc: _Located) -> EndophyteSpec:
    s = dict(doc["spec"])
    if ("vm" in s) == ("process" in s):
        loc.problem(("spec",), "expected exactly one of vm, process")
    for key in ("resources", "vm"):
        block = s.get(key)
        if isinstance(block, dict):
            block = dict(block)
            try:
                if "memory" in block:
                    block["memory"] = parse_memory(block["memory"])
                if "cpu" in block:
                    block["cpu"] = parse_cpu(block["cpu"])
            except SpecError as exc:
                loc.problem(("spec", key), str(exc))
            s[key] = block
    if isinstance(s.get("vm"), dict):
        from mycelium.runtime.manifest_vm import vm_problems  # the VM block's rules (Endophyte VMs)

        for field, message in vm_problems(s["vm"]):
            loc.problem(("spec", "vm", *field), message)
    return EndophyteSpec(name=doc["name"], spec=s, source=loc.file)


# --------------------------------------------------------------------------- public API


def parse_manifest(text: str, file: str = "<string>") -> ServiceSpec | EndophyteSpec:
    """Validate one manifest given as text; ManifestError lists every problem."""
    loc = _Located(file)
    doc = _parse_yaml(text, loc)
    if not loc.problems:
        if not isinstance(doc, dict):
            loc.problem((), f"expected a mapping with apiVersion, kind, name, spec; got {_describe(doc)}", 1)
        else:
            _schema_problems(doc, loc)
    if loc.problems:
        raise ManifestError(sorted(loc.problems, key=lambda p: p.line))
    result = (_spec_from_doc if doc["kind"] == "Endomycete" else _endophyte_from_doc)(doc, loc)
    if loc.problems:
        raise ManifestError(sorted(loc.problems, key=lambda p: p.line))
    return result


def load_manifest(path: str | Path) -> ServiceSpec | EndophyteSpec:
    """Read and validate a manifest file. Raises ManifestError (also for an unreadable file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError([Problem(str(path), 0, "", f"file is {len(data)} bytes; a manifest is "
                                         f"at most {MAX_MANIFEST_BYTES} bytes — is this the right file?")])
        text = data.decode("utf-8")
    except OSError as exc:
        raise ManifestError([Problem(str(path), 0, "", f"cannot read the file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ManifestError([Problem(str(path), 0, "", "not UTF-8 text; expected a YAML manifest")]) from exc
    return parse_manifest(text, str(path))


def check_deployable(spec: ServiceSpec | EndophyteSpec) -> ServiceSpec:
    """The deploy-time check: only Endomycetes can be deployed today."""
    if isinstance(spec, EndophyteSpec):
        raise ManifestError([Problem(spec.source, 0, "kind", "an Endophyte is valid; deploy it with "
                                     "`mycelium deploy FILE` (this local check and runner take Endomycetes only)")])
    return spec


def load_deployable(path: str | Path) -> ServiceSpec:
    """`load_manifest` + `check_deployable`: what `mycelium deploy FILE` calls."""
    return check_deployable(load_manifest(path))
