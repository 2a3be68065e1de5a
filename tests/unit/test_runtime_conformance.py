"""The process driver passes the shared driver conformance suite; the suite catches a lying driver."""

from __future__ import annotations

import pytest

from mycelium.runtime import conformance
from mycelium.runtime.conformance import CHECKS
from mycelium.runtime.driver import Driver, InstanceState
from mycelium.runtime.process import ProcessDriver, ProcessDriverConfig

CONFIG = ProcessDriverConfig(stop_grace_s=2.0, log_poll_s=0.02, reap_grace_s=0.5)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_process_driver_conforms(check, tmp_path):
    await check(lambda: ProcessDriver.open(tmp_path / "state", CONFIG))


async def test_process_driver_satisfies_the_protocol(tmp_path):
    async with ProcessDriver.open(tmp_path / "state", CONFIG) as driver:
        assert isinstance(driver, Driver)


class NeverExitsDriver(ProcessDriver):
    """Reports every instance as running forever: the suite must notice."""

    async def status(self, handle):
        real = await super().status(handle)
        return type(real)(real.instance_id, InstanceState.RUNNING, pid=real.pid or 1)


async def test_the_suite_catches_a_driver_that_misreports_exits(tmp_path, monkeypatch):
    monkeypatch.setattr(conformance, "WAIT_S", 1.0)
    with pytest.raises(AssertionError, match="timed out waiting for an exit"):
        await conformance.check_exit_code(lambda: NeverExitsDriver.open(tmp_path / "state", CONFIG))
