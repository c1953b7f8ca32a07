"""Boot the real-kernel test VM for one case and bring back what the case left.

Each case is a fresh boot of Debian's kernel under QEMU (TCG: no usable KVM on these machines) with
systemd as PID 1, on a throw-away overlay of the root image (`snapshot=on`). The case is a bash
script run as root by nvtest-job.service once the system is up; it reaches three 9p shares:
/job (its script, read-write: whatever it writes there comes back), /src (this checkout,
read-only: `python3 -m nvreload` runs from it) and /vm (the built stand-ins, read-only). Two QEMU
`edu` devices become the node's two "GPUs" (tests/vm/kmod/gpubus.c).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("NVRELOAD_VM_CACHE", "/var/cache/nvreload-vm"))
CASE_LIB = HERE / "case_lib.sh"  # not in the image: a change to it needs no rebuild


@dataclass(frozen=True)
class VmImage:
    """The built kernel, initramfs, root image and stand-ins (tests/vm/build.sh)."""

    cache: Path

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.cache / "vmlinux", self.cache / "initrd.cpio", self.cache / "root.img", self.cache / "share")

    def why_not(self) -> str | None:
        if shutil.which("qemu-system-x86_64") is None:
            return "qemu-system-x86_64 is not installed (.ci/run installs qemu-system-x86)"
        missing = [str(f) for f in self.files if not f.exists()]
        if missing:
            return f"the VM image is not built ({', '.join(missing)}): run tests/vm/build.sh as root"
        return None


@dataclass
class VmRun:
    """How a case ended in the guest."""

    rc: int | None  # the case script's exit status; None when it never finished
    output: str  # its stdout and stderr
    serial: str  # the console: kernel and systemd messages
    job: Path  # the case's /job directory on this machine
    seconds: float
    booted_after: float | None  # guest uptime when the case started
    qemu: str = ""  # QEMU's own exit status and error output, for when the guest never ran

    def text(self, name: str) -> str:
        return (self.job / name).read_text()

    def json(self, name: str) -> dict:
        return json.loads(self.text(name))

    def explain(self) -> str:
        """Everything a failed assertion should show."""
        extra = ""
        for name in ("nvreload-journal.json", "guest-dmesg.txt"):
            if (self.job / name).exists():
                extra += f"--- {name} (tail) ---\n{self.text(name)[-3000:]}\n"
        return (
            f"case rc={self.rc} after {self.seconds:.1f} s; {self.qemu}\n--- case output ---\n{self.output[-6000:]}\n"
            f"--- console (tail) ---\n{self.serial[-4000:]}\n{extra}"
        )


def run_case(
    image: VmImage,
    script: str,
    files: dict[str, str | bytes] | None = None,
    timeout: float = 300,
    memory_mb: int = 1024,
    workdir: Path | None = None,
) -> VmRun:
    """Boot, run `script` (bash, after `. /job/lib.sh`), power off, collect. `files` are put in /job,
    a fresh directory under `workdir` (a test's tmp_path, which pytest cleans up)."""
    return start_case(image, script, files, memory_mb, workdir).finish(timeout)


class RunningCase:
    """A case whose guest runs while the test acts on this machine (start_case)."""

    def __init__(self, job: Path, argv: list[str]) -> None:
        self.job = job
        self.started = time.monotonic()
        self.qemu = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    def wait_for(self, name: str, seconds: float) -> bool:
        """Until the guest writes /job/NAME (True), QEMU ends or the time is up (False)."""
        deadline = time.monotonic() + seconds
        while not (self.job / name).exists():
            if self.qemu.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def finish(self, timeout: float) -> VmRun:
        left = max(1.0, timeout - (time.monotonic() - self.started))
        try:
            _, stderr = self.qemu.communicate(timeout=left)
            qemu_said = f"qemu exited {self.qemu.returncode}" + (
                f": {stderr.strip()[-2000:]}" if stderr.strip() else ""
            )
        except subprocess.TimeoutExpired:
            self.qemu.kill()  # the case did not finish
            self.qemu.communicate()
            qemu_said = f"qemu killed after {timeout:g} s"
        job = self.job
        rc_file, output_file, booted, serial = job / "rc", job / "output.log", job / "booted", job / "console.log"
        return VmRun(
            rc=int(rc_file.read_text()) if rc_file.exists() else None,
            output=output_file.read_text(errors="replace") if output_file.exists() else "",
            serial=serial.read_text(errors="replace") if serial.exists() else "",
            job=job,
            seconds=time.monotonic() - self.started,
            booted_after=float(booted.read_text()) if booted.exists() else None,
            qemu=qemu_said,
        )


def start_case(
    image: VmImage,
    script: str,
    files: dict[str, str | bytes] | None = None,
    memory_mb: int = 1024,
    workdir: Path | None = None,
    ssh_port: int | None = None,
) -> RunningCase:
    """Boot the guest for `script` and return at once. With `ssh_port`, the guest has a NIC on
    QEMU's user network (10.0.2.15/24 once the case sets it) whose port 22 is this machine's
    127.0.0.1:ssh_port."""
    job = Path(tempfile.mkdtemp(prefix="vm-job-", dir=workdir))
    os.chmod(job, 0o755)
    shutil.copy(CASE_LIB, job / "lib.sh")
    for name, content in (files or {}).items():
        target = job / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        os.chmod(target, 0o755)
    (job / "run.sh").write_text("set -u\n. /job/lib.sh\n" + script)
    argv = qemu_argv(image, job, memory_mb)
    if ssh_port is not None:
        argv += [
            "-netdev",
            f"user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
        ]
    return RunningCase(job, argv)


def qemu_argv(image: VmImage, job: Path, memory_mb: int) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        str(memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{job / 'console.log'}",
        "-kernel",
        str(image.cache / "vmlinux"),
        "-initrd",
        str(image.cache / "initrd.cpio"),
        "-append",
        "console=ttyS0 root=/dev/vda systemd.unit=nvtest.target panic=-1 quiet loglevel=4 "
        "mitigations=off systemd.show_status=0",
        "-drive",
        f"file={image.cache / 'root.img'},format=raw,if=virtio,snapshot=on",
        "-virtfs",
        f"local,path={job},mount_tag=job,security_model=none,id=job",
        "-virtfs",
        f"local,path={REPO},mount_tag=src,security_model=none,id=src,readonly=on",
        "-virtfs",
        f"local,path={image.cache / 'share'},mount_tag=vm,security_model=none,id=vm,readonly=on",
        "-device",
        "edu",
        "-device",
        "edu",
    ]
