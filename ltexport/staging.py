"""Outputs appear whole or not at all: write in a temp place beside the target, then move."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ltexport.errors import LtexportError


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_dir(target: Path, keep_failed: Path | None = None):
    """Yield a temp dir beside `target`; on success it replaces `target`, on failure it is removed
    (or moved to `keep_failed`). An existing `target` is only replaced after success."""
    target = Path(target)
    _check_parent(target)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield stage
    except BaseException:
        if keep_failed is not None:
            shutil.rmtree(keep_failed, ignore_errors=True)
            shutil.move(str(stage), str(keep_failed))
        else:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_parent(path: Path) -> None:
    if not path.parent.is_dir():
        raise LtexportError(f"directory {path.parent} does not exist; create it first")
