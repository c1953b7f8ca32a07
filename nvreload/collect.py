"""`--collect FILE`: a snapshot .tar.gz of a node, in exactly the layout `--root` reads.

Only the paths below are captured: no environment, no /etc/shadow, no process command lines, no
library contents (libraries are kept as their names and links; the final file is an empty
stand-in). What the live consumer scan saw is recorded as consumers.json (program names, not
command lines: read/recorded_consumers.py). The archive is written to a temp file and renamed, so a partial bundle never exists.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from nvreload import __version__
from nvreload.host.machine import SNAPSHOT_DIR, Machine
from nvreload.read.kernel_modules import MOFED_MODULES, NVIDIA_MODULES, parse_proc_modules, read_modules
from nvreload.read.on_disk import find_module_file
from nvreload.read.userspace import library_dirs
from nvreload.rootfs import RootFS
from nvreload.state_files import write_user_file

PROC_FILES = (
    "proc/modules",
    "proc/devices",
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/modules_disabled",
    "proc/sys/kernel/hostname",
    "proc/sys/kernel/tainted",
)
ETC_DIRS = ("etc/modprobe.d", "etc/modules-load.d", "etc/ld.so.conf.d")
ETC_FILES = ("etc/modules", "etc/ld.so.conf", "etc/os-release")
PCI_FILES = ("vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision", "numa_node")
CAPTURED_OUTPUTS = (
    "dmesg.txt",
    "nvidia-smi-q.xml",
    "nvml.json",
    "nv-fabricmanager-version.txt",
    "uname-r.txt",
    "consumers.json",
)
MAX_FILE = 256 * 1024 * 1024
R = TypeVar("R")


@dataclass
class Bundle:
    """The snapshot archive being written, and what went into it."""

    tar: tarfile.TarFile
    names: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)

    def _dirs(self, name: str) -> None:
        parent = os.path.dirname(name)
        if parent and parent not in self.names:
            self._dirs(parent)
            info = tarfile.TarInfo(parent)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            self.tar.addfile(info)
            self.names.add(parent)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o444) -> None:
        if name in self.names:
            return
        self._dirs(name)
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        self.tar.addfile(info, io.BytesIO(data))
        self.names.add(name)

    def add_link(self, name: str, target: str) -> None:
        if name in self.names:
            return
        self._dirs(name)
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.tar.addfile(info)
        self.names.add(name)


def _copy(fs: RootFS, bundle: Bundle, rel: str) -> None:
    """Copy one path as it is: a symlink stays a symlink, a file its bytes."""
    if fs.kind(rel) is None and fs.link_target(rel) is None:
        return
    if fs.is_symlink(rel):
        bundle.add_link(rel, fs.link_target(rel) or "")
        return
    data = fs.read_bytes(rel, MAX_FILE)
    if data is None:
        bundle.skipped.append(rel)
        return
    bundle.add_bytes(rel, data)


def _copy_tree(fs: RootFS, bundle: Bundle, rel: str, depth: int = 0) -> None:
    if depth > 6:
        return
    for name in fs.listdir(rel):
        path = f"{rel}/{name}"
        if fs.is_symlink(path):
            bundle.add_link(path, fs.link_target(path) or "")
        elif fs.is_dir(path):
            _copy_tree(fs, bundle, path, depth + 1)
        else:
            _copy(fs, bundle, path)


def _modules(fs: RootFS, bundle: Bundle) -> None:
    names = set(NVIDIA_MODULES) | set(MOFED_MODULES)
    names |= {
        line.name for line in parse_proc_modules(fs.read_text("proc/modules") or "") if line.name.startswith("nvidia")
    }
    for name in sorted(names):
        base = f"sys/module/{name}"
        if not fs.is_dir(base):
            continue
        for leaf in ("version", "initstate", "refcnt", "srcversion", "taint", "coresize"):
            _copy(fs, bundle, f"{base}/{leaf}")
        if not bundle.names.intersection({f"{base}/version", f"{base}/initstate"}):
            bundle.add_bytes(f"{base}/.present", b"")  # a built-in module: a directory with no files we keep
        for holder in fs.listdir(f"{base}/holders"):
            bundle.add_link(f"{base}/holders/{holder}", fs.link_target(f"{base}/holders/{holder}") or f"../../{holder}")
        for param in fs.listdir(f"{base}/parameters"):
            _copy(fs, bundle, f"{base}/parameters/{param}")


def _pci(fs: RootFS, bundle: Bundle) -> None:
    for bdf in fs.listdir("sys/bus/pci/devices"):
        base = f"sys/bus/pci/devices/{bdf}"
        if fs.read_line(f"{base}/vendor") != "0x10de":
            continue
        for leaf in PCI_FILES:
            _copy(fs, bundle, f"{base}/{leaf}")
        target = fs.link_target(f"{base}/driver")
        if target:
            bundle.add_link(f"{base}/driver", target)


def _on_disk(fs: RootFS, bundle: Bundle) -> None:
    release = fs.read_line("proc/sys/kernel/osrelease")
    if not release:
        return
    path = find_module_file(fs, release)
    if path:
        _copy(fs, bundle, path)
    base = path.split("/")[0] + f"/modules/{release}" if path else f"lib/modules/{release}"
    dep = fs.read_text(f"{base}/modules.dep")
    if dep is not None:
        kept = "".join(line + "\n" for line in dep.splitlines() if "nvidia" in line.split(":")[0])
        bundle.add_bytes(f"{base}/modules.dep", kept.encode())


def _libraries(fs: RootFS, bundle: Bundle) -> None:
    for directory in library_dirs(fs):
        for name in fs.listdir(directory):
            if not name.startswith(("libnvidia-ml.so", "libcuda.so")):
                continue
            path = f"{directory}/{name}"
            if fs.is_symlink(path) or fs.link_target(path) is not None:
                _copy(fs, bundle, path)  # a link, or a snapshot's stand-in for one
            else:
                bundle.add_bytes(path, b"")  # the name is the evidence; the library itself is not ours to ship


def _dkms(fs: RootFS, bundle: Bundle) -> None:
    for module in fs.listdir("var/lib/dkms"):
        if not module.startswith("nvidia"):
            continue
        for entry in fs.listdir(f"var/lib/dkms/{module}"):
            path = f"var/lib/dkms/{module}/{entry}"
            if entry.startswith("kernel-"):
                bundle.add_link(path, fs.link_target(path) or "")
            elif fs.is_dir(path):
                for kernel in fs.listdir(path):
                    if kernel in ("source", "build"):
                        continue
                    for arch in fs.listdir(f"{path}/{kernel}"):
                        bundle.add_bytes(f"{path}/{kernel}/{arch}/.present", b"")


def _captured(machine: Machine, bundle: Bundle) -> dict:
    fs = machine.fs
    outputs: dict[str, str] = {}
    if not machine.live:
        for name in CAPTURED_OUTPUTS:
            _copy(fs, bundle, f"{SNAPSHOT_DIR}/{name}")
        return {"source": fs.label}
    text, source = machine.kernel_log()
    if text is not None:
        bundle.add_bytes(f"{SNAPSHOT_DIR}/dmesg.txt", text.encode())
    outputs["kernel_log"] = source or "unavailable"
    smi = machine.runner.run(["nvidia-smi", "-q", "-x"], timeout=60)
    if smi.ok:
        bundle.add_bytes(f"{SNAPSHOT_DIR}/nvidia-smi-q.xml", smi.stdout.encode())
    outputs["nvidia-smi"] = "ok" if smi.ok else (smi.stderr.strip() or smi.stdout.strip())[:200]
    if not smi.ok:
        # Keep why NVML refused (e.g. the version mismatch): the diagnosis needs it.
        from nvreload.host.nvml import probe_nvml

        report = probe_nvml(machine.runner)
        bundle.add_bytes(
            f"{SNAPSHOT_DIR}/nvml.json", json.dumps({"status": report.status, "error": report.error}).encode()
        )
    fm = machine.fabric_manager_version()
    if fm:
        bundle.add_bytes(f"{SNAPSHOT_DIR}/nv-fabricmanager-version.txt", fm.encode() + b"\n")
    _record_consumers(machine, bundle, smi.stdout if smi.ok else None)
    outputs["consumers"] = "scanned"
    return outputs


def _record_consumers(machine: Machine, bundle: Bundle, smi_xml: str | None) -> None:
    """consumers.json: what the live holder scan and the display-server check use, so that --root on
    the snapshot sees the holders, services and containers --status saw (read/recorded_consumers.py
    says what is left out: environments, command lines)."""
    from nvreload.model import NvmlReport
    from nvreload.read.node import scan_consumers
    from nvreload.read.recorded_consumers import FILE, to_record
    from nvreload.read.smi_xml import parse_smi_xml

    fs = machine.fs
    modules = read_modules(fs, parse_proc_modules(fs.read_text("proc/modules") or ""))
    nvml = parse_smi_xml(smi_xml) or NvmlReport("unavailable", "none")  # its pids name holders the scan may miss
    consumers = scan_consumers(machine, modules, nvml, machine.services())
    bundle.add_bytes(f"{SNAPSHOT_DIR}/{FILE}", json.dumps(to_record(consumers), indent=1).encode())


def collect(machine: Machine, destination: str) -> dict:
    """Write the snapshot; returns the manifest (also stored in the archive). The archive goes to DEST
    through write_new_file (mode 0600: a snapshot names the node's modules, GPUs and paths)."""
    fs = machine.fs

    def write(raw: BinaryIO) -> dict:
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            bundle = Bundle(tar)
            for rel in PROC_FILES + ETC_FILES:
                _copy(fs, bundle, rel)
            _copy_tree(fs, bundle, "proc/driver/nvidia")
            for rel in ETC_DIRS:
                _copy_tree(fs, bundle, rel)
            _copy(fs, bundle, "run/mellanox/drivers/.driver-ready")
            _modules(fs, bundle)
            _pci(fs, bundle)
            _on_disk(fs, bundle)
            _libraries(fs, bundle)
            _dkms(fs, bundle)
            outputs = _captured(machine, bundle)
            manifest = {
                "nvreload_version": __version__,
                "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "live": machine.live,
                "outputs": outputs,
                "unreadable": sorted(set(bundle.skipped) | set(fs.denied)),
                "files": len(bundle.names),
            }
            bundle.add_bytes(f"{SNAPSHOT_DIR}/manifest.json", json.dumps(manifest, indent=1).encode())
        return manifest

    return write_user_file(destination, write, "--collect", mode=0o600, suffix=".tgz")
