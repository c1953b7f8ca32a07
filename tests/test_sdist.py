"""The source distribution holds the whole project (tests, their fixtures, packaging/, bench/, docs/),
and the repository holds nothing outside the project's fixed layout. Built with the same backend
pyproject.toml names (hatchling), from this checkout; compared with what git tracks."""

import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The fixed layout (the brief): what may sit at the repository's root
LAYOUT = {
    ".ci",
    ".gitignore",
    "LICENSE",
    "README.md",
    "bench",
    "docs",
    "nvreload",
    "packaging",
    "pyproject.toml",
    "tests",
}


def tracked_files() -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to compare the sdist with")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


@pytest.fixture(scope="module")
def sdist_members(tmp_path_factory) -> set[str]:
    builder_module = pytest.importorskip("hatchling.builders.sdist")
    out = tmp_path_factory.mktemp("sdist")
    (archive,) = list(builder_module.SdistBuilder(str(REPO)).build(directory=str(out), versions=["standard"]))
    with tarfile.open(archive) as tar:
        # "nvreload-0.1.0/tests/..." -> "tests/..."
        return {member.name.split("/", 1)[1] for member in tar.getmembers() if "/" in member.name}


def test_every_tracked_file_is_in_the_sdist(sdist_members):
    missing = []
    for name in tracked_files():
        if (REPO / name).is_symlink():
            # a fixture's sysfs link goes in as what it points to (a file, or a directory's files)
            if name not in sdist_members and not any(m.startswith(name + "/") for m in sdist_members):
                if (REPO / name).exists():
                    missing.append(name)
            continue
        if name not in sdist_members:
            missing.append(name)
    assert not missing, f"{len(missing)} tracked files are not in the sdist, e.g. {missing[:5]}"


def test_the_sdist_holds_nothing_git_does_not_track(sdist_members):
    tracked = set(tracked_files())
    # what a build adds of its own, and what a link to a directory expands to
    extra = {
        m
        for m in sdist_members
        if m != "PKG-INFO" and m not in tracked and not any(m.startswith(t + "/") for t in tracked)
    }
    assert not extra, f"the sdist holds files git does not track (build output, caches?): {sorted(extra)[:5]}"


def test_the_repository_root_holds_only_the_fixed_layout():
    stray = sorted({name.split("/", 1)[0] for name in tracked_files()} - LAYOUT)
    assert not stray, f"files outside the project's layout are committed at the root: {stray}"
