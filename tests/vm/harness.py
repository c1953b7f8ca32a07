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
    job = Path(tempfile.mkdtemp(prefix="vm-job-", dir=workdir))
    os.chmod(job, 0o755)
    shutil.copy(CASE_LIB, job / "lib.sh")
    for name, content in (files or {}).items():
        target = job / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
        os.chmod(target, 0o755)
    (job / "run.sh").write_text("set -u\n. /job/lib.sh\n" + script)
    serial = job / "console.log"
    argv = [
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
        f"file:{serial}",
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
    started = time.monotonic()
    try:
        qemu = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
            text=True,
            errors="replace",
        )
        qemu_said = f"qemu exited {qemu.returncode}" + (
            f": {qemu.stderr.strip()[-2000:]}" if qemu.stderr.strip() else ""
        )
    except subprocess.TimeoutExpired:
        qemu_said = f"qemu killed after {timeout:g} s"  # the case did not finish
    seconds = time.monotonic() - started
    rc_file, output_file, booted = job / "rc", job / "output.log", job / "booted"
    return VmRun(
        rc=int(rc_file.read_text()) if rc_file.exists() else None,
        output=output_file.read_text(errors="replace") if output_file.exists() else "",
        serial=serial.read_text(errors="replace") if serial.exists() else "",
        job=job,
        seconds=seconds,
        booted_after=float(booted.read_text()) if booted.exists() else None,
        qemu=qemu_said,
    )
