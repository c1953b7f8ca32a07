"""The shape docs/architecture.md describes, held by the code itself: the import graph has no cycle
and no upward import, and each kind of side effect has one module that performs it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nvreload"

# Lower layers never import higher ones. Modules of one layer may import each other.
LAYERS = (
    (
        "nvreload",
        "nvreload.errors",
        "nvreload.model",
        "nvreload.catalog",
        "nvreload.state_files",
        "nvreload.pending",
        "nvreload.policy",
        "nvreload.requests",
        "nvreload.action_request",
        "nvreload.records",
        "nvreload.rootfs",
    ),
    ("nvreload.read",),
    ("nvreload.host",),
    ("nvreload.diagnosis",),
    ("nvreload.status", "nvreload.collect"),
    ("nvreload.engine",),
    (
        "nvreload.actions",
        "nvreload.preconditions",
        "nvreload.session",
        "nvreload.app",
        "nvreload.render",
        "nvreload.frontend",
        "nvreload.slurm_drain",
    ),
    ("nvreload.cli", "nvreload.entry", "nvreload.__main__", "nvreload.fleet"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every nvreload module `path` imports, at the top or inside a function (lazy imports count)."""
    found = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from nvreload.host import nvidia_tools` imports the submodule
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "nvreload")
    return found


def layer(name: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{name} is in no layer: add it to LAYERS and docs/architecture.md"
    return best[0]


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path) - {name} for name, path in modules().items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{name} ({layer(name)}) imports {target} ({layer(target)})"
        for name, targets in graph().items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if target == "nvreload" or target not in edges:
                continue  # the package's own __init__ holds only the version
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target] if target in path else [name, target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_engine_imports_no_cli_rendering_or_command_module():
    for name, targets in graph().items():
        if name.startswith("nvreload.engine"):
            assert not {
                t
                for t in targets
                if t.startswith(
                    ("nvreload.cli", "nvreload.entry", "nvreload.render", "nvreload.app", "nvreload.actions")
                )
            }, name
    for name, path in modules().items():
        if name.startswith("nvreload.engine"):
            source = path.read_text()
            assert "import click" not in source and "import rich" not in source and "from rich" not in source, name


def test_live_and_simulated_nodes_reach_the_planners_view_by_one_path():
    """The simulated node gives a NodeState and takes the live path to its ReloadView: no target
    builds the view, or decides its blockers, by rules of its own."""
    builders = sorted(name for name, path in modules().items() if "ReloadView(" in path.read_text())
    assert builders == ["nvreload.engine.plan"]
    observers = sorted(name for name, path in modules().items() if "observed_view(" in path.read_text())
    assert observers == ["nvreload.engine.live_target", "nvreload.engine.observation", "nvreload.engine.sim"]


# Each side effect and the one module allowed to perform it.
DOORS = {
    "os.kill(": "nvreload.host.processes",
    "os.fork(": "nvreload.host.processes",
    "subprocess.Popen(": "nvreload.host.commands",
    '"rmmod"': "nvreload.host.kmod",
    '"modprobe"': "nvreload.host.kmod",
    "systemctl()": "nvreload.host.systemd",
    'host_path(f"sys/class/vtconsole': "nvreload.host.consoles",
    '"-pm"': "nvreload.host.nvidia_tools",
    '["nvidia-cuda-mps-control"': "nvreload.host.nvidia_tools",
    "CUDA_PROBE": "nvreload.host.cuda",
    '"--no-questions"': "nvreload.host.installer",
    '/stat"': "nvreload.host.processes",
    "fcntl.flock(": "nvreload.engine.lock",
    '"--gpu-reset"': "nvreload.host.nvidia_tools",
    '"cdi", "generate"': "nvreload.host.nvidia_tools",
    "os.mknod(": "nvreload.host.device_nodes",
    "nvmlDeviceCreateGpuInstanceWithPlacement(": "nvreload.host.mig_session",
    "os.dup2(": "nvreload.render.output",
    "atomic_write_json(": "nvreload.state_files",
    '"scontrol"': "nvreload.host.slurm",
}


@pytest.mark.parametrize("needle,door", sorted(DOORS.items()))
def test_each_side_effect_has_one_door(needle, door):
    users = sorted(name for name, path in modules().items() if needle in path.read_text())
    # the writers of nvreload's own state files call the one atomic writer; nothing else writes JSON state
    allowed = {door} | (
        {
            "nvreload.engine.journal",
            "nvreload.engine.sim",
            "nvreload.fleet.rundir",
            "nvreload.host.modinfo_cache",
            "nvreload.pending",
            "nvreload.slurm_drain",
        }
        if needle == "atomic_write_json("
        else set()
    )
    assert set(users) <= allowed and door in users, users


LONGEST_FUNCTION = 60


def test_no_function_in_the_package_is_longer_than_sixty_lines():
    """A function a maintainer cannot see whole on one screen does several jobs: split it into named parts."""
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []
