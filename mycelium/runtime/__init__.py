"""Workloads: manifests, placement, reconciliation and drivers (process now; k3s, qemu later).

    spec.py         ServiceSpec: the integer-only, canonical wire form of a service
    manifest.py     YAML spore manifests -> ServiceSpec, errors with file/line/field (+ manifest.schema.json)
    placement.py    pure: which nodes run which service (weighted rendezvous, selectors, capacity)
    reconciler.py   pure: actions that make this node run what is placed on it
    driver.py       the Driver interface shared by every runtime
    conformance.py  check_driver(make_driver): the suite every driver passes
    runner.py       WorkloadRunner: runs what the Primary places here, on the process driver (trio shell)
    reports.py      service spores: per-replica reports and the network-wide view of each service (pure)
    process.py      the embedded process driver (with leftovers.py, limits.py, logfiles.py, ports.py,
                    probes.py); `python -m mycelium.runtime` checks or runs a manifest locally
"""
