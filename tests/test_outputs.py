"""The safety rule (ltexport.outputs): what ltexport may replace, and what replacing removes."""

import json
import os

import pytest

from ltexport.outputs import Marker, remove_owned, why_not_replaceable
from ltexport.staging import stamp

MARKER = Marker("out.json", "ltexport-test", "a test output")


@pytest.fixture
def output(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "a.bin").write_bytes(b"12345")
    (out / "report.md").write_text("report")
    (out / MARKER.file).write_text(json.dumps({"format": MARKER.format, "version": 1}))
    stamp(out, MARKER)
    return out


def test_an_output_exactly_as_written_may_be_replaced(output, tmp_path):
    assert json.loads((output / MARKER.file).read_text())["files"] == {"report.md": 6, "sub/a.bin": 5}
    assert why_not_replaceable(output, MARKER) is None
    assert why_not_replaceable(tmp_path / "absent", MARKER) is None
    (tmp_path / "empty").mkdir()
    assert why_not_replaceable(tmp_path / "empty", None) is None
    (output / "report.md").unlink()  # a file the user removed: still ours
    assert why_not_replaceable(output, MARKER) is None


@pytest.mark.parametrize("change, reason", [
    (lambda out: (out / "thesis.tex").write_text("mine"), "thesis.tex, which ltexport did not write"),
    (lambda out: (out / "notes").mkdir(), "notes/, which ltexport did not write"),
    (lambda out: os.symlink("/etc", out / "sub" / "etc"), "sub/etc, which ltexport did not write"),
    (lambda out: (out / "report.md").write_text("edited by hand"), "report.md changed"),
    (lambda out: (out / MARKER.file).write_text("{}"), "not a test output"),
    (lambda out: (out / MARKER.file).write_text('{"made": "by an older version"}'), "no inventory"),
    (lambda out: (out / MARKER.file).write_text(json.dumps({"format": "ltexport-test", "version": 1,
                                                           "files": {"../../etc/passwd": 1}})), "no inventory"),
    (lambda out: (out / MARKER.file).write_bytes(os.urandom(32)), "not a test output"),
])
def test_anything_else_is_refused(output, change, reason):
    change(output)
    assert reason in why_not_replaceable(output, MARKER)


def test_symlinks_and_files_are_never_replaced(output, tmp_path):
    os.symlink(output, tmp_path / "link")
    assert why_not_replaceable(tmp_path / "link", MARKER) == "it is a symbolic link"
    (tmp_path / "f").write_text("x")
    assert why_not_replaceable(tmp_path / "f", MARKER) == "it is not a directory"


def test_removing_an_output_removes_only_its_inventory(output):
    (output / "sub" / "later.txt").write_text("the user's")
    assert not remove_owned(output, MARKER)
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*")) == ["sub", "sub/later.txt"]
