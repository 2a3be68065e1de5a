"""The in-cluster manager's controller loop (the entry point of images/manager).

    python -m mycelium.runtime.k3s.manager --socket /run/mycelium/control.sock      # in the cluster
    python -m mycelium.runtime.k3s.manager --primary-file P.json --kubeconfig K --once   # tests, debugging

Every `--interval` seconds (and at once when the Primary's height changes) it reads the Primary's
services and placements — from the node's control API (`GET /v1/primary`) or a JSON file of the same
shape — generates the desired objects and reconciles them. API errors are logged and retried next
round; it never exits on a transient failure. One JSON line per round on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mycelium.runtime.k3s.manager.objects import desired_objects

from mycelium.api.protocol import PRIMARY as PRIMARY_PATH  # noqa: E402 - GET /v1/primary


def primary_from_socket(socket: Path) -> dict:
    from mycelium.api.client import ControlClient

    return ControlClient(socket).get(PRIMARY_PATH)


def primary_from_file(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def api_client(kubeconfig: str | None):
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


def one_round(read_primary, reconciler) -> dict:
    primary = read_primary()
    objs, skipped = desired_objects(primary.get("services", {}), primary.get("placements", {}))
    report = reconciler.reconcile(objs)
    return {"height": primary.get("height"), "objects": len(objs), "created": report.created,
            "updated": report.updated, "deleted": report.deleted, "unchanged": report.unchanged,
            "conflicts": report.conflicts, "errors": report.errors, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mycelium-manager", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--socket", type=Path, help="the node's control socket")
    source.add_argument("--primary-file", type=Path, help="a JSON file {height, services, placements}")
    parser.add_argument("--kubeconfig", help="default: the in-cluster service account")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between rounds (default 10)")
    parser.add_argument("--once", action="store_true", help="one round, then exit (1 if it had errors)")
    args = parser.parse_args(argv)
    from mycelium.runtime.k3s.manager.reconcile import Reconciler

    read = (lambda: primary_from_socket(args.socket)) if args.socket else (lambda: primary_from_file(args.primary_file))
    reconciler = Reconciler(api_client(args.kubeconfig))
    while True:
        try:
            line = one_round(read, reconciler)
        except Exception as exc:  # noqa: BLE001 - daemon restarting, API server away: report, retry next round
            line = {"errors": [f"{type(exc).__name__}: {exc}"]}
        print(json.dumps(line), flush=True)
        if args.once:
            return 1 if line.get("errors") else 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
