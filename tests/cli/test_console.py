"""The console shows ltexport's own lines by default; other libraries' known noise only with -v."""

import os
import subprocess
import sys

import pytest

from tests.conftest import run_cli

# What torch.onnx and torch.export print on every export when nothing silences them.
NOISE = ("torchvision is not installed", "FutureWarning", "UserWarning", "The axis name")


def _build(tmp_path, name, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTEXPORT_", "TQDM_", "HF_HUB_DISABLE", "TRANSFORMERS_"))}
    env["LTEXPORT_PROGRESS"] = "1"  # bars even though stderr is a pipe
    cmd = [sys.executable, "-m", "ltexport", "build", "--model", "tiny-llama", "--plan", str(tmp_path / "plan.json"),
           "-o", str(tmp_path / name), "--backend", "ort", "--decode-steps", "2", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("console")
    result = run_cli(["plan", "--model", "tiny-llama", "--layers", "1,3", "--sink", "2", "--window", "6", "-o",
                      path / "plan.json"])
    assert result.exit_code == 0, result.stderr
    return path


def test_default_console_has_no_third_party_noise_and_shows_progress(plan_dir):
    done = _build(plan_dir, "quiet")
    for noise in NOISE:
        assert noise not in done.stderr, done.stderr
    assert "writing weights" in done.stderr and "validating" in done.stderr  # ltexport's own bars
    assert done.stdout.splitlines()[0].startswith("PASS: ONNX Runtime (fp32) vs the PyTorch reference")


def test_verbose_shows_the_libraries_warnings(plan_dir):
    done = _build(plan_dir, "verbose", "-v")
    assert "torchvision is not installed" in done.stderr
    assert "The axis name" in done.stderr
