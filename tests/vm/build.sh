#!/usr/bin/env bash
# Build what the real-kernel tests boot: Debian's stock kernel (module unloading on), a busybox
# initramfs, a Debian bookworm root with systemd as PID 1 and nvreload's Python dependencies, and
# the stand-in NVIDIA stack (tests/vm/kmod, tests/stub_libraries) for several driver versions.
# Everything goes to $NVRELOAD_VM_CACHE (default /var/cache/nvreload-vm) under a stamp of every
# input: a second run with the same inputs does nothing. Needs root (mmdebstrap --mode=root,
# mke2fs -d of a root-owned tree); .ci/run installs the host tools first.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${NVRELOAD_VM_CACHE:-/var/cache/nvreload-vm}
# Debian's current stock kernel (what linux-image-amd64 depends on): an old ABI leaves the archive
stock_kernel() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{sub("linux-image-", "", $2); print $2; exit}'; }
KVER=${NVRELOAD_VM_KERNEL:-$(stock_kernel)}
if [ -z "$KVER" ]; then apt-get update -qq; KVER=$(stock_kernel); fi
[ -n "$KVER" ] || { echo "build.sh: linux-image-amd64 is not in the package lists" >&2; exit 2; }
VERSIONS=(580.95.05 580.105.08 580.119.02)
BROKEN=580.126.09  # its nvidia.ko refuses to load (probe fails: "RmInitAdapter failed")
GUEST_PACKAGES=systemd,systemd-sysv,udev,kmod,python3,python3-click,python3-rich,python3-psutil,python3-zstandard,procps,psmisc,util-linux,e2fsprogs
# what the package cases use beside apt: man(1) for nvreload(8), bash-completion's loader for the TAB
GUEST_PACKAGES+=,man-db,bash-completion
# the fleet case reaches the guest with ansible-playbook over SSH (a NIC only that case asks for)
GUEST_PACKAGES+=,openssh-server,iproute2
NVML_PY=nvidia-ml-py==13.615.71

