"""Root pytest configuration: simulation seeds and the slow-test switch.

Simulation seeds: a test that takes a `sim_seed` argument runs once per seed:
- by default, for the fixed set `FIXED_SIM_SEEDS` (what CI runs on every push);
- `--sim-seeds N` adds N fresh random seeds (printed in the test id, so a failure names its seed);
- `--sim-seed N` runs ONLY seed N (replay: the failure message prints this exact option).
A seed that ever failed becomes a named regression test next to the test that found it.

`--slow` runs the tests marked `slow` (long soak/chaos variants); without it they are skipped.
"""

from __future__ import annotations

import random

import pytest

FIXED_SIM_SEEDS = (1, 2, 3, 7, 42)
_SEEDS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mycelium")
    group.addoption("--sim-seed", type=int, default=None, metavar="N",
                    help="run simulation tests with this one seed only (replays a failure)")
    group.addoption("--sim-seeds", type=int, default=0, metavar="N",
                    help="run simulation tests with N random seeds in addition to the fixed set")
    group.addoption("--slow", action="store_true", default=False,
                    help="also run long variants marked 'slow'")


def sim_seeds(config: pytest.Config) -> list[int]:
    """The seeds this session runs simulation tests with."""
    only = config.getoption("--sim-seed")
    if only is not None:
        return [only]
    extra = config.getoption("--sim-seeds")
    if extra < 0:
        raise pytest.UsageError(f"--sim-seeds must be >= 0, got {extra}")
    chosen = list(FIXED_SIM_SEEDS)
    system = random.SystemRandom()  # fresh seeds on purpose: the point is to explore; the id records them
    while len(chosen) < len(FIXED_SIM_SEEDS) + extra:
        seed = system.randrange(1, 2**31)
        if seed not in chosen:
            chosen.append(seed)
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SEEDS] = sim_seeds(config)  # computed once, so every test sees the same seeds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        seeds = metafunc.config.stash[_SEEDS]
        metafunc.parametrize("sim_seed", seeds, ids=[f"seed={s}" for s in seeds])


# real daemons, namespaces, QEMU, FUSE … — the install and release tests (venvs, pip, wheels) are a
# scope of their own, so they queue behind tests/fault instead of lengthening tests/integration
REAL_SCOPES = ("tests/integration/test_install", "tests/integration/test_release", "tests/integration/", "tests/fault/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With `-n 2` (what scripts/test uses for the whole suite) the tests that start real processes
    run one at a time per scope: tests/integration on one worker, tests/fault (a 4-validator
    testnet in namespaces) on the other, followed there by the install and release tests, then the
    pure tests (unit, property, sim) wherever a worker is free. So at most two real-process tests
    run at once. (xdist's own `xdist_group` mark does nothing with pytest 9, whose node ids cannot be
    rewritten.)"""
    from xdist.scheduler import LoadScopeScheduling

    class RealProcessesByDirectory(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = next((d for d in REAL_SCOPES if nodeid.startswith(d)), nodeid)
            return "tests/integration/packaging" if scope in REAL_SCOPES[:2] else scope

    # scopes in collection order (fault, integration, packaging, then the pure modules), not largest
    # first: the first two start at once on the two workers, packaging queues second on tests/fault's
    config.option.loadscopereorder = False
    return RealProcessesByDirectory(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
