"""The application object: what each command does, with no parsing and no rendering."""

from __future__ import annotations

from nvreload.errors import BadInputError, ExitCode, UsageError
from nvreload.records import record
from nvreload.state_files import StatePaths

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from collections.abc import Callable

    from nvreload.actions import ActionRequest, ActionResult
    from nvreload.engine.engine import Reporter
    from nvreload.host.machine import Machine


@record
class Result:
    """A command's outcome: a JSON-able document and the exit code it implies."""

    document: dict
    exit_code: int


class App:
    def __init__(self, root: str | None = None, paths: StatePaths | None = None, simulate: str | None = None) -> None:
        self.root_arg = root
        self.simulate = simulate  # None: a real node (live or --root); "" or a file: the simulated node
        self.paths = paths or StatePaths.from_environment()
        self._machine: Machine | None = None

    def _simulated_state(self):
        """The read model of the simulated node a --simulate run acts on (read, never written)."""
        from nvreload.actions import simulated_node
        from nvreload.engine.sim_status import simulated_node_state

        return simulated_node_state(
            simulated_node(self.simulate or "", self.paths.for_run(simulated=True), persist=False)
        )

    @property
    def machine(self) -> Machine:
        return self._open_machine(prefetch_nvml=False)

    def _open_machine(self, prefetch_nvml: bool) -> Machine:
        """prefetch_nvml: on a live node with the nvidia module present, start the NVML probe (a
        child process) before importing the read model, so the two run side by side."""
        if self._machine is None:
            from nvreload.host.commands import CommandRunner
            from nvreload.host.nvml import configured_timeout
            from nvreload.rootfs import open_root

            configured_timeout()  # a bad NVRELOAD_NVML_TIMEOUT is refused whether or not NVML gets probed

            fs = open_root(self.root_arg)
            runner = CommandRunner()
            probe = None
            if prefetch_nvml and fs.is_live and fs.exists("sys/module/nvidia"):
                from nvreload.host.nvml import NvmlProbe

                probe = NvmlProbe.start(runner)
            from nvreload.host.machine import Machine

            self._machine = Machine(fs, runner, nvml_probe=probe, modinfo_cache_path=self.paths.modinfo_cache)
        return self._machine

    def status(self, baseline: str | None = None) -> Result:
        """--status; with `baseline` (a known-good node's status document) the drift_* findings of
        this node against it are added, and the recommended action drawn from all of them."""
        from nvreload.status import status_document, status_exit_code

        wanted = None
        if baseline is not None:  # a bad file is one line before the node is read
            from nvreload.diagnosis.drift import load_baseline

            wanted = load_baseline(baseline)
        if self.simulate is not None:
            node = self._simulated_state()
        else:
            machine = self._open_machine(prefetch_nvml=True)
            from nvreload.read.node import read_node

            node = read_node(machine)
        document = status_document(node)
        if wanted is not None:
            from nvreload.diagnosis.drift import drift_findings, with_drift
            from nvreload.diagnosis.findings import diagnose

            document = status_document(node, with_drift(diagnose(node), drift_findings(document, wanted)))
        if self.root_arg is None or self.simulate is not None:
            # not for a snapshot: this machine's reload-pending record is not the snapshot's
            document["reload"]["pending"] = self._pending(document["recommended_action"])
        return Result(document, status_exit_code(document))

    def _pending(self, recommended_action: str) -> dict | None:
        """The reload-pending record of the node read, while its diagnosis still asks for a reload
        (after a reboot or a reload by hand the record is history)."""
        if recommended_action != "reload":
            return None
        from nvreload.errors import BadInputError
        from nvreload.pending import pending_path, read_pending

        try:
            record = read_pending(pending_path(self.paths.for_run(simulated=self.simulate is not None).state_dir))
        except BadInputError as exc:
            return {"error": exc.message}
        return record.document() if record is not None else None

    def verify(self) -> Result:
        from nvreload.diagnosis.health import run_checks, verify_exit_code

        if self.simulate is not None:
            checks = run_checks(self._simulated_state(), None)  # a simulated node has no CUDA to try
        else:
            machine = self._open_machine(prefetch_nvml=True)
            from nvreload.host.cuda import cuda_context_check
            from nvreload.read.node import read_node

            if not machine.live:
                raise UsageError("--verify checks the live driver (NVML, a CUDA context); it cannot run on --root")
            node = read_node(machine, with_consumers=False)
            cuda = cuda_context_check(machine.runner) if node.nvml.status == "ok" else None
            checks = run_checks(node, cuda)
        document = {
            "schema_version": 1,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "severity": c.severity} for c in checks],
            "healthy": all(c.ok for c in checks),
        }
        return Result(document, verify_exit_code(checks))

    def check_kernel(self, release: str) -> Result:
        """--check-kernel RELEASE (the kernel hook): will that kernel boot with a working driver? Its
        nvidia module as modprobe would resolve it there, against the userspace installed now."""
        from nvreload.diagnosis.findings import next_kernel_findings
        from nvreload.model import NextKernel
        from nvreload.read.on_disk import read_on_disk_module
        from nvreload.read.userspace import read_userspace

        if not release or "/" in release or release in (".", ".."):
            raise UsageError(f"--check-kernel takes a kernel release (as in /lib/modules), not {release!r}")
        fs = self.machine.fs
        if not fs.is_dir(f"lib/modules/{release}"):
            raise BadInputError(f"no /lib/modules/{release}: kernel {release} is not installed")
        module = read_on_disk_module(fs, release, cache=self.machine.modinfo_cache)
        userspace = read_userspace(fs).version
        findings = next_kernel_findings((NextKernel(release, module),), userspace)
        document = {
            "schema_version": 1,
            "kernel_release": release,
            "module": None if module is None else {"path": module.path, "version": module.version},
            "userspace_version": userspace,
            "findings": [{"code": f.code, "severity": f.severity, "message": f.message} for f in findings],
        }
        return Result(document, ExitCode.WARNING if findings else ExitCode.OK)

    def collect(self, destination: str) -> Result:
        from nvreload.collect import collect

        manifest = collect(self.machine, destination)
        return Result({"schema_version": 1, "collected": destination, "manifest": manifest}, 0)

    def act(self, request: ActionRequest, reporter: Reporter, confirm: Callable[[str], bool] | None) -> ActionResult:
        """--reload, --stop, --start, --rollback: the engine on the live, simulated or recorded node."""
        from nvreload.actions import run_action
        from nvreload.host.nvml import configured_timeout

        configured_timeout()
        return run_action(request, self.paths, reporter, confirm)
