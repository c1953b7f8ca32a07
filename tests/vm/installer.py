"""A `.run` shaped like NVIDIA's installer, built on this machine for the guest: a real makeself
archive (with NVIDIA's label) around a stand-in nvidia-installer that takes the real one's flags,
refuses while an nvidia module is loaded, replaces the modules and libraries of the version it
carries, and logs its command line to /var/log/nvidia-installer.log.

NVIDIA's archive header hands every flag it does not know to nvidia-installer (`sh NVIDIA-*.run
--silent`), where stock makeself refuses them; the stand-in's header is Debian's makeself header
with that one case changed to do the same."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MAKESELF_HEADER = Path("/usr/share/makeself/makeself-header.sh")

INSTALLER = r"""#!/bin/bash
# stand-in nvidia-installer for version @VERSION@
echo "nvidia-installer $*" >> /var/log/nvidia-installer.log
silent=0 questions=1 skip_load=0
for arg in "$@"; do
    case "$arg" in
        -s|--silent) silent=1 ;;
        --no-questions) questions=0 ;;
        --ui=none|--accept-license|--no-x-check|--no-nouveau-check) ;;
        --skip-module-load) skip_load=1 ;;
        --kernel-module-type=open|--kernel-module-type=proprietary) ;;
        *) echo "ERROR: Unrecognized option: '$arg'"; exit 1 ;;
    esac
done
if [ $silent = 0 ] && [ $questions = 1 ]; then echo "ERROR: Unable to ask questions without a terminal"; exit 1; fi
if [ -e /sys/module/nvidia ]; then
    echo "ERROR: An NVIDIA kernel module 'nvidia' appears to already be loaded in your kernel."; exit 1
fi
@FAILURE@
kver=$(uname -r)
rm -f /lib/modules/$kver/updates/dkms/nvidia*.ko   # the previous installation
mkdir -p /lib/modules/$kver/kernel/drivers/video
cp nvidia*.ko /lib/modules/$kver/kernel/drivers/video/
depmod -a
libdir=/usr/lib/x86_64-linux-gnu
rm -f $libdir/libnvidia-ml.so.* $libdir/libcuda.so.*
cp libnvidia-ml.so.@VERSION@ libcuda.so.@VERSION@ $libdir/
ln -sf libnvidia-ml.so.@VERSION@ $libdir/libnvidia-ml.so.1
ln -sf libcuda.so.@VERSION@ $libdir/libcuda.so.1
ldconfig
if [ $skip_load = 0 ]; then modprobe nvidia || { echo "ERROR: Unable to load the kernel module 'nvidia.ko'."; exit 1; }; fi
echo "Installation of the NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version: @VERSION@) is now complete."
"""

BUILD_FAILURE = 'echo "ERROR: Unable to build the NVIDIA kernel module."; exit 1'


def build_installer(workdir: Path, share: Path, version: str, failure: str | None = None) -> Path:
    """NVIDIA-Linux-x86_64-<version>.run in `workdir`, carrying `share`'s stand-ins of `version`.
    `failure`: shell lines the installer runs (and fails with) before it changes anything."""
    payload = workdir / f"payload-{version}"
    payload.mkdir(parents=True)
    for module in (share / "modules" / version).glob("nvidia*.ko"):
        shutil.copy(module, payload)
    for library in (share / "lib" / version).iterdir():
        shutil.copy(library, payload)
    script = payload / "nvidia-installer"
    script.write_text(INSTALLER.replace("@VERSION@", version).replace("@FAILURE@", failure or ""))
    os.chmod(script, 0o755)
    header = workdir / "nvidia-like-header.sh"
    text = MAKESELF_HEADER.read_text()
    refusal = '    -*)\n\techo Unrecognized flag : "\\$1" >&2\n\tMS_Help\n\texit 1\n\t;;\n'
    assert refusal in text, "Debian's makeself header changed: update build_installer"
    header.write_text(text.replace(refusal, "    -*)\n\tbreak ;;\n"))
    run = workdir / f"NVIDIA-Linux-x86_64-{version}.run"
    subprocess.run(
        [
            "makeself",
            "--quiet",
            "--header",
            str(header),
            str(payload),
            str(run),
            f"NVIDIA Accelerated Graphics Driver for Linux-x86_64 {version}",
            "./nvidia-installer",
        ],
        check=True,
        capture_output=True,
    )
    os.chmod(run, 0o755)
    return run
