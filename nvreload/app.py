"""The application object: what each command does, with no parsing and no rendering."""

from __future__ import annotations

import os
from dataclasses import dataclass

from nvreload.errors import RefusedError, UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from nvreload.host.local import LocalHost


@dataclass
class Result:
    """A command's outcome: a JSON-able document and the exit code it implies."""

    document: dict
    exit_code: int


class App:
    def __init__(self, root: str | None = None) -> None:
        self.root_arg = root
        self._host: LocalHost | None = None

    @property
    def host(self) -> LocalHost:
        return self._open_host(prefetch_nvml=False)

    def _open_host(self, prefetch_nvml: bool) -> LocalHost:
        """prefetch_nvml: on a live node with the nvidia module present, start the NVML probe (a
        child process) before importing the read model, so the two run side by side."""
        if self._host is None:
            from nvreload.host.rootfs import open_root
            from nvreload.host.runner import CommandRunner

            fs = open_root(self.root_arg)
            runner = CommandRunner()
            probe = None
            if prefetch_nvml and fs.is_live and fs.exists("sys/module/nvidia"):
                from nvreload.host.nvml import NvmlProbe

                probe = NvmlProbe.start(runner)
            from nvreload.host.local import LocalHost

            self._host = LocalHost(fs, runner, nvml_probe=probe)
        return self._host

    def require_root_user(self, action: str) -> None:
        if os.geteuid() != 0:
            raise RefusedError(f"{action} needs root (it stops services and unloads kernel modules); run it with sudo")

    def status(self) -> Result:
        host = self._open_host(prefetch_nvml=True)
        from nvreload.read.node import read_node
        from nvreload.status import status_document, status_exit_code

        document = status_document(read_node(host))
        return Result(document, status_exit_code(document))

    def verify(self) -> Result:
        host = self._open_host(prefetch_nvml=True)
        from nvreload.read.node import read_node
        from nvreload.verify import cuda_context_check, run_checks, verify_exit_code

        if not host.live:
            raise UsageError("--verify checks the live driver (NVML, a CUDA context); it cannot run on --root")
        node = read_node(host, with_consumers=False)
        cuda = cuda_context_check(host.runner) if node.nvml.status == "ok" else None
        checks = run_checks(node, cuda)
        document = {
            "schema_version": 1,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "severity": c.severity} for c in checks],
            "healthy": all(c.ok for c in checks),
        }
        return Result(document, verify_exit_code(checks))

    def collect(self, destination: str) -> Result:
        from nvreload.collect import collect

        manifest = collect(self.host, destination)
        return Result({"schema_version": 1, "collected": destination, "manifest": manifest}, 0)
