"""The one door to the kernel's module loader: rmmod and modprobe (through the command runner), and
the module options modprobe would apply (modprobe.d and the kernel command line)."""

from __future__ import annotations

from nvreload.host.commands import CommandRunner
from nvreload.rootfs import RootFS

MODPROBE_D = ("etc/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d", "run/modprobe.d")


def modprobe_options(fs: RootFS) -> dict[str, dict[str, str]]:
    """`options <module> k=v` from modprobe.d, and `<module>.k=v` from the kernel command line."""
    options: dict[str, dict[str, str]] = {}
    for directory in MODPROBE_D:
        for name in fs.listdir(directory):
            if not name.endswith(".conf"):
                continue
            for line in (fs.read_text(f"{directory}/{name}") or "").splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 3 and fields[0] == "options":
                    module = fields[1].replace("-", "_")
                    for pair in fields[2:]:
                        key, _, value = pair.partition("=")
                        options.setdefault(module, {})[key] = value
    for token in (fs.read_text("proc/cmdline") or "").split():
        head, _, value = token.partition("=")
        if "." in head:
            module, _, key = head.partition(".")
            options.setdefault(module.replace("-", "_"), {})[key] = value
    return options


class ModuleLoader:
    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    def unload(self, name: str) -> None:
        self.runner.check(["rmmod", name], timeout=60)

    def load(self, name: str, parameters: dict[str, str]) -> None:
        self.runner.check(["modprobe", name, *(f"{k}={v}" for k, v in sorted(parameters.items()))], timeout=300)
