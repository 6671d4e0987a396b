"""What the hardening must not break: builds of an older ltexport keep loading, validate keeps a build
replaceable, generation stops at the model's positions with a notice, and nothing reaches a model hub."""

import json
import os
import subprocess
import sys

from ltexport.build_info import MARKER
from ltexport.outputs import why_not_owned
from tests.conftest import run_cli


def test_validate_rewrites_the_report_and_keeps_the_inventory_true(inputs):
    out = inputs.build("b")
    before = json.loads((out / "build.json").read_text())["files"]
    result = run_cli(["validate", out, "--decode-steps", "3"])
    assert result.exit_code == 0, result.stderr
    after = json.loads((out / "build.json").read_text())["files"]
    assert set(after) == set(before) and after["report.json"] == (out / "report.json").stat().st_size
    assert why_not_owned(out, MARKER) is None  # a later build may still replace it


def test_generation_stops_at_the_models_positions_with_a_notice(inputs):
    out = inputs.build("b")
    result = run_cli(["generate", out, "--prompt", "hi", "--raw", "--max-new-tokens", "3000"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "note: generating at most 1021 tokens, not 3000: the prompt (3 tokens) plus generated tokens must fit "
        "the model's 1024 positions"]


def test_builds_old_and_new_pass_the_completeness_checks(inputs):
    for out in (inputs.legacy_build("old"), inputs.build("new")):  # an older ltexport's build.json: no inventory
        for args in (["generate", out, "--prompt", "hi", "--max-new-tokens", "2", "--temperature", "1e-300"],
                     ["package", out, "--triton", inputs.w / "repo", "--name", out.name]):
            result = run_cli(args)
            assert result.exit_code == 0, (args, result.stderr)
        assert "validation: PASS" in run_cli(["inspect", out]).stdout


def test_every_load_is_offline():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    code = ("import ltexport, os, huggingface_hub.constants as c, transformers.utils.hub as h; "
            "print(os.environ['HF_HUB_OFFLINE'], os.environ['HF_DATASETS_OFFLINE'], c.HF_HUB_OFFLINE, h.is_offline_mode())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["1", "1", "True", "True"], out.stderr
