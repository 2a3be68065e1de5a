#!/bin/sh
# Build the tiny Endophyte test guest from Debian packages: the distribution kernel (linux-image-amd64)
# and a busybox initramfs whose init runs memwriter (memory writer with an integrity check + TCP
# responder on port 7000). No download from anywhere but the Debian mirror apt already uses.
#
#   images/testvm/build.sh [OUT_DIR]    # default ~/.cache/mycelium/testvm; prints OUT_DIR
#
# OUT_DIR gets vmlinuz and initrd.img (cpio.gz). Rebuilt only when memwriter.c, init or this script
# change (a stamp of their hash). Needs: apt-get (download only, no install), dpkg-deb, cpio, gcc with
# static glibc (libc6-dev).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/mycelium/testvm}
kernel_pkg=${TESTVM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')}
stamp=$(cat "$here/build.sh" "$here/memwriter.c" "$here/init" | sha256sum | cut -c1-16)-$kernel_pkg
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
    echo "$out"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/deb" "$work/k" "$work/bb" "$work/root"
(cd "$work/deb" && apt-get download "$kernel_pkg" busybox-static >/dev/null 2>&1) || {
    echo "build.sh: apt-get download $kernel_pkg busybox-static failed (is apt-get update done?)" >&2; exit 1; }
dpkg-deb -x "$work"/deb/linux-image-*.deb "$work/k"
dpkg-deb -x "$work"/deb/busybox-static_*.deb "$work/bb"
r=$work/root
mkdir -p "$r/bin" "$r/sbin" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/lib/modules"
cp "$work/bb/bin/busybox" "$r/bin/busybox"
for applet in sh mount ip insmod sleep cat echo poweroff; do ln -s busybox "$r/bin/$applet"; done
find "$work/k/lib/modules" -name 'e1000.ko*' -exec cp {} "$r/lib/modules/" \;
gcc -O2 -static -Wall -o "$r/bin/memwriter" "$here/memwriter.c"
cp "$here/init" "$r/init"
chmod 755 "$r/init"
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.tmp"
cp "$work"/k/boot/vmlinuz-* "$out/vmlinuz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$stamp" > "$out/stamp"
echo "$out"
