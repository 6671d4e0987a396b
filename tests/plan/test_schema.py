import json

import pytest

from ltexport.errors import LtexportError
from ltexport.plan.schema import Plan, load_plan, save_plan
from ltexport.plan.summary import kv_cache_bytes

MODEL = {"architecture": "LlamaForCausalLM", "num_layers": 4, "num_kv_heads": 2, "head_dim": 16}


def test_round_trip(tmp_path):
    plan = Plan(model=MODEL, sink=2, window=14, lazy_layers=[2, 0], scores=[0.1, 0.2, 0.3, 0.4])
    save_plan(plan, tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "ltexport-plan" and doc["version"] == 1 and doc["lazy_layers"] == [0, 2]
    assert load_plan(tmp_path / "p.json") == plan


def test_design_example_loads(tmp_path):
    doc = {"format": "ltexport-plan", "version": 1,
           "model": {"architecture": "LlamaForCausalLM", "num_layers": 30, "num_kv_heads": 3, "head_dim": 64},
           "sink": 4, "window": 1020, "prefill": "dense", "lazy_layers": [11, 12, 13], "scores": None,
           "calibration": {"method": "lazy-ratio", "tokens": 2048, "last_queries": 64, "text_sha256": "x"}}
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert load_plan(tmp_path / "p.json").lazy_layers == [11, 12, 13]


def test_kv_bytes_halve_at_half_lazy():
    plan = Plan(model=MODEL, sink=2, window=14, lazy_layers=[0, 1])
    per_token_layer = 2 * 2 * 16 * 2
    assert kv_cache_bytes(plan, 1000, hybrid=False) == 4 * 1000 * per_token_layer
    assert kv_cache_bytes(plan, 1000) == (2 * 1000 + 2 * 16) * per_token_layer


@pytest.mark.parametrize("doc, message", [
    ({"format": "other"}, "not an ltexport plan"),
    ({"format": "ltexport-plan", "version": 2}, "version 2"),
    ({"format": "ltexport-plan", "version": 1, "model": MODEL, "sink": 4, "window": 8, "lazy_layers": [4]}, "out of range"),
    ({"format": "ltexport-plan", "version": 1, "model": MODEL, "sink": 4, "window": 8, "lazy_layers": [1, 1]}, "listed twice"),
    ({"format": "ltexport-plan", "version": 1, "model": MODEL, "sink": -1, "window": 8, "lazy_layers": []}, "sink"),
    ({"format": "ltexport-plan", "version": 1, "model": MODEL, "sink": 4, "window": 0, "lazy_layers": []}, "window"),
    ({"format": "ltexport-plan", "version": 1, "model": MODEL, "sink": 4, "window": 8, "lazy_layers": [], "prefill": "x"}, "prefill"),
    ({"format": "ltexport-plan", "version": 1, "sink": 4}, "lacks model"),
])
def test_bad_plans(tmp_path, doc, message):
    (tmp_path / "p.json").write_text(json.dumps(doc))
    with pytest.raises(LtexportError, match=message):
        load_plan(tmp_path / "p.json")
