"""A small Kubernetes API server on loopback, for tests: the API surface the manager and the k3s
driver use, answered the way kube-apiserver answers it (paths, status codes, Status objects,
resourceVersion optimistic concurrency, namespace existence and cascade, immutable clusterIP), so the
real `kubernetes` client runs its real request path against it. Every create/replace body is checked
against the OpenAPI schemas (kubernetes-validate, strict) and refused with 422 like the API server's
validation would; every request is recorded (`FakeKube.requests`) so tests can assert the surface.

Resources served (core v1, apps/v1, networking.k8s.io/v1):
    namespaces (cluster-scoped); configmaps, services, pods; deployments, daemonsets; networkpolicies
Label selectors: equality (`k=v`) and existence (`k`), comma-separated — what the manager sends;
field selector `spec.nodeName=N` on pods.

With `controllers=True` (and a kubelet) it also plays kube-controller-manager and the scheduler for
Deployments, crudely: after every write, each Deployment has one Pod per node its node affinity
names (the first `replicas` of them, on the K3s node name config.k8s_node_name gives that node id),
recreated when the pod template changes; Pods of deleted Deployments or namespaces are killed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

KINDS = {  # (group/version prefix, plural) → kind
    ("api/v1", "namespaces"): "Namespace",
    ("api/v1", "configmaps"): "ConfigMap",
    ("api/v1", "services"): "Service",
    ("api/v1", "pods"): "Pod",
    ("apis/apps/v1", "deployments"): "Deployment",
    ("apis/apps/v1", "daemonsets"): "DaemonSet",
    ("apis/networking.k8s.io/v1", "networkpolicies"): "NetworkPolicy",
}
_PATH = re.compile(r"^/(api/v1|apis/[a-z0-9.-]+/v1)(?:/namespaces/([a-z0-9-]+))?/([a-z]+)(?:/([a-z0-9.-]+))?$")
_LOG_PATH = re.compile(r"^/api/v1/namespaces/([a-z0-9-]+)/pods/([a-z0-9.-]+)/log$")
_NS_PATH = re.compile(r"^/api/v1/namespaces(?:/([a-z0-9-]+))?$")
SCHEMA_VERSION = "1.36.0"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 400 else "Success",
            "message": message, "reason": reason, "code": code}


@dataclass
class FakeKube:
    validate: bool = True
    kubelet: object | None = None  # a mycelium.testing.fake_kubelet.FakeKubelet that runs created Pods
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (kind, namespace, name)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path template)
    _rv: itertools.count = field(default_factory=lambda: itertools.count(1))
    _ips: itertools.count = field(default_factory=lambda: itertools.count(10))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    terminate_after_requests: int = 3  # a deleted namespace stays Terminating for this many requests
    _terminating: dict[str, int] = field(default_factory=dict)
    controllers: bool = False  # run Deployments' Pods (see the module docstring)

    # ------------------------------------------------------------------------------ HTTP glue
    def handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            code, out = 400, status(400, "BadRequest", "request body is not JSON")
        else:
            with self._lock:
                code, out = self.dispatch(req.command, url.path, parse_qs(url.query), body)
                if self.controllers and req.command != "GET":
                    self.sync_deployments()
        raw_text = out.get("__raw__") if isinstance(out, dict) else None
        data = raw_text.encode() if raw_text is not None else json.dumps(out).encode()
        req.send_response(code)
        req.send_header("Content-Type", "text/plain" if raw_text is not None else "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        """Serve on a free loopback port in a thread; returns (server, base URL). Call server.shutdown()."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                if self.path.split("?")[0] in ("/readyz", "/livez"):
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    return
                fake.handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    # ------------------------------------------------------------------------------ the API
    def dispatch(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        log = _LOG_PATH.match(path)
        if log and method == "GET":
            self.requests.append((method, "/api/v1/namespaces/{ns}/pods/{name}/log"))
            if ("Pod", log.group(1), log.group(2)) not in self.objects or self.kubelet is None:
                return 404, status(404, "NotFound", f'pods "{log.group(2)}" not found')
            return 200, {"__raw__": self.kubelet.logs(log.group(2)).decode(errors="replace")}
        for ns in list(self._terminating):  # the namespace controller finishes after a few requests
            self._terminating[ns] -= 1
            if self._terminating[ns] < 0:
                del self._terminating[ns]
                self.objects.pop(("Namespace", "", ns), None)
        m = _NS_PATH.match(path)
        if m:
            prefix, namespace, plural, name = "api/v1", None, "namespaces", m.group(1)
        else:
            m = _PATH.match(path)
            if not m or (m.group(1), m.group(3)) not in KINDS:
                self.requests.append((method, path))
                return 404, status(404, "NotFound", f"the server could not find the requested resource ({path})")
            prefix, namespace, plural, name = m.group(1), m.group(2), m.group(3), m.group(4)
        kind = KINDS[(prefix, plural)]
        template = f"/{prefix}" + ("/namespaces/{ns}" if namespace else "") + f"/{plural}" + ("/{name}" if name else "")
        if kind == "Namespace":
            template = "/api/v1/namespaces" + ("/{name}" if name else "")
        self.requests.append((method, template))
        ns_key = namespace or ""
        if namespace and ("Namespace", "", namespace) not in self.objects and method == "POST":
            return 404, status(404, "NotFound", f'namespaces "{namespace}" not found')
        if namespace in self._terminating and method == "POST":
            return 403, status(403, "Forbidden", f'{plural} is forbidden: unable to create new content in '
                               f'namespace {namespace} because it is being terminated')
        if name is None:
            if method == "GET":
                return self._list(kind, prefix, namespace, query)
            if method == "POST":
                return self._create(kind, prefix, ns_key, body)
            return 405, status(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        key = (kind, ns_key, name)
        if method == "GET":
            obj = self.objects.get(key)
            if obj and kind == "Pod" and self.kubelet is not None:
                obj["status"] = self.kubelet.status(obj)
            return (200, obj) if obj else (404, status(404, "NotFound", f'{plural} "{name}" not found'))
        if method == "PUT":
            return self._replace(key, prefix, body)
        if method == "DELETE":
            if key not in self.objects:
                return 404, status(404, "NotFound", f'{plural} "{name}" not found')
            if kind == "Namespace":
                # kube-apiserver answers with the Namespace itself, now Terminating (not the V1Status
                # the OpenAPI document promises); the namespace controller empties it, then it goes
                ns_obj = self.objects[key]
                ns_obj["metadata"].setdefault("deletionTimestamp", _now())
                ns_obj["status"] = {"phase": "Terminating"}
                for other in [k for k in self.objects if k[1] == name]:
                    gone = self.objects.pop(other)
                    if other[0] == "Pod":
                        self._kill(gone)
                self._terminating[name] = self.terminate_after_requests
                return 200, ns_obj
            deleted = self.objects.pop(key)
            if kind == "Pod" and self.kubelet is not None:  # graceful: SIGTERM, SIGKILL after the grace period
                grace = float(query.get("gracePeriodSeconds", [(body or {}).get("gracePeriodSeconds", 30)])[0])
                deleted["status"] = self.kubelet.kill_pod(deleted, grace)
                deleted["metadata"]["deletionTimestamp"] = _now()
                return 200, deleted  # kube-apiserver answers a Pod's DELETE with the Pod
            if kind == "Service":  # a Service's DELETE is answered with the deleted object, too
                return 200, deleted
            return 200, {**status(200, "", ""), "details": {"name": name, "kind": plural}}
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported here")

    def _list(self, kind: str, prefix: str, namespace: str | None, query: dict) -> tuple[int, dict]:
        selector = query.get("labelSelector", [""])[0]
        try:
            match = _selector(selector)
        except ValueError as exc:
            return 400, status(400, "BadRequest", str(exc))
        node = query.get("fieldSelector", [""])[0].removeprefix("spec.nodeName=") if kind == "Pod" else ""
        items = [o for (k, ns, _), o in sorted(self.objects.items())
                 if k == kind and (namespace is None or ns == namespace) and match(o["metadata"].get("labels", {}))
                 and (not node or (o.get("spec") or {}).get("nodeName") == node)]
        if kind == "Pod" and self.kubelet is not None:
            for o in items:
                o["status"] = self.kubelet.status(o)
        api_version = prefix.removeprefix("api/").removeprefix("apis/")
        return 200, {"kind": f"{kind}List", "apiVersion": api_version,
                     "metadata": {"resourceVersion": str(next(self._rv))}, "items": items}

    def _check(self, kind: str, prefix: str, namespace: str, body) -> tuple[int, dict] | None:
        if not isinstance(body, dict) or body.get("kind") != kind:
            return 400, status(400, "BadRequest", f"body must be a {kind}")
        api_version = prefix.removeprefix("api/").removeprefix("apis/")
        if body.get("apiVersion") != api_version:
            return 400, status(400, "BadRequest", f"apiVersion {body.get('apiVersion')!r} is not {api_version}")
        meta = body.get("metadata") or {}
        if namespace and meta.get("namespace", namespace) != namespace:
            return 400, status(400, "BadRequest", "the namespace of the object does not match the request's")
        if self.validate:
            import kubernetes_validate

            clean = {k: v for k, v in body.items() if k != "status"}
            clean["metadata"] = {k: v for k, v in meta.items()
                                 if k not in ("resourceVersion", "uid", "creationTimestamp", "generation")}
            try:
                kubernetes_validate.validate(clean, SCHEMA_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                return 422, status(422, "Invalid", f"{kind} is invalid: {exc.message}")
        return None

    def _create(self, kind: str, prefix: str, namespace: str, body) -> tuple[int, dict]:
        problem = self._check(kind, prefix, namespace, body)
        if problem:
            return problem
        name = body["metadata"].get("name")
        if not name:
            return 422, status(422, "Invalid", "metadata.name: Required value")
        key = (kind, namespace, name)
        if key in self.objects:
            return 409, status(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
        obj = json.loads(json.dumps(body))
        meta = obj["metadata"]
        if namespace:
            meta["namespace"] = namespace
        meta.update(uid=f"uid-{next(self._rv)}", resourceVersion=str(next(self._rv)), creationTimestamp=_now(),
                    generation=1)
        if kind == "Service":
            obj["spec"]["clusterIP"] = f"10.43.0.{next(self._ips)}"
            obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
        if kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        self.objects[key] = obj
        if kind == "Pod" and self.kubelet is not None:
            try:
                self.kubelet.run_pod(obj)
            except Exception as exc:  # noqa: BLE001 - the stand-in kubelet failed to run it: the pod says so
                obj["status"] = {"phase": "Failed", "message": str(exc)}
        return 201, obj

    def _replace(self, key: tuple[str, str, str], prefix: str, body) -> tuple[int, dict]:
        kind, namespace, name = key
        problem = self._check(kind, prefix, namespace, body)
        if problem:
            return problem
        old = self.objects.get(key)
        if old is None:
            return 404, status(404, "NotFound", f'{kind.lower()}s "{name}" not found')
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if not rv:
            return 422, status(422, "Invalid", "metadata.resourceVersion: Invalid value: 0: must be specified for an update")
        if rv != old["metadata"]["resourceVersion"]:
            return 409, status(409, "Conflict", f'Operation cannot be fulfilled on {kind.lower()}s "{name}": the object '
                               "has been modified; please apply your changes to the latest version and try again")
        obj = json.loads(json.dumps(body))
        if kind == "Service":
            ip = obj["spec"].get("clusterIP")
            if ip and ip != old["spec"]["clusterIP"]:
                return 422, status(422, "Invalid", "spec.clusterIP: Invalid value: field is immutable")
            obj["spec"]["clusterIP"], obj["spec"]["clusterIPs"] = old["spec"]["clusterIP"], old["spec"]["clusterIPs"]
        meta = obj["metadata"]
        meta.update(uid=old["metadata"]["uid"], creationTimestamp=old["metadata"]["creationTimestamp"],
                    resourceVersion=str(next(self._rv)), generation=old["metadata"].get("generation", 1) + 1)
        if namespace:
            meta["namespace"] = namespace
        if "status" in old:
            obj["status"] = old["status"]
        self.objects[key] = obj
        return 200, obj

    # ------------------------------------------------------------------------------ controllers
    def _kill(self, pod: dict) -> None:
        if self.kubelet is not None:
            try:
                self.kubelet.kill_pod(pod, 1.0)
            except Exception:  # noqa: BLE001 - never ran (its start failed) or already gone
                pass

    def sync_deployments(self) -> None:
        """One pass of the crude Deployment controller + scheduler (called with the lock held)."""
        from mycelium.runtime.k3s.config import k8s_node_name

        wanted: dict[tuple[str, str, str], dict] = {}
        for (kind, ns, name), dep in list(self.objects.items()):
            if kind != "Deployment":
                continue
            template = dep["spec"]["template"]
            digest = hashlib.blake2b(json.dumps(template, sort_keys=True).encode(), digest_size=4).hexdigest()
            terms = template["spec"].get("affinity", {}).get("nodeAffinity", {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
            nodes = sorted(v for t in terms for e in t.get("matchExpressions", []) for v in e.get("values", []))
            for node in nodes[: dep["spec"].get("replicas", 1)]:
                node_name = k8s_node_name(node)
                pod_name = f"{name}-{digest}-{node_name[-5:]}"
                spec = {k: v for k, v in template["spec"].items() if k != "affinity"}
                wanted[("Pod", ns, pod_name)] = {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                      "uid": dep["metadata"]["uid"], "controller": True}],
                                 "uid": f"uid-{next(self._rv)}", "resourceVersion": str(next(self._rv)),
                                 "creationTimestamp": _now()},
                    "spec": {**spec, "nodeName": node_name, "restartPolicy": "Always"}}
        for key, pod in list(self.objects.items()):
            owned = any(r.get("kind") == "Deployment" for r in pod.get("metadata", {}).get("ownerReferences", []))
            if key[0] == "Pod" and owned and key not in wanted:
                del self.objects[key]
                self._kill(pod)
        for key, pod in wanted.items():
            if key not in self.objects:
                self.objects[key] = pod
                if self.kubelet is not None:
                    try:
                        self.kubelet.run_pod(pod)
                    except Exception as exc:  # noqa: BLE001 - as in _create: the pod says why
                        pod["status"] = {"phase": "Failed", "message": str(exc)}


def _selector(text: str):
    terms = [t.strip() for t in text.split(",") if t.strip()]
    parsed = []
    for t in terms:
        if "!=" in t or " in " in t or "(" in t:
            raise ValueError(f"unable to parse requirement: {t!r} (this fake knows = and existence only)")
        k, eq, v = t.partition("=")
        parsed.append((k.rstrip("="), v.lstrip("=") if eq else None))
    return lambda labels: all(k in labels and (v is None or labels[k] == v) for k, v in parsed)
