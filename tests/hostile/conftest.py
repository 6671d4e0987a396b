"""Fixtures of the hostile-input catalogue: a scratch tree whose snapshot must not change, the shared
tiny-llama build, and running a command as a user who cannot write (root writes everywhere)."""

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

NOBODY = 65534


@pytest.fixture
def scratch():
    """base/ with the working directory base/w: `-o .` stages beside w, so base is what is snapshotted.
    Under /tmp with mode 0755 so the unprivileged user of the unwritable cases can enter it."""
    base = Path(tempfile.mkdtemp(prefix="ltexport-hostile-"))
    (base / "w").mkdir()
    for path in (base, base / "w"):
        os.chmod(path, 0o755)
    yield base
    make_writable(base)
    shutil.rmtree(base)


def snapshot(root: Path) -> dict:
    """{relative path: content hash | 'dir' | 'link -> target'} of everything under root."""
    tree = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[rel] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            tree[rel] = "dir"
        else:
            tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return tree


def read_only(path: Path) -> None:
    for p in [path, *Path(path).rglob("*")] if Path(path).is_dir() else [path]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)


def make_writable(root: Path) -> None:
    for p in [root, *Path(root).rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


@contextmanager
def unprivileged():
    """Permission checks as `nobody` while the block runs, when the tests run as root (as in CI containers)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


class Inputs:
    """What a case sets up in the working directory w: copies of the shared plan and build, and variants."""

    def __init__(self, w: Path, plan: Path, build: Path):
        self.w, self._plan, self._build = w, plan, build
        shutil.copy(plan, w / "good.json")

    def build(self, name: str = "b") -> Path:
        shutil.copytree(self._build, self.w / name)
        return self.w / name

    def legacy_build(self, name: str = "old") -> Path:
        """A build as an older ltexport left it: build.json without format, version or inventory."""
        out = self.build(name)
        info = json.loads((out / "build.json").read_text())
        for key in ("format", "version", "files", "max_positions"):
            info.pop(key)
        (out / "build.json").write_text(json.dumps(info))
        return out

    def plan_with(self, name: str, **changes) -> Path:
        doc = {**json.loads(self._plan.read_text()), **changes}
        (self.w / name).write_text(json.dumps(doc))
        return self.w / name

    def file(self, name: str, data) -> Path:
        path = self.w / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path


@pytest.fixture
def inputs(scratch, tiny_llama_build):
    plan, build = tiny_llama_build
    return Inputs(scratch / "w", plan, build)
