"""Developer tool: validate manifests, or run one locally on the process driver (no network needed).

    python -m mycelium.runtime check examples/*.yaml
    python -m mycelium.runtime run examples/static-web.yaml     # Ctrl-C stops it cleanly

Exit codes: 0 fine, 2 invalid manifest or failed start.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

import trio

from mycelium.runtime.driver import DriverError, InstanceSpec
from mycelium.runtime.manifest import ManifestError, load_deployable
from mycelium.runtime.process import ProcessDriver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mycelium.runtime", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate manifests")
    check.add_argument("files", nargs="+", type=Path)
    run = sub.add_parser("run", help="run one manifest locally until Ctrl-C")
    run.add_argument("file", type=Path)
    run.add_argument("--state-dir", type=Path, help="where logs and working files go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.command == "check":
        failed = 0
        for file in args.files:
            try:
                spec = load_deployable(file)
                print(f"{file}: ok ({spec.name}, replicas {spec.replicas}, version {spec.version()})")
            except ManifestError as exc:
                print(exc, file=sys.stderr)
                failed += 1
        return 2 if failed else 0
    try:
        spec = load_deployable(args.file)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 2
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix=f"mycelium-{spec.name}-"))
    try:
        trio.run(_run, spec, state_dir)
    except DriverError as exc:
        print(f"cannot start {spec.name}: {exc}", file=sys.stderr)
        return 2
    return 0


async def _run(spec, state_dir: Path) -> None:
    async with ProcessDriver.open(state_dir) as driver:
        handle = await driver.start(InstanceSpec(f"{spec.name}-local", spec))
        status = await driver.status(handle)
        ports = ", ".join(f"{name} http://127.0.0.1:{port}/" for name, port in status.ports.items())
        print(f"{spec.name} started (pid {status.pid}; {ports or 'no ports'}); state in {state_dir}",
              file=sys.stderr)
        print(f"limits: {status.limits}", file=sys.stderr)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_report_states, driver, handle)
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                async for line in driver.logs(handle, follow=True):
                    print(line.decode(errors="replace"), flush=True)
                nursery.cancel_scope.cancel()
        print(f"stopping {spec.name}; logs are in {state_dir}", file=sys.stderr)


async def _cancel_on_signal(signals, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _report_states(driver: ProcessDriver, handle) -> None:
    last = None
    while True:
        status = await driver.status(handle)
        if (status.state, status.message) != last:
            last = (status.state, status.message)
            print(f"[{status.state.value}] restarts={status.restarts} {status.message}", file=sys.stderr)
        await trio.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