stamp() {
    {
        echo "$KVER ${VERSIONS[*]} $BROKEN $GUEST_PACKAGES $NVML_PY"
        cat "$HERE/build.sh" "$HERE"/kmod/* "$HERE"/guest/* "$REPO"/tests/stub_libraries/*.c
    } | sha256sum | cut -d' ' -f1
}

want=$(stamp)
if [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$want" ] && [ -f "$CACHE/root.img" ]; then
    echo "nvreload VM image is current ($CACHE)"
    exit 0
fi
for tool in mmdebstrap mke2fs cpio busybox qemu-system-x86_64 depmod dpkg-deb make gcc; do
    command -v "$tool" >/dev/null || [ -x "/sbin/$tool" ] || { echo "build.sh: $tool is missing (see .ci/run)" >&2; exit 2; }
done
started=$(date +%s)
rm -f "$CACHE/stamp"
mkdir -p "$CACHE"
WORK=$CACHE/work
rm -rf "$WORK" "$CACHE/share"
mkdir -p "$WORK/debs" "$CACHE/share"

# --- the kernel: downloaded and unpacked, never installed on this machine ---------------------
K=$CACHE/kernel
if [ ! -f "$K/.complete-$KVER" ]; then
    rm -rf "$K"; mkdir -p "$K"
    abi=${KVER%-amd64}
    apt-get update -qq  # stale lists name packages the archive no longer has
    (cd "$WORK/debs" && apt-get download -q "linux-image-$KVER" "linux-headers-$KVER" "linux-headers-$abi-common" "linux-kbuild-${abi%%.0-*}")
    for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$K"; done
    # the arch headers include the common ones by an absolute /usr/src path
    sed -i "s|^include /usr/src/|include $K/usr/src/|" "$K/usr/src/linux-headers-$KVER/Makefile"
    grep -q '^CONFIG_MODULE_UNLOAD=y' "$K/boot/config-$KVER"
    /sbin/depmod -b "$K" "$KVER"
    # an uncompressed vmlinux boots through PVH and skips the bzImage decompressor (slow under TCG)
    python3 - "$K/boot/vmlinuz-$KVER" "$WORK/vmlinux.xz" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"\xfd7zXZ\x00")
assert start > 0, "the kernel image holds no xz payload"
open(sys.argv[2], "wb").write(data[start:])
PY
    xz -dc --single-stream "$WORK/vmlinux.xz" > "$K/vmlinux" || true
    [ -s "$K/vmlinux" ]
    touch "$K/.complete-$KVER"
fi
cp "$K/vmlinux" "$CACHE/vmlinux"

# --- the stand-in NVIDIA stack, one build per driver version -----------------------------------
for version in "${VERSIONS[@]}" "$BROKEN"; do
    build=$WORK/kmod-$version
    cp -r "$HERE/kmod" "$build"
    make -s -C "$K/usr/src/linux-headers-$KVER" M="$build" NV_VERSION="$version" \
        NV_FAIL_DEFAULT="$([ "$version" = "$BROKEN" ] && echo 1 || echo 0)" modules > "$build/make.log" 2>&1 \
        || { cat "$build/make.log" >&2; exit 1; }
    mkdir -p "$CACHE/share/modules/$version" "$CACHE/share/lib/$version"
    cp "$build"/nvidia*.ko "$CACHE/share/modules/$version/"
    [ -f "$CACHE/share/nvtest_gpubus.ko" ] || cp "$build/nvtest_gpubus.ko" "$CACHE/share/"
    gcc -shared -fPIC -Wall -Werror -DSTUB_FROM_KERNEL="\"$version\"" -Wl,-soname,libnvidia-ml.so.1 \
        -o "$CACHE/share/lib/$version/libnvidia-ml.so.$version" "$REPO/tests/stub_libraries/libnvidia-ml.c"
    gcc -shared -fPIC -Wall -Werror -DSTUB_FROM_KERNEL="\"$version\"" -Wl,-soname,libcuda.so.1 \
        -o "$CACHE/share/lib/$version/libcuda.so.$version" "$REPO/tests/stub_libraries/libcuda.c"
done

# --- the guest root ------------------------------------------------------------------------------
ROOT=$WORK/rootfs
mirror=$(awk '/^URIs:/{print $2; exit} /^deb /{print $2; exit}' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)
mmdebstrap --quiet --variant=minbase --mode=root --include="$GUEST_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$ROOT" ${mirror:+"$mirror"}
# the documentation left out above kept the image small; the packages the cases install are whole
rm -f "$ROOT/etc/dpkg/dpkg.cfg.d/99mmdebstrap"
# nvidia-ml-py is not packaged by Debian: its wheel (pure Python) unpacked into the guest
python3 -m pip download -q --no-deps --only-binary=:all: -d "$WORK/wheels" "$NVML_PY"
python3 -m zipfile -e "$WORK"/wheels/nvidia_ml_py-*.whl "$ROOT/usr/local/lib/python3.11/dist-packages/"
echo nvtest > "$ROOT/etc/hostname"
echo 0123456789abcdef0123456789abcdef > "$ROOT/etc/machine-id"
printf '/dev/vda / ext4 rw,noatime 0 0\n' > "$ROOT/etc/fstab"
mkdir -p "$ROOT/src" "$ROOT/job" "$ROOT/vm" "$ROOT/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$ROOT/etc/systemd/journald.conf.d/volatile.conf"
install -m 0644 "$HERE/guest/nvtest-job.service" "$HERE/guest/nvtest.target" "$ROOT/etc/systemd/system/"
install -m 0755 "$HERE/guest/nvidia-smi" "$ROOT/usr/bin/nvidia-smi"
for unit in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
            systemd-tmpfiles-clean.timer getty@tty1.service serial-getty@ttyS0.service systemd-update-utmp.service \
            dpkg-db-backup.timer ssh.service ssh.socket; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done
# the kernel's modules the guest needs, with their dependencies; the relabelled "GPU" bus at boot
mods=$ROOT/lib/modules/$KVER
mkdir -p "$mods/extra"
cp "$K/lib/modules/$KVER"/modules.{builtin,builtin.modinfo,order} "$mods/"
for m in virtio_pci virtio_blk ext4 crc32c_generic 9p 9pnet_virtio ib_core mlx5_core virtio_net; do
    /sbin/modprobe -d "$K" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}'
done | sort -u | while read -r file; do
    rel=${file#"$K"}; mkdir -p "$ROOT$(dirname "$rel")"; cp "$file" "$ROOT$rel"
done
cp "$CACHE/share/nvtest_gpubus.ko" "$mods/extra/"
echo nvtest_gpubus > "$ROOT/etc/modules-load.d/nvtest-gpubus.conf"
/sbin/depmod -b "$ROOT" "$KVER"
rm -f "$CACHE/root.img"
mke2fs -q -t ext4 -L nvtest -d "$ROOT" "$CACHE/root.img" 1G

# --- the initramfs: virtio, ext4 and 9p, then systemd on the real root ---------------------------
I=$WORK/initramfs
mkdir -p "$I"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$(command -v busybox)" "$I/bin/busybox"
for m in virtio_pci virtio_blk crc32c_generic ext4 9pnet_virtio 9p; do
    /sbin/modprobe -d "$K" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r file; do
    cp "$file" "$I/lib/modules/"; basename "$file" >> "$I/modules.list"
done
install -m 0755 "$HERE/guest/initramfs-init" "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet) > "$CACHE/initrd.cpio"

rm -rf "$WORK"
echo "$want" > "$CACHE/stamp"
echo "nvreload VM image built in $(( $(date +%s) - started )) s ($CACHE)"
