"""Build node snapshot trees for tests: the files a real node has, at their real paths.

Kernel modules are real ELF objects compiled by gcc with a real `.modinfo` section (the same
section a .ko carries), then compressed with the real xz/gzip/zstd tools, so kmod's `modinfo`
can check our reader against the same files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

PROC_DEVICES = """Character devices:
  1 mem
  4 tty
195 nvidia
195 nvidiactl
226 drm
235 nvidia-caps
236 nvidia-nvswitch
237 nvidia-nvlink
238 nvidia-uvm

Block devices:
  7 loop
"""


def build_ko(dest: Path, fields: dict[str, str], compression: str | None = None) -> Path:
    """Compile an ELF relocatable object with a .modinfo section holding `fields`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mod.c"
        lines = [
            f'static const char __modinfo_{i}[] __attribute__((used, section(".modinfo"), aligned(1))) = '
            + '"{}={}";'.format(k, v.replace('"', '\\"'))
            for i, (k, v) in enumerate(fields.items())
        ]
        lines.append("int init_module(void) { return 0; }")
        src.write_text("\n".join(lines) + "\n")
        obj = Path(tmp) / "mod.ko"
        subprocess.run(["gcc", "-c", "-O0", "-o", str(obj), str(src)], check=True)
        if compression is None:
            out = dest
            shutil.copy(obj, out)
        else:
            tool = {
                "xz": ["xz", "--check=crc32", "-c"],
                "gz": ["gzip", "-c"],
                "zst": ["zstd", "-q", "-c", "--no-check"],
            }[compression]
            out = dest.with_name(dest.name + "." + compression)
            with open(out, "wb") as handle:
                subprocess.run(tool + [str(obj)], stdout=handle, check=True)
    return out


