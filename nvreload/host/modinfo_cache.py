"""What an on-disk module's .modinfo said, remembered across runs by the file's identity.

Reading .modinfo out of a compressed module means decompressing all of it (the section table sits at
the end): about 120 ms for a 14 MB .ko.xz (RHEL's format), 25 ms for .ko.zst, on every --status that
monitoring runs. The answer only changes when the file does, so it is kept in
/run/nvreload/modinfo-cache.json (tmpfs: gone at reboot; $NVRELOAD_STATE_DIR moves it), keyed by
device, inode, size, mtime and ctime. ctime cannot be set from userspace, so a module rewritten in
place, by DKMS or an installer, never matches its old entry.

A cache that cannot be read or written is simply not used: unprivileged runs read root's, and only a
run that may write the directory adds to it.
"""

from __future__ import annotations

import os

from nvreload.errors import BadInputError
from nvreload.state_files import UnreadableFile, atomic_write_json, read_json

FIELDS = ("version", "vermagic", "license")
# An entry is ~200 bytes, one per module file read: a node's cache is a few KB. A file past this
# (or a FIFO, a device) at the cache's path is not one we wrote, and is not read.
MAX_CACHE_BYTES = 1 << 20


def file_identity(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class ModinfoCache:
    def __init__(self, path: str) -> None:
        self.path = path
        self._entries: dict | None = None

    def _load(self) -> dict:
        if self._entries is None:
            self._entries = {}
            try:
                data = read_json(self.path, MAX_CACHE_BYTES)
                self._entries = data if isinstance(data, dict) else {}
            except UnreadableFile:  # a cache: one that cannot be read is rebuilt
                pass
        return self._entries

    def get(self, module_path: str) -> dict[str, str | None] | None:
        """The remembered fields of the module file at this host path, if the file is unchanged."""
        entry = self._load().get(module_path)
        if not isinstance(entry, dict):
            return None
        remembered = entry.get("identity")
        if remembered is None or remembered != file_identity(module_path):  # stat only when there is an entry
            return None
        values = {field: entry.get(field) for field in FIELDS}
        if not all(v is None or isinstance(v, str) for v in values.values()):
            return None
        return values

    def put(self, module_path: str, values: dict[str, str | None]) -> None:
        identity = file_identity(module_path)
        if identity is None:
            return
        entries = self._load()
        entries[module_path] = {"identity": identity, **{field: values.get(field) for field in FIELDS}}
        try:
            atomic_write_json(self.path, entries, durable=False)  # tmpfs: nothing to make durable
        except (OSError, BadInputError):
            pass  # unprivileged, a read-only /run, a path that is no directory: the next run reads the module again
