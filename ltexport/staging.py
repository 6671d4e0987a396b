"""Outputs appear whole or not at all: write in a temp place beside the target, then move.

Temp names carry the owner's pid (`.NAME.staging-<pid>-<rand>`, `.NAME.old-<pid>-<rand>`,
`.NAME.tmp-<pid>-<rand>`), so a later run can sweep what a killed run (SIGKILL, power loss) left
beside the same target: only names with exactly that prefix, and only when the owner is gone. What
may be replaced is decided by ltexport.outputs (the safety rule).

mkstemp/mkdtemp create 0600 files and 0700 directories; what ends up in place gets the modes an
ordinary open()/mkdir() would give (0666/0777 minus the umask), so e.g. a Triton server running as
another user can read a model repository.
"""

import errno
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from ltexport import interrupts, outputs
from ltexport.errors import LtexportError
from ltexport.outputs import Marker

_UMASK_LOCK = threading.Lock()
_PROC_STATUS = "/proc/self/status"
_KINDS = ("staging", "old", "tmp")


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


def temp_prefix(target: Path, kind: str) -> str:
    """`.NAME.<kind>-<pid>-`: what our temp files beside `target` start with."""
    return f".{Path(target).name}.{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(target: Path, marker: Marker | None = None) -> None:
    """Remove what dead runs left beside `target`: staging and temp files, and `.old` copies of a
    previous output (put back when `target` itself is missing, else removed as the rule allows)."""
    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.({'|'.join(_KINDS)})-(\d+)-[A-Za-z0-9_]+$")
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for path in entries:
        m = pattern.match(path.name)
        if not m or int(m.group(2)) == os.getpid() or _pid_alive(int(m.group(2))):
            continue
        try:
            if m.group(1) != "old":
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            elif not target.exists() and not target.is_symlink():
                os.rename(path, target)  # the run died between moving the old output aside and the new one in
            elif path.is_dir() and outputs.why_not_replaceable(path, marker) is None:
                outputs.remove_owned(path, marker)
        except OSError:
            pass  # best effort: a leftover we cannot remove must not stop this run


def stamp(directory: Path, marker: Marker) -> None:
    """Record the inventory of `directory` in its marker (which must already hold format and version)."""
    doc = outputs.read_marker(directory, marker)
    if doc is None or doc.get("format") != marker.format:
        raise RuntimeError(f"{directory}/{marker.file} must be written before the output is committed")
    doc[outputs.INVENTORY] = outputs.inventory(directory, marker.file)
    write_text_atomic(Path(directory) / marker.file, json.dumps(doc, indent=1) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data) -> None:
    """Write `data` (bytes or any buffer) to `path` through a temp file beside it."""
    write_files_atomic({Path(path): data})


def write_files_atomic(files: dict) -> None:
    """Write {path: bytes} all or nothing: every temp file is written before any target is replaced."""
    temps = []
    try:
        for path, data in files.items():
            path = Path(path)
            _check_parent(path)
            sweep_stale(path)
            fd, tmp = _os_call(tempfile.mkstemp, path, prefix=temp_prefix(path, "tmp"), dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), file_mode())
                f.write(data)
        interrupts.check()
        with interrupts.deferred():
            for tmp, path in temps:
                _os_call(os.replace, path, tmp, path)
            temps = []
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


@contextmanager
def staged_dir(target: Path, marker: Marker | None = None, keep_failed: Path | None = None, log=None):
    """Yield a temp dir beside `target`; on success it replaces `target`, on failure it is removed
    (or, for an error that is not an interrupt, moved to `keep_failed`).

    `marker`: the stage must hold this marker file (format and version) when the block ends; its
    inventory is recorded then. `target` and `keep_failed` must be replaceable under the safety rule
    (checked again here, since the block may run for a long time)."""
    target = outputs.absolute(target)
    for path in (target, keep_failed):
        if path is not None:
            outputs.check_output_dir(path, marker, "--keep-failed" if path is keep_failed else "-o")
    stage = new_stage(target, marker)
    try:
        yield stage
    except KeyboardInterrupt:
        _remove(stage)
        raise
    except BaseException:
        if keep_failed is None or interrupts.arrived():
            _remove(stage)
        else:
            _keep(stage, outputs.absolute(keep_failed), marker, log)
        raise
    try:
        interrupts.check()
        _commit(stage, target, marker, log)
    except BaseException:
        _remove(stage)
        raise


def new_stage(target: Path, marker: Marker | None = None) -> Path:
    """An empty directory `.NAME.staging-<pid>-<rand>` beside target, after sweeping dead runs' leftovers."""
    _check_parent(target)
    sweep_stale(target, marker)
    stage = Path(_os_call(tempfile.mkdtemp, target, prefix=temp_prefix(target, "staging"), dir=target.parent))
    os.chmod(stage, dir_mode())
    return stage


def _commit(stage: Path, target: Path, marker: Marker | None, log) -> None:
    problem = outputs.why_not_replaceable(target, marker)
    if problem:
        raise LtexportError(f"{target} changed while ltexport was writing it ({problem}); "
                            f"move it away and run again")
    if marker is not None:
        stamp(stage, marker)
    old = None
    with interrupts.deferred():
        if target.exists():
            old = target.with_name(temp_prefix(target, "old") + secrets.token_hex(4))
            _os_call(os.rename, target, target, old)
        try:
            _os_call(os.rename, target, stage, target)
        except LtexportError:
            if old is not None:
                os.rename(old, target)  # put the previous output back
            raise
    if old is not None and not outputs.remove_owned(old, marker) and log is not None:
        log(f"note: left {old}: files appeared in {target} while ltexport was writing it")


def _keep(stage: Path, keep: Path, marker: Marker | None, log) -> None:
    """Move a failed stage to --keep-failed, replacing only what the safety rule allows."""
    try:
        if marker is not None and not (stage / marker.file).is_file():  # failed before writing it
            write_text_atomic(stage / marker.file, json.dumps(
                {"format": marker.format, "version": marker.version, "incomplete": True}) + "\n")
        if keep.parent != stage.parent:  # another filesystem, maybe: copy beside keep first
            moved = new_stage(keep, marker)
            shutil.copytree(stage, moved, dirs_exist_ok=True)
            _remove(stage)
            stage = moved
        _commit(stage, keep, marker, log)
    except (OSError, LtexportError) as exc:
        _remove(stage)
        if log is not None:
            log(f"note: could not keep the failed build in {keep} ({exc})")


def _remove(stage: Path) -> None:
    with interrupts.deferred():
        shutil.rmtree(stage, ignore_errors=True)


def _os_call(fn, shown: Path, *args, **kwargs):
    """fn(*args): an OSError (read-only, full or vanished filesystem) becomes one error line."""
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LtexportError(f"no space left on the device holding {shown}; free space or choose another output") from None
        raise LtexportError(f"cannot write {shown} ({exc.strerror or exc.__class__.__name__}); "
                            "check the path and its permissions") from None


def _check_parent(path: Path) -> None:
    if not Path(path).parent.is_dir():
        raise LtexportError(f"directory {Path(path).parent} does not exist; create it first")
