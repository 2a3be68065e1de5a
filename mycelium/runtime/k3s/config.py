"""K3s's config file and the CNI config of one node, rendered from the cluster plan (pure), and the
writer that puts them in place (atomically, only when they change).

Templates live in `k3s-overlay/` (see its README). Every substituted value is JSON-encoded, which
YAML reads unchanged, so a value can never inject keys. `NodeFiles.render()` is pure: same plan, same
node, same paths → same bytes (golden-file tested).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import sys
from dataclasses import dataclass
from pathlib import Path

from mycelium.identity import NodeId
from mycelium.overlay.addressing import OverlayConfig
from mycelium.runtime.k3s.plan import ClusterPlan, Datastore, K3sMode

NODE_LABEL = "mycelium.io/node"  # K8s node label holding the mycelium node id (the manager's affinity key)
ROLE_LABEL = "mycelium.io/role"
CNI_FILE = "10-mycelium.conflist"
MANAGER_MANIFEST = "mycelium-manager.yaml"


class TemplateMissing(FileNotFoundError):
    """The k3s-overlay templates are not installed; the message says where they were looked for."""


def overlay_dir() -> Path:
    """Where the k3s-overlay templates are: $MYCELIUM_K3S_OVERLAY, the source checkout, or the copy
    pip installs under <prefix>/share/mycelium/k3s-overlay (pyproject data-files)."""
    candidates = []
    if os.environ.get("MYCELIUM_K3S_OVERLAY"):
        candidates.append(Path(os.environ["MYCELIUM_K3S_OVERLAY"]))
    candidates += [Path(__file__).resolve().parents[3] / "k3s-overlay", Path(sys.prefix) / "share/mycelium/k3s-overlay"]
    for path in candidates:
        if (path / "config" / "server.yaml").is_file():
            return path
    raise TemplateMissing("k3s-overlay templates not found in " + ", ".join(map(str, candidates))
                          + "; reinstall with ./install.sh --k3s or set MYCELIUM_K3S_OVERLAY")


def k8s_node_name(node: NodeId) -> str:
    """A DNS-1123 name for a node id (node ids are mixed-case base58, K8s names are lowercase)."""
    return "myc-" + hashlib.blake2b(node.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class NodePaths:
    """Where one node's K3s files live (all under its state dir)."""

    root: Path  # <state>/k3s

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig.yaml"

    @property
    def agent_kubeconfig(self) -> Path:
        return self.data_dir / "agent/kubelet.kubeconfig"  # the kubelet's node credentials, written by k3s agent

    @property
    def cni_conf(self) -> Path:
        return self.data_dir / "agent/etc/cni/net.d" / CNI_FILE

    @property
    def manifests_dir(self) -> Path:
        return self.data_dir / "server/manifests"  # K3s's auto-deploy directory


def _fill(template: str, values: dict[str, object]) -> str:
    return string.Template(template).substitute({k: v if k.endswith("_lines") or k.endswith("_comment")
                                                 else json.dumps(v) for k, v in values.items()})


@dataclass(frozen=True, slots=True)
class NodeFiles:
    mode: K3sMode
    config: str  # K3s config file content ("" for mode none)
    cni: str  # CNI conflist content ("" for mode none)
    reason: str

    @classmethod
    def render(cls, plan: ClusterPlan, node: NodeId, role: str, paths: NodePaths,
               overlay: OverlayConfig = OverlayConfig(), templates: Path | None = None) -> NodeFiles:
        assignment = plan.of(node)
        if assignment.mode is K3sMode.NONE:
            return cls(K3sMode.NONE, "", "", assignment.reason)
        tdir = templates or overlay_dir()
        values: dict[str, object] = {
            "node_name": k8s_node_name(node),
            "node_ip": assignment.address,
            "node_labels": [f"{NODE_LABEL}={node}", f"{ROLE_LABEL}={role}"],
            "data_dir": str(paths.data_dir),
            "token_file": str(paths.token_file),
        }
        if assignment.mode is K3sMode.SERVER:
            values.update(tls_san=[assignment.address], kubeconfig=str(paths.kubeconfig),
                          cluster_cidr=overlay.cluster_cidr, service_cidr=overlay.service_cidr)
            if plan.datastore is Datastore.SQLITE:
                values.update(datastore_comment="SQLite through kine (one server)", datastore_lines="")
            elif plan.servers[0] == node:
                values.update(datastore_comment=f"embedded etcd, this server initialises it ({len(plan.servers)} servers)",
                              datastore_lines="cluster-init: true\n")
            else:
                values.update(datastore_comment=f"embedded etcd, joining the first server ({len(plan.servers)} servers)",
                              datastore_lines=f"server: {json.dumps(plan.server_url)}\n")
            text = _fill((tdir / "config/server.yaml").read_text(), values)
        else:
            values["server_url"] = plan.server_url
            text = _fill((tdir / "config/agent.yaml").read_text(), values)
        cni = _fill((tdir / "cni" / CNI_FILE).read_text(), {"pod_cidr": assignment.pod_cidr})
        return cls(assignment.mode, text.rstrip("\n") + "\n", cni, assignment.reason)


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """Atomically replace `path` with `content` if it differs; True when it changed."""
    path = Path(path)
    if path.exists() and path.read_text() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def install_files(files: NodeFiles, paths: NodePaths) -> bool:
    """Write K3s's config and the CNI config; True when either changed (K3s must be restarted)."""
    if files.mode is K3sMode.NONE:
        return False
    changed = write_if_changed(paths.config, files.config, 0o600)
    return write_if_changed(paths.cni_conf, files.cni) or changed
