"""Outputs appear whole or not at all: write in a temp place beside the target, then move.

mkstemp/mkdtemp create 0600 files and 0700 directories; what ends up in place gets the modes an
ordinary open()/mkdir() would give (0666/0777 minus the umask), so e.g. a Triton server running as
another user can read a model repository.
"""

import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from ltexport.errors import LtexportError

_UMASK_LOCK = threading.Lock()
_PROC_STATUS = "/proc/self/status"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # set and restore; a restrictive interim value if another thread creates a file
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode open(path, "w") gives a new file."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode os.mkdir(path) gives a new directory."""
    return 0o777 & ~current_umask()


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data) -> None:
    """Write `data` (bytes or any buffer) to `path` through a temp file beside it."""
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
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
        os.chmod(stage, dir_mode())
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
