"""A real systemd (Debian's 252) in a container of the test dockerd, with stand-in GPU units, and a
`systemctl` wrapper that reaches it from the host (see shared/TESTBED.md)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

UNITS = {
    # active GPU services: a reload must stop them and start them again
    "nvidia-persistenced.service": "ExecStart=/bin/sleep infinity",
    "nvidia-fabricmanager.service": "ExecStart=/bin/sleep infinity",
    # its ExecStart fails once /ctl/fail-dcgm exists: a unit that will not come back
    "nvidia-dcgm.service": "ExecStart=/bin/sh -c 'test ! -e /ctl/fail-dcgm && exec /bin/sleep infinity'",
    # systemd's own start limit: a second start within a minute is refused until reset-failed
    "nv-hostengine.service": "ExecStart=/bin/sleep infinity",
    # enabled but already failed at boot: reported, never started by us
    "dcgm-exporter.service": "ExecStart=/bin/false",
    # installed, not enabled, inactive: must stay inactive
    "nvsm.service": "ExecStart=/bin/sleep infinity",
}
ENABLED = (
    "nv-hostengine.service",
    "nvidia-persistenced.service",
    "nvidia-fabricmanager.service",
    "nvidia-dcgm.service",
    "dcgm-exporter.service",
)


def why_not() -> str | None:
    if not os.path.exists("/usr/lib/systemd/systemd") or shutil.which("systemctl") is None:
        return "systemd is not installed on this host (its /usr is bind-mounted into the container)"
    if shutil.which("nsenter") is None or shutil.which("unshare") is None:
        return "nsenter/unshare (util-linux) are needed to reach systemd in its container"
    return None


def _skeleton() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for name in (
            "etc",
            "etc/systemd",
            "etc/systemd/system",
            "etc/systemd/system/multi-user.target.wants",
            "usr",
            "run",
            "tmp",
            "var",
            "var/lib",
            "var/log",
            "root",
            "ctl",
            "proc",
            "sys",
            "dev",
        ):
            entry(name, tarfile.DIRTYPE, mode=0o755)
        for name in ("bin", "sbin", "lib", "lib64"):
            entry(name, tarfile.SYMTYPE, link=f"usr/{name}")
        entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
        entry("etc/group", data=b"root:x:0:\n")
        entry("etc/machine-id", data=b"")
        entry("etc/os-release", tarfile.SYMTYPE, link="../usr/lib/os-release")
        entry("etc/systemd/system/default.target", tarfile.SYMTYPE, link="/usr/lib/systemd/system/multi-user.target")
        for unit, exec_start in UNITS.items():
            limit = (
                "StartLimitIntervalSec=60\nStartLimitBurst=1"
                if unit == "nv-hostengine.service"
                else "StartLimitIntervalSec=0"
            )
            text = (
                f"[Unit]\nDescription=stand-in {unit}\n{limit}\n\n[Service]\n{exec_start}\n"
                f"TimeoutStopSec=5\n\n[Install]\nWantedBy=multi-user.target\n"
            )
            entry(f"etc/systemd/system/{unit}", data=text.encode())
        for unit in ENABLED:
            entry(
                f"etc/systemd/system/multi-user.target.wants/{unit}",
                tarfile.SYMTYPE,
                link=f"/etc/systemd/system/{unit}",
            )
    return buffer.getvalue()


class SystemdContainer:
    def __init__(self, client, base: Path) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.base = base
        self.run_systemd = base / "run-systemd"
        self.ctl = base / "ctl"
        self.wrapper = base / "systemctl-in-container"
        self.container = None

    def start(self, image: str = "systemd-skeleton:test") -> SystemdContainer:
        self.run_systemd.mkdir(parents=True, exist_ok=True)
        self.ctl.mkdir(parents=True, exist_ok=True)
        repo, tag = image.split(":")
        self.client.api.import_image_from_data(
            _skeleton(), repository=repo, tag=tag, changes=['CMD ["/usr/lib/systemd/systemd"]']
        )
        self.container = self.client.containers.run(
            image,
            detach=True,
            name="nvreload-test-systemd",
            stop_signal="SIGRTMIN+3",
            tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
            volumes={
                "/usr": {"bind": "/usr", "mode": "ro"},
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
                str(self.run_systemd): {"bind": "/run/systemd", "mode": "rw"},
                str(self.ctl): {"bind": "/ctl", "mode": "rw"},
            },
            environment={"container": "docker"},
        )
        self.container.reload()
        pid = self.container.attrs["State"]["Pid"]
        self.wrapper.write_text(
            "#!/bin/sh\n"
            f"exec nsenter --target {pid} --pid -- unshare --mount --propagation private "
            f'sh -c \'mount --bind {self.run_systemd} /run/systemd && exec "$@"\' _ systemctl "$@"\n'
        )
        self.wrapper.chmod(0o755)
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.systemctl("is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return self
            time.sleep(0.2)
        raise RuntimeError(
            f"systemd in the container did not come up (state {state!r}): {self.container.logs()[-2000:]!r}"
        )

    def systemctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.wrapper), *args], capture_output=True, text=True, timeout=60)

    def active(self, unit: str) -> str:
        return self.systemctl("is-active", unit).stdout.strip()

    def stop(self) -> None:
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception:  # noqa: BLE001
                pass
