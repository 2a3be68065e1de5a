"""From a lease's `spec.vm` to a `GuestVM` on this node (shell: resolves the guest's files).

    vm: {image: testvm, memory: 128Mi, cpus: 1}
    vm: {image: {kernel: /path/vmlinuz, initrd: /path/initrd.img}, memory: 256Mi}

`testvm` is the tiny test guest (images/testvm, built from Debian packages and cached on first use);
otherwise a kernel + initrd that exist on every node that may run it. The manifest check
(runtime/manifest.py) has validated the shape; here the files are looked up.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from mycelium.ram.qemu import GuestImage
from mycelium.ram.vm import GuestVM, VmEndophyteError

DEFAULT_MEMORY = 128 << 20


@lru_cache(maxsize=1)
def _test_guest() -> GuestImage:
    return GuestImage.test_guest()  # runs images/testvm/build.sh (apt-cache, hashes): once per daemon


def guest_image(image: str | dict) -> GuestImage:
    if image == "testvm":
        guest = _test_guest()
        if guest.kernel.is_file() and guest.initrd.is_file():
            return guest
        _test_guest.cache_clear()  # the cache was cleaned under us: build again
        return _test_guest()
    if isinstance(image, dict):
        kernel, initrd = Path(image["kernel"]), Path(image["initrd"])
        missing = [str(p) for p in (kernel, initrd) if not p.is_file()]
        if missing:
            raise VmEndophyteError(f"the guest's {', '.join(missing)} do not exist on this node")
        return GuestImage(kernel, initrd)
    raise VmEndophyteError(f"vm.image {image!r}: expected testvm or {{kernel, initrd}}")


def guest_vm(name: str, vm_spec: dict, workdir: Path) -> GuestVM:
    memory = int(vm_spec.get("memory", DEFAULT_MEMORY))
    return GuestVM(name, guest_image(vm_spec["image"]), workdir, memory_mib=memory >> 20,
                   cpus=int(vm_spec.get("cpus", 1)))