class Snapshot:
    """A sysroot-shaped tree under `root`, built up one fact at a time."""

    def __init__(self, root: Path, release: str = "6.1.0-26-amd64") -> None:
        self.root = Path(root)
        self.release = release
        self.proc_modules: list[str] = []
        self.write("proc/sys/kernel/osrelease", release + "\n")
        self.write("proc/sys/kernel/modules_disabled", "0\n")
        self.write("proc/sys/kernel/hostname", "gpu-07\n")
        self.write("proc/devices", PROC_DEVICES)
        self._flush_modules()

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def link(self, rel: str, target: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(target, path)

    def _flush_modules(self) -> None:
        self.write("proc/modules", "".join(line + "\n" for line in self.proc_modules))

    def module(
        self,
        name: str,
        version: str | None = None,
        holders: tuple[str, ...] = (),
        refcount: int | str = 0,
        parameters: dict[str, str] | None = None,
        state: str = "Live",
    ) -> None:
        used_by = ",".join(holders) + "," if holders else "-"
        self.proc_modules.append(f"{name} 1234567 {refcount} {used_by} {state} 0xffffffffc0000000 (POE)")
        self._flush_modules()
        base = f"sys/module/{name}"
        self.write(f"{base}/initstate", {"Live": "live", "Loading": "coming", "Unloading": "going"}[state] + "\n")
        if refcount != "-":
            self.write(f"{base}/refcnt", f"{refcount}\n")
        if version:
            self.write(f"{base}/version", version + "\n")
        (self.root / base / "holders").mkdir(parents=True, exist_ok=True)
        for holder in holders:
            self.link(f"{base}/holders/{holder}", f"../../{holder}")
        for key, value in (parameters or {}).items():
            self.write(f"{base}/parameters/{key}", value + "\n")

    def builtin_module(self, name: str) -> None:
        (self.root / f"sys/module/{name}/parameters").mkdir(parents=True, exist_ok=True)

    def resident_driver(self, version: str, open_flavor: bool = True) -> None:
        banner = (
            f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Oct 10 2024\n"
            if open_flavor
            else f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Thu Oct 10 20:23:43 UTC 2024\n"
        )
        self.write("proc/driver/nvidia/version", banner + "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")

    def gpu(
        self,
        bus_id: str,
        driver: str | None = "nvidia",
        model: str = "NVIDIA H100 80GB HBM3",
        uuid: str | None = None,
        in_proc: bool = True,
        minor: int = 0,
        on_bus: bool = True,
    ) -> None:
        base = f"sys/devices/pci0000:00/{bus_id}"
        if on_bus:
            self.write(f"{base}/vendor", "0x10de\n")
            self.write(f"{base}/device", "0x2330\n")
            self.write(f"{base}/class", "0x030200\n")
            self.link(f"sys/bus/pci/devices/{bus_id}", f"../../../devices/pci0000:00/{bus_id}")
            if driver:
                (self.root / f"sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
                self.link(f"{base}/driver", f"../../../bus/pci/drivers/{driver}")
        if in_proc:
            self.write(
                f"proc/driver/nvidia/gpus/{bus_id}/information",
                f"Model: \t\t {model}\nIRQ:   \t\t 41\nGPU UUID: \t {uuid or 'GPU-00000000-0000-0000-0000-' + bus_id.replace(':', '').replace('.', '')[-12:].rjust(12, '0')}\n"
                f"Bus Location: \t {bus_id}\nDevice Minor: \t {minor}\n",
            )

    def non_gpu_pci(self, bus_id: str, vendor: str = "0x8086", pci_class: str = "0x020000") -> None:
        base = f"sys/devices/pci0000:00/{bus_id}"
        self.write(f"{base}/vendor", vendor + "\n")
        self.write(f"{base}/class", pci_class + "\n")
        self.link(f"sys/bus/pci/devices/{bus_id}", f"../../../devices/pci0000:00/{bus_id}")

    def on_disk_module(
        self,
        version: str,
        vermagic_release: str | None = None,
        compression: str | None = None,
        subdir: str = "updates/dkms",
        name: str = "nvidia",
        license: str = "Dual MIT/GPL",
        release: str | None = None,
    ) -> Path:
        release = release or self.release
        vermagic = f"{vermagic_release or release} SMP preempt mod_unload modversions "
        dest = self.root / f"lib/modules/{release}/{subdir}/{name}.ko"
        return build_ko(dest, {"version": version, "license": license, "name": name, "vermagic": vermagic}, compression)

    def modules_tree(self, release: str | None = None) -> None:
        (self.root / f"lib/modules/{release or self.release}/kernel").mkdir(parents=True, exist_ok=True)

    def userspace(self, version: str, directory: str = "usr/lib/x86_64-linux-gnu") -> None:
        self.write(f"{directory}/libnvidia-ml.so.{version}", b"\x7fELF-not-really")
        self.link(f"{directory}/libnvidia-ml.so.1", f"libnvidia-ml.so.{version}")

    def dkms(self, version: str, kernel: str, arch: str = "x86_64", installed: bool = True) -> None:
        base = f"var/lib/dkms/nvidia/{version}"
        (self.root / f"{base}/{kernel}/{arch}/module").mkdir(parents=True, exist_ok=True)
        (self.root / f"{base}/source").mkdir(parents=True, exist_ok=True)
        if installed:
            self.link(f"var/lib/dkms/nvidia/kernel-{kernel}-{arch}", f"{version}/{kernel}/{arch}")

    def dmesg(self, lines: list[str]) -> None:
        self.write("nvreload-snapshot/dmesg.txt", "".join(line + "\n" for line in lines))


def healthy_node(root: Path, version: str = "550.127.08") -> Snapshot:
    """One H100 with a consistent 550 driver: the baseline tests change one fact of."""
    snap = Snapshot(root)
    snap.module("nvidia", version, holders=("nvidia_uvm", "nvidia_modeset"), refcount=2)
    snap.module("nvidia_uvm", version)
    snap.module("nvidia_modeset", version, holders=("nvidia_drm",), refcount=1)
    snap.module("nvidia_drm", version, parameters={"modeset": "Y"})
    snap.resident_driver(version)
    snap.gpu("0000:3b:00.0")
    snap.on_disk_module(version)
    snap.userspace(version)
    snap.dkms(version, snap.release)
    snap.dmesg([f"[    5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build"])
    return snap
