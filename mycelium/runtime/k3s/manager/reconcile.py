"""Brings the cluster to the desired objects through the `kubernetes` client — creating, updating
and deleting only what the manager owns.

Owned = labelled app.kubernetes.io/managed-by=mycelium *and* mycelium.io/service=<S>. An object with
the name we want but without those labels belongs to someone else: it is left alone and reported
as a conflict (and that service's other objects are not touched either). Updates happen only when
the generated content changed (the `mycelium.io/spec-hash` annotation), as a full replace carrying
the live resourceVersion (optimistic concurrency: a concurrent writer makes it retry next round);
a Service keeps its assigned clusterIP. Deletion: owned namespaces of services no longer desired
(cascading to everything in them — so a namespace that also holds objects that are not ours is kept,
and only our objects in it are deleted), and owned objects inside a desired namespace that are no
longer generated (e.g. the Service of a service whose ports were removed). A namespace still
Terminating is waited for. Deletes read the answer raw: kube-apiserver answers a Namespace's or a
Service's DELETE with the object, where the client's models expect a V1Status. Blocking: run it in
a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mycelium.runtime.k3s.manager.objects import MANAGED_BY, SERVICE_LABEL, SPEC_HASH

OWNED = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
NAMESPACED_KINDS = ("ConfigMap", "Deployment", "DaemonSet", "Service", "NetworkPolicy")


@dataclass
class ReconcileReport:
    created: list[str] = field(default_factory=list)  # "Kind namespace/name"
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)  # objects we would own but someone else does
    errors: list[str] = field(default_factory=list)  # API errors; retried next round


def _ident(obj: dict) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")


class Reconciler:
    def __init__(self, api: client.ApiClient) -> None:
        core, apps, net = client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)
        self.api = api
        self._ops = {  # kind → (read, create, replace, delete, list) for namespaced kinds
            "ConfigMap": (core.read_namespaced_config_map, core.create_namespaced_config_map,
                          core.replace_namespaced_config_map, core.delete_namespaced_config_map,
                          core.list_namespaced_config_map),
            "Service": (core.read_namespaced_service, core.create_namespaced_service, core.replace_namespaced_service,
                        core.delete_namespaced_service, core.list_namespaced_service),
            "Deployment": (apps.read_namespaced_deployment, apps.create_namespaced_deployment,
                           apps.replace_namespaced_deployment, apps.delete_namespaced_deployment,
                           apps.list_namespaced_deployment),
            "DaemonSet": (apps.read_namespaced_daemon_set, apps.create_namespaced_daemon_set,
                          apps.replace_namespaced_daemon_set, apps.delete_namespaced_daemon_set,
                          apps.list_namespaced_daemon_set),
            "NetworkPolicy": (net.read_namespaced_network_policy, net.create_namespaced_network_policy,
                              net.replace_namespaced_network_policy, net.delete_namespaced_network_policy,
                              net.list_namespaced_network_policy),
        }
        self.core = core

    # ------------------------------------------------------------------------------ calls
    def _read(self, kind: str, name: str, namespace: str | None) -> dict | None:
        try:
            if kind == "Namespace":
                live = self.core.read_namespace(name)
            else:
                live = self._ops[kind][0](name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(live)

    def _write(self, verb: str, obj: dict) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        if kind == "Namespace":
            (self.core.create_namespace(obj) if verb == "create" else self.core.replace_namespace(meta["name"], obj))
        elif verb == "create":
            self._ops[kind][1](meta["namespace"], obj)
        else:
            self._ops[kind][2](meta["name"], meta["namespace"], obj)

    def _list_owned(self, kind: str, namespace: str | None, selector: str) -> list[dict]:
        if kind == "Namespace":
            items = self.core.list_namespace(label_selector=selector).items
        else:
            items = self._ops[kind][4](namespace, label_selector=selector).items
        return [self.api.sanitize_for_serialization(i) for i in items]

    def _delete(self, kind: str, name: str, namespace: str | None) -> None:
        # _preload_content=False: kube-apiserver answers some DELETEs with the deleted object (a
        # Namespace, now Terminating; a Service) where the client expects a V1Status, and the
        # client's strict models refuse it. We only need the status code (errors still raise).
        if kind == "Namespace":
            resp = self.core.delete_namespace(name, _preload_content=False)
        else:
            resp = self._ops[kind][3](name, namespace, _preload_content=False)
        resp.read()
        resp.release_conn()

    # ------------------------------------------------------------------------------ the loop body
    def _ensure(self, obj: dict, report: ReconcileReport) -> bool:
        """Create or update one object; False when someone else owns it."""
        meta = obj["metadata"]
        live = self._read(obj["kind"], meta["name"], meta.get("namespace"))
        if live is None:
            self._write("create", obj)
            report.created.append(_ident(obj))
            return True
        if live["metadata"].get("deletionTimestamp"):
            report.errors.append(f"{_ident(obj)} is still being deleted; created again once it is gone")
            return False
        labels = (live.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY[0]) != MANAGED_BY[1] or labels.get(SERVICE_LABEL) != meta["labels"][SERVICE_LABEL]:
            report.conflicts.append(f"{_ident(obj)} exists and is not ours (no {OWNED} label): left alone")
            return False
        if ((live["metadata"].get("annotations") or {}).get(SPEC_HASH)) == meta["annotations"][SPEC_HASH]:
            report.unchanged += 1
            return True
        body = {**obj, "metadata": {**meta, "resourceVersion": live["metadata"]["resourceVersion"]}}
        if obj["kind"] == "Service":
            body["spec"] = {**obj["spec"], "clusterIP": live["spec"].get("clusterIP")}
        self._write("replace", body)
        report.updated.append(_ident(obj))
        return True

    def _retire_namespace(self, name: str, service: str, report: ReconcileReport) -> None:
        """Delete an owned namespace — unless something that is not ours lives in it (deleting the
        namespace would delete that too): then delete only our objects and keep the namespace."""
        foreign = []
        for kind in NAMESPACED_KINDS:
            for live in self._list_owned(kind, name, ""):
                labels = live["metadata"].get("labels") or {}
                if labels.get(MANAGED_BY[0]) != MANAGED_BY[1] or labels.get(SERVICE_LABEL) != service:
                    foreign.append(f"{kind} {live['metadata']['name']}")
        if not foreign:
            self._delete("Namespace", name, None)
            report.deleted.append(f"Namespace {name}")
            return
        for kind in NAMESPACED_KINDS:
            for live in self._list_owned(kind, name, f"{OWNED},{SERVICE_LABEL}={service}"):
                self._delete(kind, live["metadata"]["name"], name)
                report.deleted.append(f"{kind} {name}/{live['metadata']['name']}")
        report.conflicts.append(f"Namespace {name} kept: it holds objects that are not ours ({', '.join(foreign)})")

    def reconcile(self, desired: list[dict]) -> ReconcileReport:
        report = ReconcileReport()
        by_ns: dict[str, list[dict]] = {}
        namespaces = {o["metadata"]["name"]: o for o in desired if o["kind"] == "Namespace"}
        for obj in desired:
            if obj["kind"] != "Namespace":
                by_ns.setdefault(obj["metadata"]["namespace"], []).append(obj)
        for ns_name, ns_obj in sorted(namespaces.items()):
            try:
                if not self._ensure(ns_obj, report):
                    continue
                service = ns_obj["metadata"]["labels"][SERVICE_LABEL]
                objs = by_ns.get(ns_name, [])
                ours = True
                for obj in objs:
                    ours = self._ensure(obj, report) and ours
                if not ours:
                    continue
                wanted = {(o["kind"], o["metadata"]["name"]) for o in objs}
                for kind in NAMESPACED_KINDS:
                    for live in self._list_owned(kind, ns_name, f"{OWNED},{SERVICE_LABEL}={service}"):
                        if (kind, live["metadata"]["name"]) not in wanted:
                            self._delete(kind, live["metadata"]["name"], ns_name)
                            report.deleted.append(f"{kind} {ns_name}/{live['metadata']['name']}")
            except ApiException as exc:
                report.errors.append(f"{ns_name}: {exc.status} {exc.reason}: {str(exc.body)[:200]}")
        try:
            for live in self._list_owned("Namespace", None, f"{OWNED},{SERVICE_LABEL}"):
                name = live["metadata"]["name"]
                if name not in namespaces and not live["metadata"].get("deletionTimestamp"):
                    self._retire_namespace(name, live["metadata"]["labels"][SERVICE_LABEL], report)
        except ApiException as exc:
            report.errors.append(f"namespaces: {exc.status} {exc.reason}")
        return report
