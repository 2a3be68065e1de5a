"""A VM epoch's layout in the epoch protocol's pages (pure).

Pages `0 .. npages-1` are guest RAM by guest-physical page index. QEMU's device state (the migration
stream with `x-ignore-shared`: CPU, devices, the small non-shared RAM blocks such as ROMs; ~0.8 MB for
the test guest) follows as pages: page `npages` is a header (magic + length), pages `npages+1 ..` hold
the bytes, the last one zero-padded. Every epoch carries the whole device state, so the newest
committed image always holds the device state of the same instant as its RAM.
"""

from __future__ import annotations

PAGE = 4096
MAGIC = b"MYCVMDEV"
MAX_DEVICE_STATE = 64 << 20  # bigger is not the small machine we start (a VGA would add 16 MiB)


class DeviceStateError(ValueError):
    """The image's device-state pages are missing, torn or oversized; the message says which."""


def pack_device_state(state: bytes, npages: int) -> dict[int, bytes]:
    if len(state) > MAX_DEVICE_STATE:
        raise DeviceStateError(f"device state of {len(state)} bytes exceeds {MAX_DEVICE_STATE}")
    header = MAGIC + len(state).to_bytes(8, "big")
    pages = {npages: header + bytes(PAGE - len(header))}
    for k in range(0, len(state), PAGE):
        chunk = state[k: k + PAGE]
        pages[npages + 1 + k // PAGE] = chunk + bytes(PAGE - len(chunk))
    return pages


def split_image(image: dict[int, bytes], npages: int) -> tuple[dict[int, bytes], bytes]:
    """(RAM pages, device state) of a committed image; b"" when it holds no device state."""
    ram = {i: d for i, d in image.items() if 0 <= i < npages}
    header = image.get(npages)
    if header is None:
        return ram, b""
    if header[:8] != MAGIC:
        raise DeviceStateError(f"page {npages} is not a device-state header")
    length = int.from_bytes(header[8:16], "big")
    if length > MAX_DEVICE_STATE:
        raise DeviceStateError(f"device-state header says {length} bytes (limit {MAX_DEVICE_STATE})")
    chunks = []
    for k in range((length + PAGE - 1) // PAGE):
        page = image.get(npages + 1 + k)
        if page is None:
            raise DeviceStateError(f"device-state page {k} of {length} bytes is missing")
        chunks.append(page)
    return ram, b"".join(chunks)[:length]
