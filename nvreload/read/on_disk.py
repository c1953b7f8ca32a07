"""Which nvidia.ko would load next for the running kernel, and what DKMS has built."""

from __future__ import annotations

from itertools import groupby

from nvreload.errors import ModuleFileError
from nvreload.model import DkmsEntry, OnDiskModule
from nvreload.rootfs import RootFS

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from typing import Protocol

    class ModinfoMemo(Protocol):
        """What a module file's .modinfo said, remembered by the file's identity (host/modinfo_cache.py)."""

        def get(self, module_path: str) -> dict[str, str | None] | None: ...
        def put(self, module_path: str, values: dict[str, str | None]) -> None: ...


MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")
# depmod's default search order puts updates/ (where DKMS installs) before the kernel's own tree.
_PRIORITY = ("updates/", "extra/", "kernel/")


def module_file_names(module: str) -> set[str]:
    names = {module, module.replace("_", "-")}
    return {n + suffix for n in names for suffix in MODULE_SUFFIXES}


def _module_name(path: str) -> str:
    """The name modprobe knows a module file by: its basename without suffix, '-' read as '_'."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


# modprobe reads its configuration from these directories (man modprobe.d)
_MODPROBE_D = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "lib/modprobe.d", "usr/lib/modprobe.d")


def _aliases(root: RootFS, base: str, module: str) -> list[str]:
    """What `modprobe <module>` resolves the name to before looking it up: `alias <module> <real>`
    lines in modprobe.d (Debian's `alias nvidia nvidia-current`, Ubuntu's former `alias nvidia
    nvidia_384`) and in the kernel's modules.alias."""
    wanted = module.replace("-", "_")
    texts = [
        root.read_text(f"{d}/{n}") or "" for d in _MODPROBE_D for n in sorted(root.listdir(d)) if n.endswith(".conf")
    ]
    texts.append(root.read_text(f"{base}/modules.alias") or "")
    found = []
    for text in texts:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) == 3 and words[0] == "alias" and words[1].replace("-", "_") == wanted:
                target = words[2].replace("-", "_")
                if target != wanted and target not in found:
                    found.append(target)
    return found


def _from_modules_dep(root: RootFS, base: str, names: list[str]) -> str | None:
    text = root.read_text(f"{base}/modules.dep")
    if not text:
        return None
    by_name: dict[str, str] = {}
    for line in text.splitlines():
        path = line.split(":", 1)[0].strip()
        if path:
            by_name.setdefault(_module_name(path), path)
    for name in names:
        listed = by_name.get(name)
        if listed:
            return listed if listed.startswith("/") else f"{base}/{listed}"
    return None


def _walk(root: RootFS, top: str, wanted: set[str], found: list[str], depth: int = 0) -> None:
    if depth > 8:
        return
    for name in root.listdir(top):
        path = f"{top}/{name}"
        if name in wanted and root.kind(path) in ("file", "other"):  # a FIFO named so is found, then unreadable
            found.append(path)
        elif root.is_dir(path) and not name.startswith(("build", "source")):
            _walk(root, path, wanted, found, depth + 1)


def find_module_file(root: RootFS, release: str, module: str = "nvidia") -> str | None:
    """The file `modprobe <module>` would load for the kernel `release`: the name through its
    modprobe aliases first (as modprobe does), then itself, looked up in modules.dep, else in the tree."""
    base = f"lib/modules/{release}"
    if not root.is_dir(base):
        base = f"usr/lib/modules/{release}"
        if not root.is_dir(base):
            return None
    names = _aliases(root, base, module) + [module.replace("-", "_")]
    by_dep = _from_modules_dep(root, base, names)
    if by_dep and root.exists(by_dep):
        return by_dep.lstrip("/")
    for name in names:
        found: list[str] = []
        _walk(root, base, module_file_names(name), found)
        if found:
            return min(found, key=lambda path: _rank(base, path))
    return None


def _rank(base: str, path: str) -> tuple[int, str]:
    rel = path[len(base) + 1 :]
    for index, prefix in enumerate(_PRIORITY):
        if rel.startswith(prefix):
            return index, rel
    return len(_PRIORITY), rel


