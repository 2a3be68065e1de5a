"""A VM epoch's pages: the device state packed after guest RAM comes back byte for byte, whatever
its size and whichever RAM pages the image holds; a torn or foreign header is refused, never guessed."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mycelium.ram.epochs import FULL, ReplicationBackup, ReplicationPrimary
from mycelium.ram.vm_device import MAGIC, PAGE, DeviceStateError, pack_device_state, split_image
from mycelium.runtime.manifest_vm import vm_problems

NPAGES = 64
pages = st.dictionaries(st.integers(0, NPAGES - 1), st.binary(min_size=1, max_size=8).map(lambda b: b.ljust(PAGE, b"\0")), max_size=6)


@given(ram=pages, state=st.binary(max_size=5 * PAGE + 17))
def test_device_state_round_trips_beside_any_ram(ram, state):
    image = {**ram, **pack_device_state(state, NPAGES)}
    got_ram, got_state = split_image(image, NPAGES)
    assert got_ram == ram and got_state == state
    assert all(len(p) == PAGE for p in image.values())


@given(old=st.binary(max_size=4 * PAGE), new=st.binary(max_size=2 * PAGE), ram=pages)
def test_a_newer_epoch_replaces_the_device_state_even_when_it_shrinks(old, new, ram):
    # what a backup's image does: the next epoch's pages update the previous ones
    image = {**pack_device_state(old, NPAGES), **ram}
    image.update(pack_device_state(new, NPAGES))
    assert split_image(image, NPAGES)[1] == new


@given(state=st.integers(PAGE + 1, 3 * PAGE).map(lambda n: bytes([7]) * n), drop=st.integers(0, 2))
def test_a_missing_device_page_is_an_error(state, drop):
    image = pack_device_state(state, NPAGES)
    body = sorted(i for i in image if i > NPAGES)
    del image[body[drop % len(body)]]
    with pytest.raises(DeviceStateError, match="missing"):
        split_image(image, NPAGES)


def test_a_foreign_header_and_no_header():
    assert split_image({0: bytes(PAGE)}, NPAGES) == ({0: bytes(PAGE)}, b"")
    with pytest.raises(DeviceStateError, match="not a device-state header"):
        split_image({NPAGES: b"x" * PAGE}, NPAGES)
    with pytest.raises(DeviceStateError, match="says"):
        split_image({NPAGES: MAGIC + (1 << 40).to_bytes(8, "big") + bytes(PAGE - 16)}, NPAGES)


@given(epochs=st.lists(st.tuples(pages, st.binary(max_size=3 * PAGE)), min_size=1, max_size=5))
def test_a_backup_image_holds_the_device_state_of_its_last_committed_epoch(epochs):
    # VM epochs through the unchanged epoch protocol: the backup's image splits into the RAM and the
    # device state of the newest whole epoch
    primary, backup = ReplicationPrimary(1), ReplicationBackup(generation=1)
    primary.add_backup("b")
    ram_now: dict[int, bytes] = {}
    for n, (ram, state) in enumerate(epochs):
        ram_now.update(ram)
        cut = {**(ram_now if n == 0 else ram), **pack_device_state(state, NPAGES)}
        primary.cut(cut, float(n), full=n == 0)
        for send in primary.pump("b"):
            for ack in backup.on_part(send.part):
                primary.on_ack("b", ack, float(n))
    assert backup.committed_epoch == len(epochs) - 1 != FULL
    got_ram, got_state = split_image(backup.image, NPAGES)
    assert got_ram == ram_now and got_state == epochs[-1][1]


@given(memory=st.integers(0, 1 << 36), cpus=st.integers(-2, 40))
def test_vm_block_limits(memory, cpus):
    problems = dict(vm_problems({"image": "testvm", "memory": memory, "cpus": cpus}))
    assert (("memory",) in problems) == (not (64 << 20 <= memory <= 16 << 30 and memory % (1 << 20) == 0))
    assert (("cpus",) in problems) == (not 1 <= cpus <= 16)
