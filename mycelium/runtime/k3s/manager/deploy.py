"""The manager's manifest for K3s's auto-deploy directory, from k3s-overlay/manifests (pure render)
and the writer the daemon calls once the API server is ready."""

from __future__ import annotations

import json
import string
from pathlib import Path

from mycelium.runtime.k3s.config import MANAGER_MANIFEST, NodePaths, overlay_dir, write_if_changed

MANAGER_IMAGE = "ghcr.io/mycelium-network/manager"  # built from images/manager/Dockerfile, tagged with the version


def render_manager_manifest(*, state_dir: Path, image: str, node: str, templates: Path | None = None) -> str:
    text = ((templates or overlay_dir()) / "manifests" / MANAGER_MANIFEST).read_text()
    values = {"image": image, "node": node, "control_socket": str(Path(state_dir) / "control.sock")}
    return string.Template(text).substitute({k: json.dumps(v) for k, v in values.items()})


def install_manager(paths: NodePaths, *, state_dir: Path, image: str, node: str) -> bool:
    """Write the manifest into K3s's auto-deploy dir; True when it changed (K3s re-applies it)."""
    return write_if_changed(paths.manifests_dir / MANAGER_MANIFEST,
                            render_manager_manifest(state_dir=state_dir, image=image, node=node))
