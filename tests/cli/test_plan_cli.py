"""`ltexport plan` / `inspect` as a user runs them: outputs, and every bad input -> exit 1, one line."""

import json

import pytest

from tests.conftest import assert_umask_modes, assert_user_error, run_cli


def test_plan_writes_scores_and_summary(tmp_path):
    out = tmp_path / "plan.json"
    result = run_cli(["plan", "--model", "tiny-llama", "--lazy-fraction", "0.5", "-o", out, "--plot", tmp_path / "s.png"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    assert len(doc["scores"]) == 4 and len(doc["lazy_layers"]) == 2
    assert doc["calibration"]["method"] == "lazy-ratio" and doc["calibration"]["tokens"] == 256
    assert "KV cache per sequence" in result.stdout and "lazy (sink+window)" in result.stdout
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    shown = run_cli(["inspect", out])
    assert shown.exit_code == 0 and "lazy layers: 2/4" in shown.stdout


def test_explicit_layers_skip_calibration(tmp_path, umask_027):
    out = tmp_path / "plan.json"
    result = run_cli(["plan", "--model", "tiny-qwen2", "--layers", "1,3", "--prefill", "streaming", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert_umask_modes(out)  # 0640 under umask 027, not mkstemp's 0600
    doc = json.loads(out.read_text())
    assert doc["lazy_layers"] == [1, 3] and doc["scores"] is None and doc["prefill"] == "streaming"


def test_custom_calibration_file(tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    result = run_cli(["plan", "--model", "tiny-llama", "--calib", calib, "--calib-tokens", "200",
                      "--last-queries", "8", "-o", tmp_path / "p.json"])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("args, fragments", [
    (["--lazy-fraction", "0"], ["lazy fraction must be in (0, 1]"]),
    (["--lazy-fraction", "1.5"], ["lazy fraction must be in (0, 1]"]),
    (["--sink", "-1"], ["sink must be an integer >= 0"]),
    (["--window", "0"], ["window must be an integer >= 1"]),
    (["--layers", "1,9"], ["layer 9 is out of range"]),
    (["--layers", "1,1"], ["layer 1 is listed twice"]),
    (["--layers", "a,b"], ["--layers must be comma-separated integers"]),
    (["--layers", "1", "--lazy-fraction", "0.5"], ["either --layers or --lazy-fraction"]),
    (["--calib", "missing.txt"], ["calibration file missing.txt does not exist"]),
    (["--calib-tokens", "5000"], ["exceeds the model's 1024 positions"]),
])
def test_bad_plan_arguments(tmp_path, args, fragments):
    out = tmp_path / "plan.json"
    result = run_cli(["plan", "--model", "tiny-llama", "-o", out, *args], cwd=tmp_path)
    assert_user_error(result, *fragments)
    assert not out.exists()


@pytest.mark.parametrize("model, fragment", [
    ("nope", "unknown model 'nope'"),
    ("./missing-dir/", "does not exist"),
])
def test_bad_model(tmp_path, model, fragment):
    result = run_cli(["plan", "--model", model, "-o", tmp_path / "p.json"], cwd=tmp_path)
    assert_user_error(result, fragment)
    assert not (tmp_path / "p.json").exists()


def test_output_directory_must_exist(tmp_path):
    result = run_cli(["plan", "--model", "tiny-llama", "--layers", "1", "-o", tmp_path / "no" / "p.json"])
    assert_user_error(result, "does not exist")


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON"),
    ('{"format": "something-else"}', "is not an ltexport plan"),
    ('{"format": "ltexport-plan", "version": 7}', "plan version 7"),
])
def test_inspect_bad_plan_files(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    path.write_text(content)
    assert_user_error(run_cli(["inspect", path]), fragment)


def test_inspect_missing_file(tmp_path):
    assert_user_error(run_cli(["inspect", tmp_path / "nope.json"]), "does not exist")
