"""The safety rule: ltexport only deletes or replaces what it can prove it wrote.

An output directory (`build -o`, `--keep-failed`, `eval -o`, `bench -o`, `plan --eval-output`) may be
replaced only when it is
- absent, or an empty directory, or
- a previous output of the same kind: its marker file (build.json, eval.json, bench.json) names the
  marker's format, a version, and `files`, the inventory {relative path: size} of every other file it
  wrote, and the directory holds exactly those files at those sizes (files may be missing; nothing
  may be added or changed).
Anything else (a directory with a file the user added, an old marker without an inventory, a
symbolic link, a regular file, the current directory or one containing it) is refused with one
line before any work starts. Replacing removes exactly the inventoried files, then the directories
that became empty. Single output files (`plan -o`, `--plot`) are replaced only when they are what
ltexport writes there (an ltexport plan, a PNG).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ltexport.errors import LtexportError

INVENTORY = "files"


@dataclass(frozen=True)
class Marker:
    """The file that proves a directory is an ltexport output of one kind."""

    file: str    # e.g. build.json
    format: str  # e.g. ltexport-build
    what: str    # e.g. "an ltexport build", for messages
    version: int = 1


def absolute(path) -> Path:
    """The path made absolute without resolving its last component (a symlink stays a symlink)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def writable_dir(path: Path) -> bool:
    effective = os.access in os.supports_effective_ids  # seteuid'd processes: check what the kernel will check
    return os.access(path, os.W_OK | os.X_OK, effective_ids=effective) if effective else os.access(path, os.W_OK | os.X_OK)


def inventory(root: Path, marker_file: str) -> dict:
    """{relative posix path: size} of every regular file under root except the marker."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel != marker_file and path.is_file() and not path.is_symlink():
            files[rel] = path.stat().st_size
    return files


def read_inventory(doc) -> dict | None:
    """The inventory of a marker document, or None when it has none (or a malformed one)."""
    files = doc.get(INVENTORY) if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        return None
    for rel, size in files.items():
        p = PurePosixPath(rel)
        if (not isinstance(size, int) or isinstance(size, bool) or size < 0 or not rel or p.is_absolute()
                or ".." in p.parts or "\\" in rel):
            return None
    return files


def read_marker(directory: Path, marker: Marker):
    """The marker's JSON object, or None when the file is missing, unreadable or not a JSON object."""
    path = Path(directory) / marker.file
    if path.is_symlink() or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def why_not_owned(directory: Path, marker: Marker) -> str | None:
    """None when `directory` is an ltexport output of this kind, exactly as ltexport left it; else why not."""
    doc = read_marker(directory, marker)
    older = doc is not None and "format" not in doc and len(doc) > 0  # what ltexport wrote before markers
    files = read_inventory(doc) if doc is not None and doc.get("format") == marker.format else None
    if older or (files is None and doc is not None and doc.get("format") == marker.format):
        return f"its {marker.file} has no inventory of the files ltexport wrote (an older ltexport made it)"
    if files is None or not isinstance(doc.get("version"), int):
        return f"it is not {marker.what} (no valid {marker.file})"
    for path in sorted(Path(directory).rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if rel == marker.file:
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return f"it holds {rel}, which ltexport did not write"
        if path.is_dir():
            if not any(f.startswith(rel + "/") for f in files):
                return f"it holds {rel}/, which ltexport did not write"
        elif rel not in files:
            return f"it holds {rel}, which ltexport did not write"
        elif path.stat().st_size != files[rel]:
            return f"{rel} changed since ltexport wrote it"
    return None


def why_not_replaceable(path: Path, marker: Marker | None) -> str | None:
    """None when the rule allows replacing `path`; else the reason (for an error line)."""
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.exists():
        return None
    if not path.is_dir():
        return "it is not a directory"
    if not any(path.iterdir()):
        return None
    if marker is None:
        return "it is not empty"
    return why_not_owned(path, marker)


def check_output_dir(path, marker: Marker | None, option: str = "-o") -> Path:
    """Refuse, before any work, an output directory the rule does not allow replacing; returns it absolute."""
    target = absolute(path)
    cwd = absolute(Path.cwd())
    if target == target.parent:
        raise LtexportError(f"{option} {path} is the root directory; give a new directory such as {option} out")
    if target == cwd or target in cwd.parents:
        raise LtexportError(f"{option} {path} is the current directory or contains it; give a new directory such as {option} out")
    problem = why_not_replaceable(target, marker)
    if problem:
        raise LtexportError(f"{option} {path} exists and {problem}, so ltexport will not replace it; "
                            f"choose another {option} or move it away yourself")
    check_parent_writable(target, option, path)
    if target.is_dir() and not writable_dir(target):
        raise LtexportError(f"{option} {path} is not writable; choose another {option} or fix its permissions")
    return target


def check_parent_writable(target: Path, option: str, shown) -> None:
    parent = target.parent
    if not parent.is_dir():
        raise LtexportError(f"directory {parent} does not exist; create it first or choose another {option}")
    if not writable_dir(parent):
        raise LtexportError(f"cannot write {shown}: directory {parent} is not writable; choose another {option} or fix its permissions")


def check_output_file(path, option: str, is_ours, what: str) -> Path:
    """Refuse, before any work, an output file that cannot be written or is not ltexport's to replace.

    is_ours(path) -> bool: whether an existing file is what ltexport writes here (`what` names it)."""
    target = absolute(path)
    if target.is_dir():
        raise LtexportError(f"{option} {path} is a directory; give a file path such as {path}/{what.split()[-1]}")
    check_parent_writable(target, option, path)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise LtexportError(f"{option} {path} exists and is not a regular file; choose another {option}")
    if target.exists() and not is_ours(target):
        raise LtexportError(f"{option} {path} exists and is not {what}, so ltexport will not overwrite it; "
                            f"choose another {option} or move it away yourself")
    return target


def is_png(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def remove_owned(directory: Path, marker: Marker | None) -> bool:
    """Delete the inventoried files, the marker and the directories left empty; True when nothing is left.

    Anything not in the inventory stays (and so does the directory holding it)."""
    directory = Path(directory)
    doc = read_marker(directory, marker) if marker else None
    for rel in read_inventory(doc) or {}:
        path = directory / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()
    if doc is not None:
        (directory / marker.file).unlink(missing_ok=True)
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    try:
        directory.rmdir()
    except OSError:
        return False
    return True
