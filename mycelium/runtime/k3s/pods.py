"""This node's service pods and their logs, read through the Kubernetes API (blocking: call it in a
worker thread). What the process runner needs once K3s runs the node's replicas (handover.py):
which of this node's pods exist and are ready, and their output for `mycelium logs`.

    reader = PodReader(kubeconfig, k8s_node_name(node_id))
    pods = reader.pods()                  # {service: PodView}, this node's pods of the manager's Deployments
    lines = reader.logs(view, lines=200)  # the pod's container output, last lines

Pods are listed across namespaces by the manager's labels and `spec.nodeName`, and read raw (the
client's strict models refuse some of what kubelets write). On a server the kubeconfig is the admin
one K3s writes; on an agent it is the kubelet's own (node credentials: reading pods is allowed).
"""

from __future__ import annotations

import json
from pathlib import Path

from mycelium.runtime.k3s.handover import SERVICE_LABEL, PodView, pod_view

MANAGED = "app.kubernetes.io/managed-by=mycelium"
MAX_PODS = 1000  # a node runs one pod per service placed on it; more is a listing gone wrong


class PodReadError(Exception):
    """The API server could not be asked; the message says why."""


class PodReader:
    def __init__(self, kubeconfig: Path, node_name: str) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.node_name = node_name
        self._api = None

    def _core(self):
        from kubernetes import client, config  # the k3s extra: imported only where K3s runs

        if self._api is None:
            if not self.kubeconfig.exists():
                raise PodReadError(f"no kubeconfig at {self.kubeconfig} yet")
            self._api = config.new_client_from_config(str(self.kubeconfig))
        return client.CoreV1Api(self._api)

    def _call(self, fn):
        from kubernetes.client.exceptions import ApiException

        try:
            resp = fn(self._core())
            try:
                return resp.read()
            finally:
                resp.release_conn()
        except ApiException as exc:
            raise PodReadError(f"the API server answered {exc.status} {exc.reason}") from exc
        except PodReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - urllib3 connection/TLS errors: the API is not reachable
            self.close()
            raise PodReadError(f"the API server is not reachable: {type(exc).__name__}: {str(exc)[:160]}") from exc

    def pods(self) -> dict[str, PodView]:
        raw = self._call(lambda core: core.list_pod_for_all_namespaces(
            label_selector=f"{MANAGED},{SERVICE_LABEL}", field_selector=f"spec.nodeName={self.node_name}",
            limit=MAX_PODS, _preload_content=False, _request_timeout=5))
        out: dict[str, PodView] = {}
        for item in (json.loads(raw).get("items") or [])[:MAX_PODS]:
            if (item.get("spec") or {}).get("nodeName") != self.node_name:
                continue
            view = pod_view(item)
            if view is not None and (view.service not in out or view.ready):  # a ready one wins over a leftover
                out[view.service] = view
        return out

    def logs(self, pod: PodView, lines: int) -> list[str]:
        namespace, _, name = pod.name.partition("/")
        raw = self._call(lambda core: core.read_namespaced_pod_log(
            name, namespace, tail_lines=max(1, lines), _preload_content=False, _request_timeout=10))
        return raw.decode(errors="replace").splitlines()[-lines:] if lines else []

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