def _release_key(release: str) -> tuple:
    """6.1.0-28-amd64 after 6.1.0-9-amd64: numbers compare as numbers."""
    key = []
    for digits, chars in groupby(release, key=str.isdecimal):
        part = "".join(chars)
        key.append((0, int(part), "") if digits else (1, 0, part))
    return tuple(key)


def newer_kernels(root: RootFS, running: str | None, most: int = 3) -> list[str]:
    """Installed kernels newer than the running one: a /lib/modules tree and a /boot/vmlinuz image
    (a tree alone is what a removed kernel leaves). The newest `most` of them, oldest first."""
    if not running:
        return []
    found = [
        release
        for release in root.listdir("lib/modules")
        if release != running
        and root.exists(f"boot/vmlinuz-{release}")
        and _release_key(release) > _release_key(running)
    ]
    return sorted(found, key=_release_key)[-most:]


def available_modules(root: RootFS, release: str | None, names: tuple[str, ...]) -> tuple[str, ...]:
    """Which of `names` modprobe would find for the running kernel (modules.dep, else the tree)."""
    if not release:
        return ()
    return tuple(name for name in names if find_module_file(root, release, name))


def read_on_disk_module(
    root: RootFS, release: str | None, module: str = "nvidia", cache: ModinfoMemo | None = None
) -> OnDiskModule | None:
    """`cache` (live nodes only): skip decompressing a module file that has not changed since a
    previous run read it."""
    if not release:
        return None
    path = find_module_file(root, release, module)
    if path is None:
        return None
    host_path = root.host_path(path) if cache is not None else None
    if cache is not None and host_path is not None:
        remembered = cache.get(host_path)
        if remembered is not None:
            return OnDiskModule("/" + path, remembered["version"], remembered["vermagic"], remembered["license"])
    handle = root.open_file(path)
    if handle is None:
        return OnDiskModule("/" + path, None, None, None, error="unreadable")
    # the ELF reader (and struct) only once a module file is read: the cache answers most runs
    from nvreload.read.elf_modinfo import read_modinfo_file

    try:
        with handle:
            info = read_modinfo_file(path, handle)
    except ModuleFileError as exc:
        return OnDiskModule("/" + path, None, None, None, error=str(exc))

    def first(key: str) -> str | None:
        values = info.get(key)
        return values[0] if values else None

    found = OnDiskModule("/" + path, first("version"), first("vermagic"), first("license"))
    if cache is not None and host_path is not None:
        cache.put(host_path, {"version": found.version, "vermagic": found.vermagic, "license": found.license})
    return found


def read_dkms(root: RootFS) -> tuple[DkmsEntry, ...]:
    """DKMS state from var/lib/dkms/<module>/<version>/<kernel>/<arch>/ (what `dkms status` reads).

    A build that was installed leaves var/lib/dkms/<module>/kernel-<kernel>-<arch> -> <version>/...
    """
    entries = []
    for module in root.listdir("var/lib/dkms"):
        if not module.startswith("nvidia"):
            continue
        installed_links = {
            name[len("kernel-") :]: root.link_target(f"var/lib/dkms/{module}/{name}")
            for name in root.listdir(f"var/lib/dkms/{module}")
            if name.startswith("kernel-")
        }
        for version in root.listdir(f"var/lib/dkms/{module}"):
            if version.startswith(("kernel-", "original_module")) or not root.is_dir(
                f"var/lib/dkms/{module}/{version}"
            ):
                continue
            for kernel in root.listdir(f"var/lib/dkms/{module}/{version}"):
                if kernel in ("source", "build", "") or "/" in kernel:  # a kernel release names one directory
                    continue
                for arch in root.listdir(f"var/lib/dkms/{module}/{version}/{kernel}"):
                    if not root.is_dir(f"var/lib/dkms/{module}/{version}/{kernel}/{arch}"):
                        continue
                    link = installed_links.get(f"{kernel}-{arch}")
                    entries.append(DkmsEntry(module, version, kernel, arch, installed=bool(link and version in link)))
    return tuple(entries)
