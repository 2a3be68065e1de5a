"""The rules of a VM Endophyte's `spec.vm` block beyond the schema's shapes (pure).

    vm: {image: testvm | {kernel: PATH, initrd: PATH}, memory: 128Mi, cpus: 1}

`memory` arrives already parsed to bytes (manifest.py). Returns (field path, message) pairs.
"""

from __future__ import annotations

from typing import Any

MiB = 1 << 20
MIN_MEMORY, MAX_MEMORY = 64 * MiB, 16 << 30
MAX_CPUS = 16


def vm_problems(vm: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    image = vm.get("image")
    if isinstance(image, str) and image != "testvm":
        out.append((("image",), f"{image!r} is not a known image: use testvm (images/testvm) or "
                                "{kernel: PATH, initrd: PATH}"))
    elif isinstance(image, dict):
        extra = sorted(set(image) - {"kernel", "initrd"})
        if extra:
            out.append((("image",), f"unknown field(s) {', '.join(extra)}: expected kernel and initrd"))
        for key in ("kernel", "initrd"):
            if not isinstance(image.get(key), str) or not image.get(key, "").startswith("/"):
                out.append((("image", key), f"{key} must be an absolute path on the nodes"))
    memory = vm.get("memory", 128 * MiB)
    if isinstance(memory, int) and not (MIN_MEMORY <= memory <= MAX_MEMORY and memory % MiB == 0):
        out.append((("memory",), f"guest memory must be whole MiB between 64Mi and 16Gi, got {memory} bytes"))
    cpus = vm.get("cpus", 1)
    if isinstance(cpus, int) and not 1 <= cpus <= MAX_CPUS:
        out.append((("cpus",), f"cpus must be 1..{MAX_CPUS}"))
    return out
