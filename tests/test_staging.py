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
