"""A stand-in for the `k3s` binary (none is installable on our build machines), for tests only.

    python -m mycelium.testing.k3s_standin server --config FILE     (or: agent --config FILE)
    python -m mycelium.testing.k3s_standin token rotate --data-dir D --server URL --new-token NEW   (old: $K3S_TOKEN)

It appends its argv to $MYCELIUM_STANDIN_RECORD (one JSON line per start), then behaves as
$MYCELIUM_STANDIN_BEHAVIOUR says:
    ready  (default) a server writes the kubeconfig named by `write-kubeconfig` in its config file,
           pointing at a loopback HTTP server that answers /readyz "ok" and — when
           $MYCELIUM_STANDIN_API is set — the recorded Kubernetes API surface of
           mycelium.testing.fake_kube; an agent answers /healthz "ok" on $MYCELIUM_STANDIN_AGENT_PORT
    never  the same servers, but /readyz and /healthz answer 500 forever
    crash  prints a line and exits with code 1 at once
$MYCELIUM_STANDIN_CONTROL names a file read on every probe: when it says `never`, /readyz and /healthz
answer 500 (K3s stopped being ready) until it says something else. With $MYCELIUM_STANDIN_KUBELET
(a directory) the API server's Pods run as local processes (mycelium.testing.fake_kubelet) and its
Deployments get Pods on the nodes their affinity names (FakeKube.controllers).
Like K3s, a server keeps its datastore's token in <data-dir>/server/token: the first start writes
it, a later start with a different token-file exits 1 ("bootstrap data … different token"), and
`token rotate` (recorded too) checks the old token against it, asks the running server's /readyz at
--server, and replaces it.
SIGTERM exits 0, as K3s does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


def _record(argv: list[str], **extra) -> None:
    path = os.environ.get("MYCELIUM_STANDIN_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"argv": argv, "pid": os.getpid(), **extra}) + "\n")


def _config(argv: list[str]) -> dict:
    if "--config" in argv:
        with open(argv[argv.index("--config") + 1]) as f:
            return yaml.safe_load(f) or {}
    return {}


def _ready_now(ready: bool) -> bool:
    control = os.environ.get("MYCELIUM_STANDIN_CONTROL")
    if ready and control and os.path.exists(control):
        with open(control) as f:
            return f.read().strip() != "never"
    return ready


def _health_handler(path: str, ready_at_start: bool, api=None):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.split("?")[0] == path:
                ready = _ready_now(ready_at_start)
                body = b"ok" if ready else b"[-]etcd failed: reason withheld\nreadyz check failed"
                self.send_response(200 if ready else 500)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif api is not None:
                api.handle(self)
            else:
                self.send_error(404)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, fmt, *args) -> None:
            print("standin:", fmt % args, flush=True)

    return Handler


def write_kubeconfig(path: str, port: int) -> None:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "default",
           "clusters": [{"name": "default", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
           "users": [{"name": "default", "user": {"token": "standin"}}],
           "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(doc, f)
    os.replace(tmp, path)


STANDIN_VERSION = "k3s version v1.36.2+k3s1 (standin)"


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def token_rotate(argv: list[str]) -> int:
    import urllib.request

    old = _flag(argv, "--token") or os.environ.get("K3S_TOKEN")
    new, data_dir, server = _flag(argv, "--new-token"), _flag(argv, "--data-dir"), _flag(argv, "--server")
    if not (old and new and data_dir and server):
        print("standin: token rotate needs --token (or $K3S_TOKEN), --new-token, --data-dir and --server", file=sys.stderr)
        return 2
    stored = os.path.join(data_dir, "server", "token")
    try:
        with open(stored) as f:
            current = f.read().strip()
        with urllib.request.urlopen(server.replace("https://", "http://") + "/readyz", timeout=5) as resp:
            if resp.read().strip() != b"ok":
                raise OSError("the server is not ready")
    except OSError as exc:
        print(f"standin: token rotate: no running server at {server} with data in {data_dir}: {exc}", file=sys.stderr)
        return 1
    if current != old:
        print("level=fatal msg=\"standin: token rotate: the existing token does not match\"", file=sys.stderr)
        return 1
    tmp = stored + ".tmp"
    with open(tmp, "w") as f:
        f.write(new + "\n")
    os.replace(tmp, stored)
    print("Token rotated, restart k3s nodes with new token")
    return 0


def _check_datastore_token(cfg: dict) -> str | None:
    """Like K3s: the first server start keeps the token; a different one later is refused."""
    if not cfg.get("token-file") or not cfg.get("data-dir"):
        return None
    with open(cfg["token-file"]) as f:
        token = f.read().strip()
    stored = os.path.join(cfg["data-dir"], "server", "token")
    if not os.path.exists(stored):
        os.makedirs(os.path.dirname(stored), exist_ok=True)
        with open(stored, "w") as f:
            f.write(token + "\n")
        return None
    with open(stored) as f:
        if f.read().strip() != token:
            return "bootstrap data already found and encrypted with different token"
    return None


def main(argv: list[str]) -> int:
    if argv[:2] == ["token", "rotate"]:
        _record(argv, K3S_TOKEN=bool(os.environ.get("K3S_TOKEN")))
        return token_rotate(argv[2:])
    if argv[:1] in (["--version"], ["-v"]):
        print(STANDIN_VERSION)
        print("go version go1.24 (mycelium stand-in: tests only)")
        return 0
    _record(argv)
    behaviour = os.environ.get("MYCELIUM_STANDIN_BEHAVIOUR", "ready")
    mode = argv[0] if argv else ""
    print(f"standin k3s {mode}: {behaviour}", flush=True)
    if behaviour == "crash":
        print("level=fatal msg=\"standin: crashing as asked\"", flush=True)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ready = behaviour == "ready"
    cfg = _config(argv)
    kubelet = None
    if mode == "server":
        problem = _check_datastore_token(cfg)
        if problem:
            print(f"level=fatal msg=\"starting kubernetes: preparing server: {problem}\"", flush=True)
            return 1
        api = None
        if os.environ.get("MYCELIUM_STANDIN_API"):
            from mycelium.testing.fake_kube import FakeKube
            if os.environ.get("MYCELIUM_STANDIN_KUBELET"):
                from mycelium.testing.fake_kubelet import FakeKubelet
                kubelet = FakeKubelet(os.environ["MYCELIUM_STANDIN_KUBELET"])
            api = FakeKube(kubelet=kubelet, controllers=kubelet is not None)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _health_handler("/readyz", ready, api))
        write_kubeconfig(cfg["write-kubeconfig"], httpd.server_address[1])
    elif mode == "agent":
        port = int(os.environ.get("MYCELIUM_STANDIN_AGENT_PORT", "10248"))
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _health_handler("/healthz", ready))
    else:
        print(f"standin: unknown mode {mode!r}", file=sys.stderr, flush=True)
        return 2
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    stop.wait()
    httpd.shutdown()
    if kubelet is not None:
        kubelet.close()  # unlike a real K3s, the stand-in takes its pods with it
    print("standin: stopped on SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
