"""A stand-in for the `k3s` binary (none is installable on our build machines), for tests only.

    python -m mycelium.testing.k3s_standin server --config FILE     (or: agent --config FILE)

It appends its argv to $MYCELIUM_STANDIN_RECORD (one JSON line per start), then behaves as
$MYCELIUM_STANDIN_BEHAVIOUR says:
    ready  (default) a server writes the kubeconfig named by `write-kubeconfig` in its config file,
           pointing at a loopback HTTP server that answers /readyz "ok" and — when
           $MYCELIUM_STANDIN_API is set — the recorded Kubernetes API surface of
           mycelium.testing.fake_kube; an agent answers /healthz "ok" on $MYCELIUM_STANDIN_AGENT_PORT
    never  the same servers, but /readyz and /healthz answer 500 forever
    crash  prints a line and exits with code 1 at once
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


def _record(argv: list[str]) -> None:
    path = os.environ.get("MYCELIUM_STANDIN_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"argv": argv, "pid": os.getpid()}) + "\n")


def _config(argv: list[str]) -> dict:
    if "--config" in argv:
        with open(argv[argv.index("--config") + 1]) as f:
            return yaml.safe_load(f) or {}
    return {}


def _health_handler(path: str, ready: bool, api=None):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.split("?")[0] == path:
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


def main(argv: list[str]) -> int:
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
    if mode == "server":
        api = None
        if os.environ.get("MYCELIUM_STANDIN_API"):
            from mycelium.testing.fake_kube import FakeKube
            api = FakeKube()
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
    print("standin: stopped on SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
