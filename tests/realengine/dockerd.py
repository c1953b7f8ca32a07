"""Start a real dockerd (Debian's docker.io) for the tests, everything under one temp dir, with no
changes to the host's networking; and a busybox image made from local files (no registry here)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

HOOK_NAME = "nvidia-container-runtime-hook"


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the real-engine tests need root (dockerd)"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (apt-get install docker.io; .ci/run does it)"
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        return "busybox is not installed (apt-get install busybox-static)"
    return None


class Dockerd:
    def __init__(self, base: Path, live_restore: bool = True) -> None:
        self.live_restore = live_restore
        self.base = base
        self.socket = base / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.hook_log = base / "hook.log"
        self.proc: subprocess.Popen | None = None
        self.client = None

    def _hook(self) -> Path:
        """--gpus all makes dockerd run this prestart hook: ours reads the state and logs each call,
        so a line per container start proves a (re)start happened."""
        bindir = self.base / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        hook = bindir / HOOK_NAME
        hook.write_text(f"#!/bin/sh\ncat >/dev/null\necho start >> {self.hook_log}\nexit 0\n")
        hook.chmod(0o755)
        return bindir

    def start(self) -> Dockerd:

        bindir = self._hook()
        env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        log = open(self.base / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(self.base / "data"),
                "--exec-root",
                str(self.base / "exec"),
                "--pidfile",
                str(self.base / "pid"),
                "-H",
                self.url,
                "--storage-driver",
                "overlay2",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--add-runtime",
                f"nvidia={shutil.which('runc') or '/usr/sbin/runc'}",
            ]
            # live-restore: containers (the systemd box among them) outlive a dockerd restart
            + (["--live-restore"] if self.live_restore else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.client = answering_client(self.proc, self.socket, self.url, self.base / "dockerd.log", "dockerd")
        return self

    def stop(self) -> None:
        """Stop dockerd only (with live-restore its containers keep running)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def teardown(self) -> None:
        """Remove every container, stop dockerd, and end what it left behind (containerd, shims)."""
        if self.client is not None and self.proc is not None and self.proc.poll() is None:
            for container in self.client.containers.list(all=True):
                try:
                    container.remove(force=True)
                except Exception:  # noqa: BLE001
                    pass
        self.stop()
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        subprocess.run(
            ["sh", "-c", f"grep -o ' {self.base}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"],
            check=False,
            capture_output=True,
        )

    def busybox_image(self, tag: str = "busybox:test") -> str:
        busybox = shutil.which("busybox") or "/bin/busybox"
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:

            def add_dir(name):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)

            for name in ("bin", "etc", "tmp", "dev", "proc", "sys"):
                add_dir(name)
            tar.add(busybox, arcname="bin/busybox")
            for applet in applets:
                if applet == "busybox":
                    continue
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
            passwd = b"root:x:0:0:root:/root:/bin/sh\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            tar.addfile(info, io.BytesIO(passwd))
        self.client.api.import_image_from_data(
            buffer.getvalue(),
            repository=tag.split(":")[0],
            tag=tag.split(":")[1],
            changes=["ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        )
        return tag

    def hook_starts(self) -> int:
        return len(self.hook_log.read_text().splitlines()) if self.hook_log.exists() else 0


# A PID 1 that exits on SIGTERM (busybox sleep as PID 1 ignores it).
SLEEPER = ["sh", "-c", 'trap "exit 0" TERM; sleep 3600 & wait']
STUBBORN = ["sh", "-c", 'trap "" TERM; sleep 3600 & wait; sleep 3600']


def answering_client(proc, socket, url: str, log, what: str):
    """A docker SDK client of the engine `proc` serves on `socket` (dockerd, or Podman's compatible
    API), once it answers a ping; RuntimeError with the log's tail when it exits or stays silent 30 s."""
    import docker

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: " + log.read_text()[-2000:])
        if socket.exists():
            try:
                client = docker.DockerClient(base_url=url, timeout=60)
                if client.ping():
                    return client
            except Exception:  # noqa: BLE001 - not up yet
                pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within 30 s")
