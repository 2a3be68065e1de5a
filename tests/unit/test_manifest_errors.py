"""Every class of manifest error names the file, the line and the field, and says what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mycelium.encoding import canonical
from mycelium.runtime.manifest import (
    ManifestError, check_deployable, load_deployable, load_manifest, manifest_schema, parse_manifest,
)
from mycelium.runtime.spec import EndophyteSpec, ServiceSpec

GOOD = """\
apiVersion: mycelium/v1
kind: Endomycete
name: web
spec:
  command: [python3, -m, http.server]
  replicas: 2
  resources: {cpu: 500m, memory: 256Mi}
  ports:
    - {name: http, port: 0}
    - {name: admin, port: 9000}
  health:
    tcp: {port: http}
"""


def write(tmp_path: Path, text: str, name: str = "svc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    for p in info.value.problems:
        assert p.file == str(path)
        assert str(path) in str(info.value)
    return info.value.problems


def only(tmp_path: Path, text: str):
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_good_manifest_loads(tmp_path):
    spec = load_manifest(write(tmp_path, GOOD))
    assert isinstance(spec, ServiceSpec)
    assert spec.resources.cpu_millicores == 500 and spec.resources.memory_bytes == 256 * 2**20
    assert [(p.name, p.port) for p in spec.ports] == [("http", 0), ("admin", 9000)]
    assert spec.health is not None and spec.health.kind == "tcp" and spec.health.port == "http"


def test_missing_field(tmp_path):
    p = only(tmp_path, GOOD.replace("name: web\n", ""))
    assert (p.field, p.line) == ("name", 1)
    assert "missing required field" in p.message


def test_missing_nested_field_points_at_its_parent_line(tmp_path):
    p = only(tmp_path, GOOD.replace("{name: admin, port: 9000}", "{name: admin}"))
    assert (p.field, p.line) == ("spec.ports[1].port", 10)
    assert "missing required field" in p.message


def test_wrong_type(tmp_path):
    p = only(tmp_path, GOOD.replace("replicas: 2", "replicas: [2]"))
    assert (p.field, p.line) == ("spec.replicas", 6)
    assert 'expected a number of replicas (an integer ≥ 0) or "all", got a list' in p.message


def test_wrong_type_for_env_value_says_to_quote(tmp_path):
    p = only(tmp_path, GOOD.replace("  replicas: 2\n", "  replicas: 2\n  env:\n    DEBUG: true\n"))
    assert (p.field, p.line) == ("spec.env.DEBUG", 8)
    assert "quote" in p.message and "the boolean true" in p.message


def test_unknown_field(tmp_path):
    p = only(tmp_path, GOOD.replace("  replicas: 2\n", "  replicas: 2\n  replica: 3\n"))
    assert (p.field, p.line) == ("spec.replica", 7)
    assert "unknown field 'replica'" in p.message and "replicas" in p.message


def test_unknown_top_level_field(tmp_path):
    p = only(tmp_path, GOOD + "metadata: {}\n")
    assert (p.field, p.line) == ("metadata", 13)


def test_bad_enum(tmp_path):
    p = only(tmp_path, GOOD + "  restart: {policy: sometimes}\n")
    assert (p.field, p.line) == ("spec.restart.policy", 13)
    assert '"always", "on-failure", "never"' in p.message and "'sometimes'" in p.message


def test_hypha_selector_is_refused_with_a_reason(tmp_path):
    p = only(tmp_path, GOOD + "  selector: {roles: [hypha]}\n")
    assert p.field == "spec.selector.roles[0]" and "hyphae never run workloads" in p.message


def test_bad_kind_and_api_version(tmp_path):
    found = problems(tmp_path, GOOD.replace("Endomycete", "Pod").replace("mycelium/v1", "v1"))
    assert {(p.field, p.line) for p in found} == {("apiVersion", 1), ("kind", 2)}


@pytest.mark.parametrize("field,value", [("cpu", "5x"), ("cpu", "1.5cores"), ("memory", "256MB"),
                                         ("memory", "-1")])
def test_bad_quantity_string(tmp_path, field, value):
    text = GOOD.replace("{cpu: 500m, memory: 256Mi}", "{cpu: 500m, memory: 256Mi, %s: '%s'}" % (field, value))
    text = text.replace(f"{field}: 500m, " if field == "cpu" else f", {field}: 256Mi", "", 1)
    p = only(tmp_path, text)
    assert (p.field, p.line) == (f"spec.resources.{field}", 7)
    assert ("CPU quantity" if field == "cpu" else "memory quantity") in p.message


def test_bad_duration(tmp_path):
    p = only(tmp_path, GOOD + "    period: 5 seconds\n")
    assert (p.field, p.line) == ("spec.health.period", 13)
    assert "duration" in p.message


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "a" * 64, "web."])
def test_bad_name(tmp_path, name):
    p = only(tmp_path, GOOD.replace("name: web", f"name: '{name}'"))
    assert (p.field, p.line) == ("name", 3)
    assert "DNS label" in p.message


def test_bad_env_name(tmp_path):
    p = only(tmp_path, GOOD + "  env: {'bad-name': x}\n")
    assert p.field == "spec.env.bad-name" and "environment variable name" in p.message


def test_port_out_of_range(tmp_path):
    p = only(tmp_path, GOOD.replace("port: 9000", "port: 70000"))
    assert (p.field, p.line) == ("spec.ports[1].port", 10)
    assert "0 to let the runtime pick" in p.message


def test_cross_field_checks(tmp_path):
    found = problems(tmp_path, GOOD.replace("name: admin", "name: http").replace("tcp: {port: http}",
                                                                               "tcp: {port: web}"))
    fields = {p.field: p for p in found}
    assert fields["spec.ports[1].name"].line == 10 and "duplicate port name" in fields["spec.ports[1].name"].message
    assert fields["spec.health.tcp.port"].line == 12 and "no port named 'web'" in fields["spec.health.tcp.port"].message


def test_health_needs_exactly_one_probe(tmp_path):
    p = only(tmp_path, GOOD.replace("    tcp: {port: http}\n", "    tcp: {port: http}\n    http: {port: http}\n"))
    assert (p.field, p.line) == ("spec.health", 11) and "exactly one of exec, tcp, http" in p.message


def test_duplicate_key_is_an_error(tmp_path):
    p = only(tmp_path, GOOD.replace("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"))
    assert (p.field, p.line) == ("spec.replicas", 7) and "duplicate key" in p.message


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = only(tmp_path, GOOD.replace("replicas: 2", "replicas: [2"))
    assert p.line >= 6 and "not valid YAML" in p.message


def test_several_documents_and_empty_file_and_non_mapping(tmp_path):
    assert "one manifest per file" in only(tmp_path, GOOD + "---\n" + GOOD).message
    assert "empty" in only(tmp_path, "").message
    assert "expected a mapping" in only(tmp_path, "- a\n- b\n").message


def test_missing_command_without_image(tmp_path):
    p = only(tmp_path, GOOD.replace("  command: [python3, -m, http.server]\n", ""))
    assert p.field == "spec.command" and "needs a command" in p.message


def test_unreadable_file():
    with pytest.raises(ManifestError, match="cannot read the file"):
        load_manifest("/nonexistent/manifest.yaml")


def test_all_problems_are_reported_at_once_in_line_order(tmp_path):
    found = problems(tmp_path, GOOD.replace("name: web", "name: Web").replace("replicas: 2", "replicas: x")
                     + "bogus: 1\n")
    assert [p.line for p in found] == sorted(p.line for p in found)
    assert {p.field for p in found} == {"name", "spec.replicas", "bogus"}


def test_file_source_is_read_next_to_the_manifest(tmp_path):
    (tmp_path / "server.py").write_text("print('hi')\n")
    spec = load_manifest(write(tmp_path, GOOD + "  files:\n    - {path: server.py, source: server.py}\n"))
    assert spec.files[0].content == "print('hi')\n"
    p = only(tmp_path, GOOD + "  files:\n    - {path: x.py, source: missing.py}\n")
    assert p.field == "spec.files[0].source" and "cannot read" in p.message
    p = only(tmp_path, GOOD + "  files:\n    - {path: ../escape.py, content: x}\n")
    assert p.field == "spec.files[0].path" and "relative path" in p.message


ENDOPHYTE = """\
apiVersion: mycelium/v1
kind: Endophyte
name: db
spec:
  vm: {image: testvm, cpus: 2, memory: 2Gi}
  backups: 2
  throttle: {curve: custom, points: [[50, 10], [90, 80]]}
  emergency: {mode: pause}
