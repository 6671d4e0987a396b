"""Staged outputs land with the modes an ordinary open()/mkdir() gives (umask), not mkstemp's 0600/0700."""

import json
import os
import stat
import threading

import pytest

from ltexport import staging
from ltexport.outputs import Marker
from ltexport.staging import current_umask, staged_dir, write_bytes_atomic, write_text_atomic
from tests.conftest import assert_umask_modes


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=lambda m: f"umask{m:03o}")
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize("proc", [True, False], ids=["proc-status", "os-umask"])
def test_current_umask_reads_without_changing_it(umask, proc, monkeypatch, tmp_path):
    if not proc:
        monkeypatch.setattr(staging, "_PROC_STATUS", str(tmp_path / "missing"))
    assert current_umask() == umask
    assert current_umask() == umask  # still set
    assert os.umask(umask) == umask


def test_atomic_writes_honour_the_umask(umask, tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.bin"
    old.write_bytes(b"previous")
    os.chmod(old, 0o600)
    write_text_atomic(new, "{}\n")
    write_bytes_atomic(old, memoryview(b"replaced"))  # any buffer (TensorRT's IHostMemory is one)
    assert _mode(new) == _mode(old) == 0o666 & ~umask
    assert new.read_text() == "{}\n" and old.read_bytes() == b"replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "old.bin"]  # no temp files left


MARKER = Marker("out.json", "ltexport-test", "a test output")


def _write_output(stage, *names):
    for name in names:
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_text(name)
    write_text_atomic(stage / MARKER.file, json.dumps({"format": MARKER.format, "version": 1}))


def test_staged_dir_honours_the_umask(umask, tmp_path):
    target = tmp_path / "out"
    with staged_dir(target, MARKER) as stage:
        _write_output(stage, "stale.txt")
    with staged_dir(target, MARKER) as stage:  # a previous output is replaced
        (stage / "sub").mkdir()
        write_text_atomic(stage / "sub" / "report.json", "{}")
        (stage / "model.onnx").write_bytes(b"x")
        _write_output(stage)
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx", MARKER.file, "sub"]
    assert json.loads((target / MARKER.file).read_text())["files"] == {"model.onnx": 1, "sub/report.json": 2}
    assert_umask_modes(target, umask)


def test_kept_failed_stage_honours_the_umask(umask, tmp_path):
    kept = tmp_path / "failed"
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "out", MARKER, keep_failed=kept) as stage:
        write_text_atomic(stage / "report.json", "{}")
        raise RuntimeError("validation failed")
    assert not (tmp_path / "out").exists()
    assert json.loads((kept / MARKER.file).read_text())["files"] == {"report.json": 2}  # replaceable next time
    assert_umask_modes(kept, umask)


def test_reading_the_umask_from_threads_is_safe(monkeypatch, tmp_path, umask):
    monkeypatch.setattr(staging, "_PROC_STATUS", str(tmp_path / "missing"))  # the set-and-restore path
    seen = []
    threads = [threading.Thread(target=lambda: seen.extend(current_umask() for _ in range(200))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(seen) == {umask} and os.umask(umask) == umask


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_later_run_sweeps_only_dead_runs_leftovers_with_our_exact_prefix(tmp_path):
    dead = _dead_pid()
    leftovers = [f".out.staging-{dead}-abc123", f".out.tmp-{dead}-x1"]
    kept = [f".out.staging-{os.getppid()}-live", f".outx.staging-{dead}-a", f".out.staging-{dead}", "out.staging-1-a",
            f".out.backup-{dead}-a"]
    for name in leftovers + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx.data").write_bytes(b"partial")
    with staged_dir(tmp_path / "out", MARKER) as stage:
        _write_output(stage, "report.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["out"])


def test_an_old_output_left_by_a_dead_run_is_put_back_or_removed_by_its_inventory(tmp_path):
    dead = _dead_pid()
    with staged_dir(tmp_path / "previous", MARKER) as stage:
        _write_output(stage, "report.md")
    os.rename(tmp_path / "previous", tmp_path / f".out.old-{dead}-aa")  # died between the two renames
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "out", MARKER):
        raise RuntimeError("this run fails too")
    assert (tmp_path / "out" / "report.md").read_text() == "report.md"  # the previous output is back
    for suffix in ("bb", "cc"):  # two more old copies beside the restored output
        with staged_dir(tmp_path / suffix, MARKER) as stage:
            _write_output(stage, "report.md")
        os.rename(tmp_path / suffix, tmp_path / f".out.old-{dead}-{suffix}")
    (tmp_path / f".out.old-{dead}-bb" / "mine.txt").write_text("added by the user")
    with staged_dir(tmp_path / "out", MARKER) as stage:
        _write_output(stage)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.old-{dead}-bb", "out"]  # cc was ours: removed
    assert sorted(p.name for p in (tmp_path / f".out.old-{dead}-bb").iterdir()) == ["mine.txt", MARKER.file, "report.md"]


def test_an_interrupt_removes_the_stage_and_keeps_nothing(tmp_path):
    from ltexport.interrupts import Interrupted

    with pytest.raises(Interrupted), staged_dir(tmp_path / "out", MARKER, keep_failed=tmp_path / "kept") as stage:
        _write_output(stage, "model.onnx")
        raise Interrupted(15)
    assert list(tmp_path.iterdir()) == []


def test_a_target_changed_while_the_stage_was_written_is_not_replaced(tmp_path):
    from ltexport.errors import LtexportError

    target = tmp_path / "out"
    with pytest.raises(LtexportError, match="changed while ltexport was writing it"):
        with staged_dir(target, MARKER) as stage:
            _write_output(stage, "model.onnx")
            target.mkdir()
            (target / "thesis.tex").write_text("arrived meanwhile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "thesis.tex").is_file()


def test_atomic_files_are_written_all_or_nothing(tmp_path):
    from ltexport.errors import LtexportError
    from ltexport.staging import write_files_atomic

    (tmp_path / "plan.json").write_text("old")
    with pytest.raises(LtexportError, match="does not exist"):
        write_files_atomic({tmp_path / "plan.json": b"new", tmp_path / "missing" / "scores.png": b"png"})
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"] and (tmp_path / "plan.json").read_text() == "old"
