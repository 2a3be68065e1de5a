"""The manager image definition (images/manager/Dockerfile) agrees with what runs it: the manifest
the daemon writes into K3s's auto-deploy directory names the image the Dockerfile's build command
tags, passes arguments the manager's entry point accepts, and mounts the socket where it says; the
Dockerfile copies what pyproject.toml needs to build the wheel and installs the extra that carries the
kubernetes client. No container runtime exists on our build machines, so the image itself is not
built here (README: K3s)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from mycelium import __version__
from mycelium.runtime.k3s.config import NodePaths
from mycelium.runtime.k3s.manager import __main__ as manager_main
from mycelium.runtime.k3s.manager.deploy import MANAGER_IMAGE, install_manager

ROOT = Path(__file__).parents[2]
DOCKERFILE = (ROOT / "images/manager/Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(kind: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.split(None, 1)[:1] == [kind]]


def manager_container(tmp_path) -> dict:
    paths = NodePaths(tmp_path / "k3s")
    install_manager(paths, state_dir=tmp_path, image=f"{MANAGER_IMAGE}:{__version__}", node="node-a")
    docs = list(yaml.safe_load_all((paths.manifests_dir / "mycelium-manager.yaml").read_text()))
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


def test_the_entry_point_is_the_manager_module():
    assert json.loads(instructions("ENTRYPOINT")[-1]) == ["python", "-m", "mycelium.runtime.k3s.manager"]
    assert callable(manager_main.main)


def test_the_manifest_runs_the_image_the_dockerfile_builds(tmp_path):
    pod = manager_container(tmp_path)
    [container] = pod["containers"]
    assert container["image"] == f"{MANAGER_IMAGE}:{__version__}"
    tag = re.search(r"docker build .*-t (\S+):\$\(python -c 'import mycelium; print\(mycelium.__version__\)'\) \.", DOCKERFILE)
    assert tag and tag.group(1) == MANAGER_IMAGE
    # the arguments parse with the manager's own parser, and point at the mounted socket
    args = container["args"]
    socket = args[args.index("--socket") + 1]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == socket]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"] == {"path": str(tmp_path / "control.sock"), "type": "Socket"}
    called = {}

    class Stop(Exception):
        pass

    def fake_client(kubeconfig):
        called["kubeconfig"] = kubeconfig
        raise Stop

    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(manager_main, "api_client", fake_client)
        with pytest.raises(Stop):
            manager_main.main(args)
    assert called == {"kubeconfig": None}  # in the cluster: the service account, not a kubeconfig


def test_the_wheel_stage_has_what_pyproject_needs_and_installs_the_k3s_extra():
    copied = {src for line in instructions("COPY") if not line.startswith("--from") for src in line.split()[:-1]}
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], "mycelium"} <= copied
    for sources in PYPROJECT["tool"]["setuptools"]["data-files"].values():
        for src in sources:
            assert src.split("/")[0] in copied and (ROOT / src).is_file()
    assert all((ROOT / c).exists() for c in copied)
    [install] = [r for r in instructions("RUN") if "pip install" in r]
    extra = re.search(r"\[(\w+)\]", install).group(1)
    assert any(d.startswith("kubernetes") for d in PYPROJECT["project"]["optional-dependencies"][extra])
    base = [f for f in instructions("FROM")]
    version = re.search(r"python:(\d+)\.(\d+)", base[-1])
    low = re.search(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert (int(version.group(1)), int(version.group(2))) >= (int(low.group(1)), int(low.group(2)))
