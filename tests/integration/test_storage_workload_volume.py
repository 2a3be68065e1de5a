"""A manifest's `volumes:` with a real daemon: a deploy naming a volume that does not exist is refused
with what, why and the next command; a workload whose volume exists finds it mounted (FUSE) at the
declared path in its working directory, reads a file put there with the CLI, writes one, and that
file is then readable with `mycelium storage get`. Undeploying unmounts the volume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mycelium.storage.mount import fuse_unavailable
from tests.integration.daemons import wait_until

REASON = fuse_unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=f"FUSE unavailable: {REASON}")]

FAST = {"MYCELIUM__NODE__HEARTBEAT_S": "1"}

MANIFEST = """\
apiVersion: mycelium/v1
kind: Endomycete
name: {name}
spec:
  command: [sh, -c, "cat data/seed.txt > data/copy.txt && echo written by $MYCELIUM_SERVICE > data/out.txt && exec sleep 600"]
  volumes:
    - name: {volume}
      path: data
"""


def ok(res) -> str:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stdout}\n{res.stderr}"
    return res.stdout


def mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines())


def test_a_deployed_workload_writes_into_its_volume_and_the_cli_reads_it(daemons, tmp_path):
    d = daemons.new()
    try:
        ok(d.up(env=FAST))
        ok(d.cli("network", "create", "vols"))
        wait_until(lambda: d.status()["epoch"] >= 1, timeout=60, what="the first height")
        seed = tmp_path / "seed.txt"
        seed.write_text("seed from the CLI\n")
        wait_until(lambda: d.cli("storage", "put", str(seed), "--volume", "app").returncode == 0, timeout=60,
                   interval=1, what="the store to take the first put (this node a storage device)")

        missing = tmp_path / "missing.yaml"
        missing.write_text(MANIFEST.format(name="lost", volume="nosuch"))
        res = d.cli("deploy", str(missing))
        assert res.returncode != 0
        assert "volume 'nosuch' does not exist" in res.stderr and "mycelium storage put FILE --volume nosuch" in res.stderr, res.stderr
        assert not json.loads(ok(d.cli("services", "--json")))["services"]

        manifest = tmp_path / "writer.yaml"
        manifest.write_text(MANIFEST.format(name="writer", volume="app"))
        ok(d.cli("deploy", str(manifest)))
        out = tmp_path / "out.txt"
        # the shell's `>` creates the file (committed empty, as any created file) before it writes and
        # closes it (committed with its content: close-to-open); CI once read the empty version
        def committed():
            res = d.cli("storage", "get", "out.txt", "--volume", "app", "-o", str(out))
            return res.returncode == 0 and out.read_text() == "written by writer\n"
        wait_until(committed, timeout=120, interval=1, what="the workload's file to be committed with its content")
        copy = tmp_path / "copy.txt"
        ok(d.cli("storage", "get", "copy.txt", "--volume", "app", "-o", str(copy)))
        assert copy.read_text() == seed.read_text()
        mountpoint = d.state_dir / "volumes" / "app" / "mnt"
        assert mounted(mountpoint)
        links = list((d.state_dir / "workloads").glob("*/work/data"))
        assert links and all(p.is_symlink() and p.readlink() == mountpoint for p in links)

        ok(d.cli("undeploy", "writer"))
        wait_until(lambda: not mounted(mountpoint), timeout=60, interval=0.5, what="the volume to be unmounted")
        assert not any(p.is_symlink() for p in (d.state_dir / "workloads").glob("*/work/data"))
    finally:
        d.cli("down", timeout=30)
