"""Layer-streamed calibration: the in-memory scores, in the memory of about one layer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltexport.plan.lazy_ratio import measure_lazy_ratios
from ltexport.plan.streamed import stream_lazy_ratios
from tests.conftest import assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mistral", "tiny-qwen2"])  # Mistral: 48-token window < 200
def test_streamed_ratios_equal_the_in_memory_ones(name, tiny_models):
    source, model = tiny_models[name]
    ids = torch.randint(3, 256, (200,), generator=torch.Generator().manual_seed(4)).tolist()
    options = dict(sink=3, window=20, last_queries=16)
    want = measure_lazy_ratios(model, torch.tensor([ids]), **options)
    got = stream_lazy_ratios(source, ids, **options, show_progress=False)
    assert got == pytest.approx(want, abs=1e-5)


def test_plan_streams_by_itself_when_the_model_does_not_fit(tmp_path, monkeypatch):
    want = run_cli(["plan", "--model", "tiny-llama", "--no-stream-layers", "-o", tmp_path / "a.json"])
    assert want.exit_code == 0 and "layer by layer" not in want.stderr
    monkeypatch.setattr("ltexport.preflight.available_memory", lambda: 1.0e9)  # in memory: 0.7 GB of runtime > 60% of 1 GB
    got = run_cli(["plan", "--model", "tiny-llama", "-o", tmp_path / "b.json"])
    assert got.exit_code == 0, got.stderr
    notice = [line for line in got.stderr.splitlines() if "streaming it layer by layer" in line]
    assert len(notice) == 1 and "measuring lazy ratios: the whole model needs" in notice[0]
    scores = [json.loads((tmp_path / f).read_text())["scores"] for f in ("a.json", "b.json")]
    assert scores[1] == pytest.approx(scores[0], abs=1e-5)


def test_a_model_that_cannot_fit_even_streamed_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setattr("ltexport.preflight.available_memory", lambda: 0.2e9)
    result = run_cli(["plan", "--model", "tiny-llama", "-o", tmp_path / "p.json"])
    assert_user_error(result, "measuring lazy ratios, even layer by layer, needs", "GB is available")
    assert not (tmp_path / "p.json").exists()
    forced = run_cli(["plan", "--model", "tiny-llama", "--no-stream-layers", "-o", tmp_path / "p.json"])
    assert_user_error(forced, "drop --no-stream-layers")


# Runs in a fresh process: its peak RSS (VmHWM, reset after imports) is the streamed plan's alone.
_MEASURE = """
import gc, json, sys
from ltexport.bench.memory import current_rss, peak_rss, reset_peak
from ltexport.models.sources import resolve
from ltexport.models.streaming import model_sizes
from ltexport.plan.identify import PlanConfig, make_plan

source = resolve(sys.argv[1])
config = dict(sink=4, window=16, lazy_fraction=0.5, calib_tokens=64, last_queries=16)
sizes = model_sizes(source.skeleton("fp32"), source.config)  # also imports the model classes
source.text_tokenizer()
gc.collect()
base = current_rss()
assert reset_peak(), "needs /proc/self/clear_refs (Linux)"
streamed = make_plan(source, PlanConfig(**config, stream_layers=True), progress=lambda m: None)
peak = peak_rss() - base
in_memory = make_plan(source, PlanConfig(**config, stream_layers=False), progress=lambda m: None)
print(json.dumps({"peak": peak, "layer": sizes.layer, "embedding": sizes.embedding,
                  "streamed": streamed.scores, "in_memory": in_memory.scores,
                  "token_ids": streamed.calibration.get("token_ids")}))
"""


def test_seven_b_width_plan_streams_in_less_than_two_layers_and_the_embedding(mistral_width_checkpoint):
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(mistral_width_checkpoint)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    bound = 4 * (2 * result["layer"] + result["embedding"])  # fp32 bytes of two layers + the embedding
    assert result["layer"] == 218_112_000 and result["embedding"] == 32000 * 4096
    assert result["peak"] < bound, f"streamed plan peaked {result['peak'] / 1e9:.2f} GB over its baseline, bound {bound / 1e9:.2f} GB"
    assert result["streamed"] == pytest.approx(result["in_memory"], abs=1e-5)
    assert result["token_ids"].startswith("utf-8 bytes")  # the checkpoint has no tokenizer
    assert len(set(result["streamed"])) == 4 and all(0 < s < 1 for s in result["streamed"])