"""


def test_endophyte_passes_the_schema_but_is_refused_at_deploy(tmp_path):
    path = write(tmp_path, ENDOPHYTE)
    spec = load_manifest(path)
    assert isinstance(spec, EndophyteSpec) and spec.spec["vm"]["memory"] == 2 * 2**30
    with pytest.raises(ManifestError, match="deploy it with `mycelium deploy FILE`") as info:
        load_deployable(path)  # the local runner takes Endomycetes; the deploy route makes a lease
    assert info.value.problems[0].file == str(path)


def test_vm_endophyte_image_memory_and_cpus_errors(tmp_path):
    p = only(tmp_path, ENDOPHYTE.replace("image: testvm", "image: debian.qcow2"))
    assert p.field == "spec.vm.image" and "testvm" in p.message and "kernel" in p.message
    p = only(tmp_path, ENDOPHYTE.replace("memory: 2Gi", "memory: 1Mi"))
    assert p.field == "spec.vm.memory" and "64Mi" in p.message
    p = only(tmp_path, ENDOPHYTE.replace("image: testvm", "image: {kernel: vmlinuz, initrd: /i}"))
    assert p.field == "spec.vm.image.kernel" and "absolute path" in p.message


def test_endophyte_schema_errors(tmp_path):
    p = only(tmp_path, ENDOPHYTE.replace("mode: pause", "mode: panic"))
    assert (p.field, p.line) == ("spec.emergency.mode", 8)


def test_wire_form_is_canonical_and_round_trips(tmp_path):
    spec = load_manifest(write(tmp_path, GOOD))
    wire = spec.to_wire()
    canonical(wire)  # raises on floats or odd types
    assert ServiceSpec.from_wire(wire) == spec
    assert check_deployable(spec) is spec
    assert spec.version() != load_manifest(write(tmp_path, GOOD.replace("replicas: 2", "replicas: 3"))).version()


def test_schema_ships_as_package_data():
    assert manifest_schema()["properties"]["apiVersion"]["const"] == "mycelium/v1"


def test_parse_manifest_from_text_uses_the_given_name():
    with pytest.raises(ManifestError, match=r"cli-input:3: name"):
        parse_manifest(GOOD.replace("name: web", "name: WEB"), "cli-input")


def test_alias_bomb_and_deep_nesting_are_refused(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        bomb += f"l{i}: &l{i} [" + ", ".join([f"*{'a' if i == 1 else f'l{i - 1}'}"] * 10) + "]\n"
    assert "YAML aliases" in only(tmp_path, bomb).message
    assert "levels" in only(tmp_path, "a: " + "[" * 40 + "]" * 40 + "\n").message
