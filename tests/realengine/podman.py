"""Start a real Podman API service (Debian's podman 4.3, rootful) for the tests: its storage, run
state and configuration under one temp dir, the machine's own storage never touched.

Podman 4.3 reads CDI specs only from /etc/cdi and /var/run/cdi. The service runs in a mount
namespace of its own where /etc is an overlay whose upper layer holds the test's CDI spec: the
machine's /etc never changes, and the containers the service starts (with their conmon) live in
that namespace too. Every container is then made through the service (`podman --remote`), never by
a podman in the machine's namespace, which would not see those mounts.

A real OCI hook in the test's hooks dir fires on NVIDIA's annotation and logs each start, so a line
per start proves a container really went through one (as the dockerd helper's toolkit hook does)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

from realengine.dockerd import answering_client

CDI_SPEC = """cdiVersion: "0.5.0"
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/null
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
      hostPath: /dev/zero
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
"""
HOOK_ANNOTATION = "com.nvidia.gpu"


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the real Podman tests need root (rootful podman)"
    for tool in ("podman", "runc", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman; .ci/run does it)"
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        return "busybox is not installed (apt-get install busybox-static)"
    return None


class PodmanService:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.hook_log = base / "hook.log"
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.runc = shutil.which("runc") or "/usr/sbin/runc"
        self.env: dict[str, str] = {}

    def _configure(self) -> dict[str, str]:
        b = self.base
        for name in ("root", "runroot", "tmp", "etc-upper/cdi", "etc-work", "hooks"):
            (b / name).mkdir(parents=True, exist_ok=True)
        (b / "etc-upper/cdi/nvidia.yaml").write_text(CDI_SPEC)
        hook = b / "hooks/nvidia-hook.sh"
        hook.write_text(f"#!/bin/sh\ncat >/dev/null\necho start >> {self.hook_log}\nexit 0\n")
        hook.chmod(0o755)
        (b / "hooks/nvidia.json").write_text(
            json.dumps(
                {
                    "version": "1.0.0",
                    "hook": {"path": str(hook)},
                    "when": {"annotations": {f"^{HOOK_ANNOTATION.replace('.', '[.]')}$": "^true$"}},
                    "stages": ["prestart"],
                }
            )
        )
        # TESTBED.md: Podman 4.3 needs these ulimits and runc to run at all on these machines
        (b / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            'netns = "none"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{b}/events.log"\n'
            f'hooks_dir = ["{b}/hooks"]\n'
            "[engine.runtimes]\n"
            f'runc = ["{self.runc}"]\n'
            f'nvidia = ["{self.runc}"]\n'
        )
        (b / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\nrunroot = "{b}/runroot"\ngraphroot = "{b}/root"\n'
        )
        return {
            **os.environ,
            "CONTAINERS_CONF": str(b / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(b / "storage.conf"),
        }

    def start(self) -> PodmanService:

        env = self.env = self._configure()
        b = self.base
        podman = f"podman --root {b}/root --runroot {b}/runroot --tmpdir {b}/tmp system service --time=0 {self.url}"
        overlay = f"lowerdir=/etc,upperdir={b}/etc-upper,workdir={b}/etc-work"
        log = open(b / "podman.log", "wb")
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"mount -t overlay overlay -o {overlay} /etc && exec {podman}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.client = answering_client(self.proc, self.socket, self.url, b / "podman.log", "podman system service")
        return self

    def remote(self, *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """The podman command line, through this service (CreateCommand records it as given)."""
        done = subprocess.run(
            ["podman", "--remote", "--url", self.url, *args], input=stdin, capture_output=True, timeout=120
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.decode()[-2000:]}")
        return done

    def run(self, name: str, *options: str) -> str:
        sleeper = 'trap "exit 0" TERM; sleep 3600 & wait'
        out = self.remote("run", "-d", "--name", name, *options, "busybox:test", "sh", "-c", sleeper)
        return out.stdout.decode().strip()

    def local(self, *args: str) -> str:
        """The podman command line run as a local podman inside the service's mount namespace (the
        remote one has no --runtime), on the same storage."""
        b = self.base
        assert self.proc is not None
        command = ["nsenter", "--target", str(self.proc.pid), "--mount", "--", "podman", "--root", f"{b}/root"]
        command += ["--runroot", f"{b}/runroot", "--tmpdir", f"{b}/tmp", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout.strip()

    def inspect(self, name: str) -> dict:
        return json.loads(self.remote("inspect", name).stdout)[0]

    def busybox_image(self) -> None:
        busybox = shutil.which("busybox") or "/bin/busybox"
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name in ("bin", "etc", "tmp", "dev", "proc", "sys"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            tar.add(busybox, arcname="bin/busybox")
            for applet in applets:
                if applet != "busybox":
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(info)
            passwd = b"root:x:0:0:root:/root:/bin/sh\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            tar.addfile(info, io.BytesIO(passwd))
        self.remote("import", "-c", "ENV PATH=/bin", "-", "busybox:test", stdin=buffer.getvalue())

    def remove_all(self) -> None:
        self.remote("rm", "--all", "--force", "--time", "0", check=False)

    def hook_starts(self) -> int:
        return len(self.hook_log.read_text().splitlines()) if self.hook_log.exists() else 0

    def teardown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remove_all()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RootlessPodman:
    """Another user's rootless Podman API service, as pam_systemd and podman.socket leave it: the
    socket at <runtime root>/<UID>/podman/podman.sock, the directory the user's own (0700). The user
    is nobody (no subuid range here: Podman falls back to mapping that one UID, enough for a busybox
    image); everything is under a 0755 temp dir of /tmp so that nobody can reach it."""

    def __init__(self, base: Path, uid: int = 65534) -> None:
        self.base = base
        self.uid = uid
        self.run_root = base / "run-user"
        self.runtime = self.run_root / str(uid)
        self.socket = self.runtime / "podman" / "podman.sock"
        self.url = f"unix://{self.socket}"
        self.home = base / "home"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RootlessPodman:
        self.base.chmod(0o755)
        (self.runtime / "podman").mkdir(parents=True)
        self.run_root.chmod(0o755)
        self.home.mkdir()
        for path in (self.runtime, self.runtime / "podman", self.home):
            os.chown(path, self.uid, self.uid)
        self.runtime.chmod(0o700)
        conf = self.base / "containers.conf"
        conf.write_text(
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\nnetns = "none"\n'
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "CONTAINERS_CONF": str(conf),
        }
        command = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "podman"]
        # Podman refuses a rootless runroot over 50 characters
        command += ["--root", f"{self.home}/storage", "--runroot", f"{self.runtime}/c"]
        log = open(self.base / "podman.log", "wb")
        self.proc = subprocess.Popen(
            [*command, "system", "service", "--time=0", self.url],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            cwd=self.home,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rootless podman service exited: " + (self.base / "podman.log").read_text()[-2000:])
            if self.socket.exists():
                ping = subprocess.run(
                    ["podman", "--remote", "--url", self.url, "version"], capture_output=True, timeout=30
                )
                if ping.returncode == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError("rootless podman service did not answer within 30 s")

    remote = PodmanService.remote
    run = PodmanService.run
    inspect = PodmanService.inspect
    remove_all = PodmanService.remove_all

    def busybox_image(self) -> None:
        PodmanService.busybox_image(self)  # type: ignore[arg-type]

    def teardown(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.remove_all()
        # the service, its re-exec in the user namespace, and the pause process that holds the
        # namespace: all started here (the first two in this session; the third by pid file)
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pause in self.runtime.rglob("pause.pid"):
            try:
                os.kill(int(pause.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
